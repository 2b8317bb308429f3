//! Events, state and Home Assistant discovery to an MQTT broker
//! (`--mqtt URL`, feature `mqtt`).
//!
//! | topic | content |
//! | --- | --- |
//! | `<prefix>/available` | `online` / `offline`: the last will, retained |
//! | `<prefix>/events` | every event as the JSON the event stream writes, QoS 1 |
//! | `<prefix>/anomaly` | `ON` / `OFF`, retained |
//! | `<prefix>/stats` | the `stats` event |
//! | `<prefix>/snapshot` | the latest anomaly snapshot as JPEG, retained |
//!
//! plus the discovery messages of [`discovery`]. The client is rumqttc,
//! run by a thread of its own ([`worker`]) behind a bounded channel: the
//! loop never waits for the network. Events the broker has not taken are
//! kept in order, in memory and then in a spool on disk under a size cap
//! ([`outbox`]), and delivered when the broker is back.

pub mod config;
pub mod discovery;
pub mod outbox;
#[cfg(feature = "mqtt")]
pub mod worker;

#[cfg(feature = "mqtt")]
pub use client::{CHANNEL, CLOSE_WAIT, Mqtt, MqttSnapshots};
pub use config::MqttConfig;

/// The client itself (feature `mqtt`).
#[cfg(feature = "mqtt")]
mod client {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use anyhow::{Context, Result};

    use super::MqttConfig;
    use super::worker::{EventKind, Request, Status, Worker};

    use crate::live::events::{Delivery, Event, EventSink};
    use crate::live::observe::{Control, FrameView, Observer};
    use crate::live::snapshot::SnapshotImage;

    /// Requests the loop may queue for the client thread before it counts
    /// events as dropped (the thread takes them within milliseconds).
    pub const CHANNEL: usize = 1024;
    /// How long the end of a run waits for the broker to take what is queued.
    pub const CLOSE_WAIT: Duration = Duration::from_secs(3);

    /// The loop's side of the MQTT client: an [`EventSink`] (every event to
    /// `<prefix>/events`, the state topics follow) and, through
    /// [`Mqtt::snapshots`], an [`Observer`] that publishes anomaly snapshots.
    pub struct Mqtt {
        tx: Option<SyncSender<Request>>,
        status: Arc<Status>,
        /// Events the channel refused (it was full).
        refused: u64,
        thread: Option<JoinHandle<()>>,
    }

    impl std::fmt::Debug for Mqtt {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Mqtt")
                .field("status", &self.status)
                .finish()
        }
    }

    impl Mqtt {
        /// Starts the client thread (the spool is opened first; the broker is
        /// connected in the background).
        pub fn start(cfg: MqttConfig) -> Result<Mqtt> {
            let (tx, rx) = sync_channel(CHANNEL);
            let status = Arc::new(Status::default());
            let worker = Worker::new(cfg, rx, status.clone())?;
            let thread = std::thread::Builder::new()
                .name("bvae-mqtt".into())
                .spawn(move || worker.run())
                .context("starting the MQTT thread")?;
            Ok(Mqtt {
                tx: Some(tx),
                status,
                refused: 0,
                thread: Some(thread),
            })
        }

        /// An observer that publishes the frame of each anomaly report, with
        /// its heatmap, to `<prefix>/snapshot`.
        pub fn snapshots(&self) -> Option<MqttSnapshots> {
            self.tx.clone().map(|tx| MqttSnapshots {
                tx,
                image: SnapshotImage::default(),
            })
        }

        /// Ends the run: waits up to `wait` for the broker to take the queued
        /// events, publishes `offline`, disconnects, and spools the rest.
        pub fn close(&mut self, wait: Duration) {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Request::Close { wait });
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    impl Drop for Mqtt {
        fn drop(&mut self) {
            self.close(CLOSE_WAIT);
        }
    }

    impl EventSink for Mqtt {
        fn emit(&mut self, event: &Event) -> Result<()> {
            let Some(tx) = &self.tx else {
                return Ok(());
            };
            let kind = match event {
                Event::AnomalyStart(_) => EventKind::AnomalyOn,
                Event::AnomalyEnd { .. } => EventKind::AnomalyOff,
                Event::Stats { .. } => EventKind::Stats,
                _ => EventKind::Other,
            };
            let payload = serde_json::to_vec(event).context("encoding an event")?;
            match tx.try_send(Request::Event { payload, kind }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => self.refused += 1,
                Err(TrySendError::Disconnected(_)) => self.refused += 1,
            }
            Ok(())
        }

        fn delivery(&self) -> Option<Delivery> {
            let s = &self.status;
            Some(Delivery {
                connected: s.connected.load(Ordering::Relaxed),
                queued: s.queued.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed) + self.refused,
                delivered: s.delivered.load(Ordering::Relaxed),
            })
        }
    }

    /// Publishes anomaly snapshots (see [`Mqtt::snapshots`]).
    pub struct MqttSnapshots {
        tx: SyncSender<Request>,
        image: SnapshotImage,
    }

    impl Observer for MqttSnapshots {
        fn needs_map(&self) -> bool {
            true
        }

        fn frame(&mut self, view: &FrameView<'_>, _sink: &mut dyn EventSink) -> Result<Control> {
            // buffers are sized on the first frame, not on the first anomaly
            self.image.prepare(view);
            if view.report.is_none() {
                return Ok(Control::Continue);
            }
            let (width, height) = (view.frame.width, view.frame.height);
            match self.image.render(view) {
                Ok(rgb) => {
                    // at most one per anomaly report (one a second); a full
                    // channel skips it
                    let _ = self.tx.try_send(Request::Snapshot {
                        width,
                        height,
                        rgb: rgb.to_vec(),
                    });
                }
                Err(e) => eprintln!("mqtt: snapshot not rendered: {e:#}"),
            }
            Ok(Control::Continue)
        }
    }
}
