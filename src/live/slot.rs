//! The single-slot mailbox between the capture thread and the loop: only
//! the newest frame is kept; a frame replaced before it was taken is
//! dropped and counted, never queued. Frames move by swapping buffers, so
//! steady-state capture allocates nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::frame::Frame;
use crate::source::FrameInfo;

/// Room kept for the reason of a bad frame.
const BAD_REASON_CAPACITY: usize = 512;

/// Counters kept by the slot, read by the loop for stats and the watchdog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotCounters {
    /// Frames published by the capture thread.
    pub published: u64,
    /// Frames replaced before the loop took them.
    pub dropped: u64,
    /// Frames the source could not decode.
    pub bad_frames: u64,
    /// Times the source reported it was lost.
    pub disconnects: u64,
    /// Failed attempts to (re)open the source.
    pub failed_opens: u64,
}

#[derive(Debug)]
struct Inner {
    frame: Frame,
    info: Option<FrameInfo>,
    /// When the source delivered the frame in `frame`.
    frame_at: Instant,
    /// When the source last delivered a frame.
    delivered_at: Option<Instant>,
    counters: SlotCounters,
    /// The last reason the source gave for being lost or failing to
    /// open, and when.
    last_error: Option<(Instant, String)>,
    /// The last reason the source gave for being lost (a failed reopen
    /// right after does not replace it).
    last_disconnect: Option<String>,
    /// Why the last frame the source could not decode failed (reused:
    /// recording a reason allocates only when it outgrows the buffer).
    last_bad: String,
    reopen_requested: bool,
    closed: bool,
}

/// What [`FrameSlot::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A new frame was swapped into the caller's buffer, with the time
    /// the source delivered it.
    Frame(FrameInfo, Instant),
    /// No new frame within the timeout.
    Timeout,
    /// The capture side has finished (finite source ended, or stopped).
    Closed,
}

/// The newest-frame mailbox.
#[derive(Debug)]
pub struct FrameSlot {
    inner: Mutex<Inner>,
    ready: Condvar,
    taken: Condvar,
}

