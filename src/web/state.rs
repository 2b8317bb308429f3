//! What the loop's side of the web view ([`super::view`]) shares with the
//! server's threads: the latest picture as JPEG, the recent events and
//! snapshots, the stats and the metrics. Every collection is bounded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::metrics::Metrics;

/// Events kept for `/api/events`.
pub const EVENTS_KEPT: usize = 500;
/// Snapshots kept for the page and `/api/snapshots`.
pub const SNAPSHOTS_KEPT: usize = 8;

/// Locks a mutex, also after a thread panicked while holding it (the data
/// is plain and still usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The latest picture, JPEG.
#[derive(Debug, Default)]
pub struct Picture {
    /// The JPEG (empty before the first).
    pub jpeg: Arc<Vec<u8>>,
    /// Counts pictures; 0 before the first.
    pub generation: u64,
    /// When it was encoded.
    pub at: Option<Instant>,
}

/// What the loop hands to the encoder thread: the canvas of the live
/// picture and the RGB of an anomaly snapshot.
#[derive(Debug, Default)]
pub struct Raw {
    /// The canvas pixels (0RGB), allocated once.
    pub pixels: Vec<u32>,
    /// Counts canvases handed over.
    pub generation: u64,
    /// A snapshot waiting to be encoded: RGB rows.
    pub snapshot: Vec<u8>,
    /// Its width, height, frame index and time, when one waits.
    pub snapshot_meta: Option<(usize, usize, u64, String)>,
}

/// One anomaly snapshot, JPEG.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Its number (1, 2, …).
    pub id: u64,
    /// The anomaly report's frame.
    pub frame: u64,
    /// The report's time, RFC 3339.
    pub time: String,
    /// The JPEG.
    pub jpeg: Arc<Vec<u8>>,
}

/// The recent events, as JSON texts, numbered from 0.
#[derive(Debug, Default)]
pub struct EventLog {
    /// The number the next event gets.
    pub next: u64,
    /// The last [`EVENTS_KEPT`] events.
    pub kept: VecDeque<(u64, String)>,
}

impl EventLog {
    /// Adds one event.
    pub fn push(&mut self, json: String) {
        if self.kept.len() == EVENTS_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((self.next, json));
        self.next += 1;
    }
}

/// Everything shared (see the module docs).
#[derive(Debug)]
pub struct Shared {
    /// When the web view started.
    pub start: Instant,
    /// MJPEG streams open.
    pub viewers: AtomicUsize,
    /// Connections being served.
    pub connections: AtomicUsize,
    /// Until when (ms since `start`) a picture was asked for by
    /// `/api/frame.jpg`: pictures are drawn and encoded only while someone
    /// watches.
    pub wanted_until_ms: AtomicU64,
    /// The latest picture.
    pub picture: Mutex<Picture>,
    /// Signalled when a picture is encoded.
    pub picture_ready: Condvar,
    /// The loop's canvas and snapshot for the encoder.
    pub raw: Mutex<Raw>,
    /// Signalled when `raw` holds something new, or on stop.
    pub raw_ready: Condvar,
    /// The recent events.
    pub events: Mutex<EventLog>,
    /// The last `stats` event, JSON.
    pub stats: Mutex<Option<String>>,
    /// The last snapshots, oldest first.
    pub snapshots: Mutex<VecDeque<Snapshot>>,
    /// The metrics of `/metrics`.
    pub metrics: Metrics,
    /// `/api/config`: the settings, without secrets.
    pub config: String,
    /// Set when the run ends: threads stop.
    pub stop: AtomicBool,
}

impl Shared {
    /// Fresh shared state; `config` is the JSON of `/api/config`.
    pub fn new(config: String, canvas_pixels: usize) -> Shared {
        Shared {
            start: Instant::now(),
            viewers: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            wanted_until_ms: AtomicU64::new(0),
            picture: Mutex::new(Picture::default()),
            picture_ready: Condvar::new(),
            raw: Mutex::new(Raw {
                pixels: vec![0; canvas_pixels],
                ..Raw::default()
            }),
            raw_ready: Condvar::new(),
            events: Mutex::new(EventLog::default()),
            stats: Mutex::new(None),
            snapshots: Mutex::new(VecDeque::new()),
            metrics: Metrics::default(),
            config,
            stop: AtomicBool::new(false),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// A picture is wanted for `for_` from now (`/api/frame.jpg`).
    pub fn want(&self, for_: Duration) {
        let until = self.ms(Instant::now() + for_);
        self.wanted_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether anyone watches: an MJPEG stream, or a recent picture request.
    pub fn watched(&self, now: Instant) -> bool {
        self.viewers.load(Ordering::Relaxed) > 0
            || self.wanted_until_ms.load(Ordering::Relaxed) > self.ms(now)
    }

    /// Waits up to `timeout` for a picture newer than generation `after`;
    /// returns the latest picture and its generation (generation 0: none
    /// yet).
    pub fn next_picture(&self, after: u64, timeout: Duration) -> (Arc<Vec<u8>>, u64) {
        let until = Instant::now() + timeout;
        let mut p = lock(&self.picture);
        while p.generation <= after && !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = self
                .picture_ready
                .wait_timeout(p, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        (p.jpeg.clone(), p.generation)
    }

    /// Ends the threads' waits.
    pub fn shut_down(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.raw_ready.notify_all();
        self.picture_ready.notify_all();
    }
}
