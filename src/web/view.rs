//! The loop's side of the web view: an [`Observer`] that draws the live
//! picture with the window's renderer (only while someone watches) and
//! hands it to the encoder thread, an [`EventSink`] that keeps the recent
//! events, stats and metrics, and the encoder thread itself.
//!
//! The loop never waits for the web view: it hands a picture over only
//! when the lock is free at once (`try_lock`), and a picture not yet
//! encoded is replaced by the next one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::state::{SNAPSHOTS_KEPT, Shared, Snapshot, lock};
use crate::display::render::{FpsMeter, HEIGHT, RenderConfig, Renderer, Scene, WIDTH};
use crate::live::events::{Event, EventSink};
use crate::live::observe::{Control, FrameView, Observer};
use crate::live::snapshot::SnapshotImage;

/// Least time between two pictures (10 a second at most).
pub const PICTURE_INTERVAL: Duration = Duration::from_millis(100);
/// A picture waits at least this many times as long as the last drawing
/// took, so drawing stays a small share of the loop on a slow board.
const COST_FACTOR: u32 = 8;

/// Draws the live picture for the web view (see the module docs).
pub struct WebFrames {
    shared: Arc<Shared>,
    renderer: Renderer,
    image: SnapshotImage,
    last_draw: Option<Instant>,
    wait: Duration,
    fps: FpsMeter,
    /// Whether the snapshot buffer was sized for the frames.
    sized: bool,
}

impl WebFrames {
    /// An observer drawing with `cfg` into `shared`.
    pub fn new(shared: Arc<Shared>, cfg: RenderConfig) -> WebFrames {
        WebFrames {
            shared,
            renderer: Renderer::new(cfg),
            image: SnapshotImage::default(),
            last_draw: None,
            wait: PICTURE_INTERVAL,
            fps: FpsMeter::default(),
            sized: false,
        }
    }

    /// Hands the frame of an anomaly report, with its heatmap, to the
    /// encoder (skipped if the encoder holds the lock).
    fn snapshot(&mut self, view: &FrameView<'_>) {
        let Some(report) = view.report else {
            return;
        };
        let Ok(rgb) = self.image.render(view) else {
            return;
        };
        let Ok(mut raw) = self.shared.raw.try_lock() else {
            return;
        };
        raw.snapshot.clear();
        raw.snapshot.extend_from_slice(rgb);
        raw.snapshot_meta = Some((
            view.frame.width,
            view.frame.height,
            report.frame,
            report.time.clone(),
        ));
        drop(raw);
        self.shared.raw_ready.notify_one();
    }
}

impl Observer for WebFrames {
    fn needs_map(&self) -> bool {
        true
    }

    fn frame(&mut self, view: &FrameView<'_>, _sink: &mut dyn EventSink) -> Result<Control> {
        let now = Instant::now();
        let m = &self.shared.metrics;
        m.frame(view.latency);
        m.set_fps(self.fps.tick(now));
        if !self.sized {
            // sized on the first frame, not on the first anomaly
            self.image.prepare(view);
            let n = view.frame.width * view.frame.height * 3;
            lock(&self.shared.raw).snapshot.reserve(n);
            self.sized = true;
        }
        self.snapshot(view);
        self.renderer.push_score(view.score, view.in_episode);
        if !self.shared.watched(now)
            || self
                .last_draw
                .is_some_and(|t| now.duration_since(t) < self.wait)
        {
            return Ok(Control::Continue);
        }
        self.last_draw = Some(now);
        self.renderer.draw(&Scene::from_view(view, self.fps.fps()));
        if let Ok(mut raw) = self.shared.raw.try_lock() {
            let px = self.renderer.canvas().pixels();
            if raw.pixels.len() == px.len() {
                raw.pixels.copy_from_slice(px);
                raw.generation += 1;
            }
            drop(raw);
            self.shared.raw_ready.notify_one();
        }
        self.wait = PICTURE_INTERVAL.max(now.elapsed() * COST_FACTOR);
        Ok(Control::Continue)
    }
}

/// Keeps the events, the stats and the metrics that events carry.
pub struct WebEvents {
    shared: Arc<Shared>,
}

impl WebEvents {
    /// A sink into `shared`.
    pub fn new(shared: Arc<Shared>) -> WebEvents {
        WebEvents { shared }
    }
}

impl EventSink for WebEvents {
    fn emit(&mut self, event: &Event) -> Result<()> {
        let json = serde_json::to_string(event)?;
        let m = &self.shared.metrics;
        match event {
            Event::AnomalyStart(_) => {
                m.anomalies.fetch_add(1, Ordering::Relaxed);
                m.anomaly.store(true, Ordering::Relaxed);
            }
            Event::AnomalyEnd { .. } => m.anomaly.store(false, Ordering::Relaxed),
            Event::CameraLost { .. } => m.camera_down.store(true, Ordering::Relaxed),
            Event::CameraRecovered { .. } => m.camera_down.store(false, Ordering::Relaxed),
            Event::Stats { dropped, .. } => {
                m.dropped.store(*dropped, Ordering::Relaxed);
                *lock(&self.shared.stats) = Some(json.clone());
            }
            Event::Summary(s) => m.dropped.store(s.dropped, Ordering::Relaxed),
            _ => {}
        }
        lock(&self.shared.events).push(json);
        Ok(())
    }
}

/// The encoder thread: JPEG-encodes each canvas and snapshot the loop
/// handed over, until `shared` stops.
pub fn encode_loop(shared: Arc<Shared>) {
    let mut pixels = vec![0u32; WIDTH * HEIGHT];
    let mut rgb = vec![0u8; WIDTH * HEIGHT * 3];
    let mut snap = Vec::new();
    let mut seen = 0u64;
    let mut next_id = 1u64;
    loop {
        let (canvas, snapshot) = {
            let mut raw = lock(&shared.raw);
            while raw.generation == seen
                && raw.snapshot_meta.is_none()
                && !shared.stop.load(Ordering::Relaxed)
            {
                raw = shared
                    .raw_ready
                    .wait_timeout(raw, Duration::from_millis(250))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let canvas = raw.generation != seen && raw.pixels.len() == pixels.len();
            if canvas {
                std::mem::swap(&mut raw.pixels, &mut pixels);
                seen = raw.generation;
            }
            let snapshot = raw.snapshot_meta.take();
            if snapshot.is_some() {
                std::mem::swap(&mut raw.snapshot, &mut snap);
            }
            (canvas, snapshot)
        };
        if canvas {
            for (o, p) in rgb.chunks_exact_mut(3).zip(&pixels) {
                o.copy_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
            }
            if let Ok(jpeg) = crate::imageio::encode_jpeg(WIDTH, HEIGHT, &rgb) {
                let mut p = lock(&shared.picture);
                p.jpeg = Arc::new(jpeg);
                p.generation += 1;
                p.at = Some(Instant::now());
                drop(p);
                shared.picture_ready.notify_all();
            }
        }
        if let Some((w, h, frame, time)) = snapshot
            && let Ok(jpeg) = crate::imageio::encode_jpeg(w, h, &snap)
        {
            let mut s = lock(&shared.snapshots);
            if s.len() == SNAPSHOTS_KEPT {
                s.pop_front();
            }
            s.push_back(Snapshot {
                id: next_id,
                frame,
                time,
                jpeg: Arc::new(jpeg),
            });
            next_id += 1;
        }
    }
}