impl Default for FrameSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameSlot {
    /// An empty slot.
    pub fn new() -> FrameSlot {
        FrameSlot {
            inner: Mutex::new(Inner {
                frame: Frame::empty(),
                info: None,
                frame_at: Instant::now(),
                delivered_at: None,
                last_disconnect: None,
                last_bad: String::with_capacity(BAD_REASON_CAPACITY),
                counters: SlotCounters::default(),
                last_error: None,
                reopen_requested: false,
                closed: false,
            }),
            ready: Condvar::new(),
            taken: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `frame` as the newest frame. The caller gets back the
    /// slot's previous buffer to fill next.
    pub fn publish(&self, frame: &mut Frame, info: FrameInfo) {
        let mut g = self.lock();
        if g.info.is_some() {
            g.counters.dropped += 1;
        }
        let now = Instant::now();
        std::mem::swap(&mut g.frame, frame);
        g.info = Some(info);
        g.frame_at = now;
        g.delivered_at = Some(now);
        g.counters.published += 1;
        drop(g);
        self.ready.notify_one();
    }

    /// Publishes `frame` once the loop has taken the previous one, so that
    /// no frame is dropped (sources whose every frame counts, see
    /// [`crate::source::FrameSource::lossless`]). Gives up, dropping the
    /// frame, when `stop` is set. Returns whether the frame was published.
    pub fn publish_lossless(&self, frame: &mut Frame, info: FrameInfo, stop: &AtomicBool) -> bool {
        let mut g = self.lock();
        while g.info.is_some() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            g = match self.taken.wait_timeout(g, Duration::from_millis(50)) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        drop(g);
        self.publish(frame, info);
        true
    }

    /// Waits up to `timeout` for a new frame and swaps it into `frame`.
    pub fn take(&self, frame: &mut Frame, timeout: Duration) -> Take {
        let mut g = self.lock();
        if g.info.is_none() && !g.closed {
            g = match self
                .ready
                .wait_timeout_while(g, timeout, |i| i.info.is_none() && !i.closed)
            {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        match g.info.take() {
            Some(info) => {
                std::mem::swap(&mut g.frame, frame);
                let at = g.frame_at;
                drop(g);
                self.taken.notify_one();
                Take::Frame(info, at)
            }
            None if g.closed => Take::Closed,
            None => Take::Timeout,
        }
    }

    /// Counts a frame the source could not decode, and keeps why.
    pub fn note_bad_frame(&self, why: &str) {
        let mut g = self.lock();
        g.counters.bad_frames += 1;
        g.last_bad.clear();
        g.last_bad.push_str(why);
    }

    /// Appends why the last frame the source could not decode failed to
    /// `out` (nothing before the first).
    pub fn last_bad_frame_into(&self, out: &mut String) {
        out.push_str(&self.lock().last_bad);
    }

    /// Records that the source was lost.
    pub fn note_disconnect(&self, why: &str) {
        let mut g = self.lock();
        g.counters.disconnects += 1;
        g.last_error = Some((Instant::now(), why.to_string()));
        g.last_disconnect = Some(why.to_string());
    }

    /// Records a failed (re)open.
    pub fn note_failed_open(&self, why: &str) {
        let mut g = self.lock();
        g.counters.failed_opens += 1;
        g.last_error = Some((Instant::now(), why.to_string()));
    }

    /// The counters so far.
    pub fn counters(&self) -> SlotCounters {
        self.lock().counters
    }

    /// The last reason the source gave for being lost or failing to
    /// open, if it gave it at `since` or later (an older reason is stale:
    /// frames came after it).
    pub fn last_error_since(&self, since: Option<Instant>) -> Option<String> {
        let g = self.lock();
        let (at, why) = g.last_error.as_ref()?;
        since.is_none_or(|s| *at >= s).then(|| why.clone())
    }

    /// The last reason the source gave for being lost.
    pub fn last_disconnect(&self) -> Option<String> {
        self.lock().last_disconnect.clone()
    }

    /// When the source last delivered a frame (`None` before the first):
    /// what the watchdog measures a stall from, however slowly the loop
    /// takes frames.
    pub fn last_delivery(&self) -> Option<Instant> {
        self.lock().delivered_at
    }

    /// Asks the capture thread to close and reopen its source (the
    /// watchdog does this when frames stop coming).
    pub fn request_reopen(&self) {
        self.lock().reopen_requested = true;
    }

    /// Takes a pending reopen request (capture side).
    pub fn take_reopen_request(&self) -> bool {
        std::mem::take(&mut self.lock().reopen_requested)
    }

    /// Marks the capture side as finished and wakes the loop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.taken.notify_all();
    }

    /// Waits up to `timeout` for the capture side to finish; whether it did.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let g = self.lock();
        let g = match self.ready.wait_timeout_while(g, timeout, |i| !i.closed) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        g.closed
    }

    /// Whether the capture side has finished.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    fn frame(v: u8) -> Frame {
        Frame {
            width: 1,
            height: 1,
            format: PixelFormat::Gray8,
            data: vec![v],
        }
    }

    #[test]
    fn only_the_newest_frame_is_kept_and_drops_are_counted() {
        let slot = FrameSlot::new();
        for i in 0..3u8 {
            slot.publish(&mut frame(i), FrameInfo::unlabelled(i as u64));
        }
        let mut got = frame(99);
        assert!(matches!(
            slot.take(&mut got, Duration::ZERO),
            Take::Frame(info, _) if info == FrameInfo::unlabelled(2)
        ));
        assert_eq!(got.data, vec![2]);
        assert_eq!(slot.take(&mut got, Duration::from_millis(1)), Take::Timeout);
        let c = slot.counters();
        assert_eq!((c.published, c.dropped), (3, 2));
        slot.close();
        assert_eq!(slot.take(&mut got, Duration::from_secs(5)), Take::Closed);
    }

    #[test]
    fn buffers_are_recycled_not_reallocated() {
        let slot = FrameSlot::new();
        let mut producer = frame(0);
        let mut consumer = frame(0);
        let mut pointers = std::collections::HashSet::new();
        for round in 0..20u8 {
            // the capture side refills whatever buffer it got back
            producer.data.clear();
            producer.data.resize(64, round);
            slot.publish(&mut producer, FrameInfo::unlabelled(round as u64));
            if round % 3 != 0 {
                assert!(matches!(
                    slot.take(&mut consumer, Duration::ZERO),
                    Take::Frame(..)
                ));
                assert_eq!(consumer.data, vec![round; 64]);
            }
            if round >= 5 {
                pointers.insert(consumer.data.as_ptr() as usize);
                pointers.insert(producer.data.as_ptr() as usize);
            }
        }
        // three buffers circulate (producer, slot, consumer), no more
        assert!(pointers.len() <= 3, "{} distinct buffers", pointers.len());
    }

    #[test]
    fn lossless_publishing_waits_for_the_loop() {
        let slot = std::sync::Arc::new(FrameSlot::new());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let producer = {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    assert!(slot.publish_lossless(
                        &mut frame(i),
                        FrameInfo::unlabelled(i as u64),
                        &stop
                    ));
                }
                slot.close();
            })
        };
        let mut got = frame(0);
        let mut seen = vec![];
        loop {
            match slot.take(&mut got, Duration::from_secs(5)) {
                Take::Frame(info, _) => seen.push(info.index),
                Take::Closed => break,
                Take::Timeout => panic!("the producer stalled"),
            }
        }
        producer.join().unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<u64>>());
        assert_eq!(slot.counters().dropped, 0);
        // a stop request releases a producer whose frame is never taken
        let slot = FrameSlot::new();
        slot.publish(&mut frame(1), FrameInfo::unlabelled(0));
        stop.store(true, Ordering::Relaxed);
        assert!(!slot.publish_lossless(&mut frame(2), FrameInfo::unlabelled(1), &stop));
    }

    #[test]
    fn stale_reasons_are_not_repeated_and_delivery_is_timed_at_capture() {
        let slot = FrameSlot::new();
        assert!(slot.last_delivery().is_none());
        slot.note_disconnect("No such device");
        assert_eq!(
            slot.last_error_since(None).as_deref(),
            Some("No such device")
        );
        std::thread::sleep(Duration::from_millis(2));
        slot.publish(&mut frame(1), FrameInfo::unlabelled(0));
        let delivered = slot.last_delivery();
        assert!(delivered.is_some());
        assert_eq!(slot.last_error_since(delivered), None);
        let mut got = frame(0);
        let Take::Frame(_, at) = slot.take(&mut got, Duration::ZERO) else {
            panic!("no frame")
        };
        assert_eq!(Some(at), delivered);
        assert!(!slot.wait_closed(Duration::from_millis(1)));
        slot.close();
        assert!(slot.wait_closed(Duration::from_millis(1)));
    }
}
