//! The capture thread: reads the source as fast as it delivers, publishes
//! each frame to the [`FrameSlot`] (or, for a lossless source, waits for
//! the loop to take each one), counts bad frames, and reopens a lost
//! source with exponential backoff. A panic inside a source's decoder is
//! caught and counted as a bad frame.
//!
//! The thread checks its stop flag between frames; sources never block
//! longer than a short timeout (a camera waits at most 100 ms for a
//! frame, then reports [`SourceError::Timeout`]), so a stop is noticed
//! quickly whatever the device does.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::frame::Frame;
use crate::live::slot::FrameSlot;
use crate::source::{FrameSource, SourceError};

pub use super::backoff::Backoff;

/// Sleeps up to `d`, waking early when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Starts the capture thread. It runs until `stop` is set or a finite
/// source ends; either way it closes the slot.
pub fn spawn_capture(
    mut source: Box<dyn FrameSource>,
    slot: Arc<FrameSlot>,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("bvae-capture".into())
        .spawn(move || {
            let mut buf = Frame::empty();
            let lossless = source.lossless();
            let mut opened = true; // open_source hands over an opened source
            let mut waits = backoff.waits();
            while !stop.load(Ordering::Relaxed) {
                if slot.take_reopen_request() {
                    opened = false;
                }
                if !opened {
                    match catch_unwind(AssertUnwindSafe(|| source.open())) {
                        Ok(Ok(())) => {
                            opened = true;
                            waits.reset();
                        }
                        Ok(Err(e)) => {
                            slot.note_failed_open(&e.to_string());
                            sleep_unless_stopped(waits.next_wait(), &stop);
                            continue;
                        }
                        Err(p) => {
                            slot.note_failed_open(&format!(
                                "opening panicked: {}",
                                panic_message(&*p)
                            ));
                            sleep_unless_stopped(waits.next_wait(), &stop);
                            continue;
                        }
                    }
                }
                match catch_unwind(AssertUnwindSafe(|| source.next_frame(&mut buf))) {
                    Ok(Ok(info)) if lossless => {
                        slot.publish_lossless(&mut buf, info, &stop);
                    }
                    Ok(Ok(info)) => slot.publish(&mut buf, info),
                    Ok(Err(SourceError::Timeout)) => {}
                    Ok(Err(SourceError::BadFrame(why))) => slot.note_bad_frame(&why),
                    Ok(Err(SourceError::Disconnected(why))) => {
                        slot.note_disconnect(&why);
                        opened = false;
                        sleep_unless_stopped(waits.next_wait(), &stop);
                    }
                    Ok(Err(SourceError::Ended)) => break,
                    Err(p) => {
                        slot.note_bad_frame(&format!("decoder panicked: {}", panic_message(&*p)))
                    }
                }
            }
            slot.close();
        })
}
