//! The live loop: frames from a source, newest first, to scores, a
//! decision with hysteresis, and events.
//!
//! Capture runs in its own thread ([`capture`]) and hands frames over a
//! single slot ([`slot`]): a slow loop drops stale frames, it never queues
//! them. Each frame taken goes through the pipeline once ([`analyse`]),
//! is decided ([`decide`]) and shown, read-only, to the observers
//! ([`observe`]: snapshots, the window, ground truth). Between frames the
//! [`watchdog`] notices when frames stop (a stalled or unplugged camera),
//! the loop emits `camera_lost`, asks the capture thread to reopen the
//! source with backoff, and emits `camera_recovered` when frames return;
//! frames that fail become rate-limited `frame_error` events
//! ([`failures`]); [`stats`] says when a `stats` event is due. All
//! buffers are allocated before the loop runs.

pub mod analyse;
pub mod backoff;
pub mod capture;
pub mod decide;
pub mod events;
pub mod failures;
pub mod observe;
pub mod refresh;
pub mod slot;
pub mod snapshot;
pub mod stats;
pub mod truth;
pub mod watchdog;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::calibrate::Profile;
use crate::explain::{Deviation, deviations};
use crate::frame::Frame;
use crate::model::{Model, PlanKind};
use crate::score::{Method, Scores};
use crate::source::{FrameInfo, FrameSource};
use analyse::{Analyser, Analysis};
use capture::{Backoff, spawn_capture};
use decide::{Decider, Decision, Episode, Report, Transition};
use events::{AnomalyReport, Cause, Event, EventSink, NoiseReport, TileReport, now_rfc3339};
use failures::{FrameError, FrameFailures};
use observe::{Control, FrameView, Observer};
use refresh::{RefreshConfig, Refresher};
use slot::{FrameSlot, Take};
use stats::Stats;
pub use truth::TruthSummary;
use watchdog::{Check, Watchdog};

/// How long a stopping loop waits for the capture thread to finish. A
/// thread still inside a source call then is left behind (the process is
/// about to exit), so a stop never waits on a device.
const CAPTURE_STOP_WAIT: Duration = Duration::from_millis(1000);
/// Frame periods of its own a source may miss before the watchdog calls
/// it stalled, whatever `--stall-timeout` says.
const STALL_PERIODS: u32 = 3;
/// Least time between two `frame_error` events of one stage, by default.
pub const FRAME_ERROR_INTERVAL: Duration = Duration::from_secs(5);

/// Settings of the live loop, resolved (no option left to check).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Score that decides.
    pub method: Method,
    /// Its threshold.
    pub threshold: f64,
    /// Frames above threshold before an episode starts.
    pub enter_after: u32,
    /// Frames below threshold before it ends.
    pub leave_after: u32,
    /// Identical consecutive frames that count as a frozen camera (0 = off).
    pub freeze_frames: u32,
    /// Sensor noise (σ, fraction of full scale) above which a frame counts
    /// as anomalous whatever its score (`None` = no noise check).
    pub noise_threshold: Option<f64>,
    /// No frame for this long means the camera is lost.
    pub stall_timeout: Duration,
    /// Period of `stats` events.
    pub stats_interval: Duration,
    /// Least time between two `anomaly_update` events of one episode.
    pub update_interval: Duration,
    /// Latents listed in anomaly events.
    pub top_latents: usize,
    /// Stop after this many processed frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub max_duration: Option<Duration>,
    /// Reopen backoff of the capture thread.
    pub backoff: Backoff,
    /// Least time between two `frame_error` events of one stage (failures
    /// in between are counted, not reported one by one).
    pub frame_error_interval: Duration,
    /// Thresholds that follow the drift of recent normal frames (`None`:
    /// the calibrated ones throughout).
    pub refresh: Option<RefreshConfig>,
}

impl LiveConfig {
    /// Defaults for a profile: its method and threshold, its noise check,
    /// enter after 3 frames, leave after 5, frozen after 15 identical frames, camera lost
    /// after 2 s, stats every 5 s, updates at most every second, frame
    /// errors at most every 5 s per stage, no threshold refresh.
    pub fn for_profile(profile: &Profile) -> LiveConfig {
        LiveConfig {
            method: profile.method,
            threshold: profile
                .decision_threshold(profile.method)
                .unwrap_or(profile.threshold),
            enter_after: 3,
            leave_after: 5,
            freeze_frames: 15,
            noise_threshold: profile.noise.as_ref().map(|n| n.threshold),
            stall_timeout: Duration::from_secs(2),
            stats_interval: Duration::from_secs(5),
            update_interval: Duration::from_secs(1),
            top_latents: 3,
            max_frames: None,
            max_duration: None,
            backoff: Backoff::default(),
            frame_error_interval: FRAME_ERROR_INTERVAL,
            refresh: None,
        }
    }
}

/// What a run of the loop did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Frames scored.
    pub processed: u64,
    /// Frames delivered by the source.
    pub captured: u64,
    /// Frames dropped because a newer one arrived first.
    pub dropped: u64,
    /// Frames the source could not decode.
    pub bad_frames: u64,
    /// Frames that could not be scored (e.g. preprocessing refused them).
    pub failed_frames: u64,
    /// `anomaly_start` events.
    pub anomalies: u64,
    /// `camera_lost` events.
    pub camera_lost: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Processed frames per second.
    pub processed_fps: f64,
    /// Median latency per frame, ms.
    pub latency_ms_p50: f64,
    /// Ground-truth figures, when the source knows the truth and the
    /// caller attached a [`truth::Truth`] observer (the loop leaves this
    /// `None`; the caller fills it from the observer).
    pub truth: Option<TruthSummary>,
}

/// Resident memory of this process in MB, from /proc (Linux).
pub fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the live loop until `stop` is set, the source ends, or a limit in
/// `cfg` is reached. Events go to `sink`.
pub fn run(
    model: &Model,
    profile: &Profile,
    source: Box<dyn FrameSource>,
    cfg: &LiveConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
) -> Result<Summary> {
    run_with(model, profile, source, cfg, sink, stop, &mut [])
}

/// [`run`], with `observers` shown every processed frame (snapshots, the
/// live window, ground truth). An observer returning [`Control::Stop`]
/// ends the loop.
pub fn run_with(
    model: &Model,
    profile: &Profile,
    source: Box<dyn FrameSource>,
    cfg: &LiveConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
    observers: &mut [&mut dyn Observer],
) -> Result<Summary> {
    let needs_map = observers.iter().any(|o| o.needs_map());
    let needs_recon = needs_map || observers.iter().any(|o| o.needs_recon());
    let kind = PlanKind::needed(cfg.method.needs_recon() || needs_recon);
    let analyser = Analyser::new(model, profile, kind, cfg.method, needs_map)?;
    let refresher = cfg
        .refresh
        .map(|r| Refresher::new(profile, cfg.method, cfg.threshold, r))
        .transpose()?;
    // A source slower than the stall timeout (a 1 fps camera, a slow
    // video) is not stalled between its frames.
    let stall_timeout = source.frame_period().map_or(cfg.stall_timeout, |p| {
        cfg.stall_timeout.max(p * STALL_PERIODS)
    });
    let slot = Arc::new(FrameSlot::new());
    let capture_stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_capture(source, slot.clone(), capture_stop.clone(), cfg.backoff)
        .context("starting the capture thread")?;

    let start = Instant::now();
    let mut lp = Loop {
        cfg,
        profile,
        active: model.spec().active_latents(),
        names: model.spec().latent_names.clone(),
        slot: &slot,
        start,
        frame: Frame::empty(),
        analyser,
        decider: Decider::new(cfg, start),
        refresher,
        watchdog: Watchdog::new(stall_timeout, cfg.backoff, start),
        stats: Stats::new(cfg.stats_interval, start),
        failures: FrameFailures::new(cfg.frame_error_interval),
        last_index: None,
        last_ratio: None,
    };
    let result = lp.run(sink, stop, observers);

    capture_stop.store(true, Ordering::Relaxed);
    // The capture thread checks the flag after each frame or timeout; one
    // stuck in a source call is left behind rather than waited for.
    if slot.wait_closed(CAPTURE_STOP_WAIT) {
        let _ = handle.join();
    }
    lp.finish(sink, observers, result)
}

/// The running loop's parts.
struct Loop<'a> {
    cfg: &'a LiveConfig,
    profile: &'a Profile,
    /// The model's active latents, the only ones events blame.
    active: Option<Vec<bool>>,
    /// The model's latent names, if it has them.
    names: Option<Vec<String>>,
    slot: &'a FrameSlot,
    start: Instant,
    /// The buffer the next frame is taken into.
    frame: Frame,
    analyser: Analyser,
    decider: Decider,
    /// `--refresh`: the thresholds' drift.
    refresher: Option<Refresher>,
    watchdog: Watchdog,
    stats: Stats,
    failures: FrameFailures,
    /// Index of the last frame taken.
    last_index: Option<u64>,
    /// The last scored frame's score / threshold.
    last_ratio: Option<f64>,
}

impl Loop<'_> {
    /// Seconds since the loop started.
    fn t(&self) -> f64 {
        self.t_at(Instant::now())
    }

    /// Seconds from the loop's start to `at`.
    fn t_at(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    fn run(
        &mut self,
        sink: &mut dyn EventSink,
        stop: &AtomicBool,
        observers: &mut [&mut dyn Observer],
    ) -> Result<()> {
        let poll = (self.watchdog.stall_timeout() / 4)
            .clamp(Duration::from_millis(5), Duration::from_millis(100));
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let processed = self.stats.processed_count();
            if self.cfg.max_frames.is_some_and(|m| processed >= m)
                || self
                    .cfg
                    .max_duration
                    .is_some_and(|d| self.start.elapsed() >= d)
            {
                break;
            }
            match self.slot.take(&mut self.frame, poll) {
                Take::Closed => break,
                Take::Timeout => {}
                Take::Frame(info, delivered) => {
                    if self.frame(info, delivered, sink, observers)? == Control::Stop {
                        break;
                    }
                }
            }
            self.between_frames(Instant::now(), sink)?;
        }
        Ok(())
    }

    /// One frame taken from the slot, delivered by the source at `delivered`.
    fn frame(
        &mut self,
        info: FrameInfo,
        delivered: Instant,
        sink: &mut dyn EventSink,
        observers: &mut [&mut dyn Observer],
    ) -> Result<Control> {
        let now = Instant::now();
        if let Some(down) = self.watchdog.frame(delivered) {
            sink.emit(&Event::CameraRecovered {
                time: now_rfc3339(),
                t: self.t(),
                frame: info.index,
                down_s: down.as_secs_f64(),
            })?;
        }
        self.last_index = Some(info.index);
        let scores = match self.analyser.analyse(&mut self.frame)? {
            Analysis::Scored(s) => s,
            Analysis::Refused(e) => {
                self.stats.failed();
                let t = self.t_at(now);
                if let Some(fe) = self
                    .failures
                    .score_failed(now, info.index, format_args!("{e:#}"))
                {
                    sink.emit(&frame_error(fe, t))?;
                }
                for o in observers.iter_mut() {
                    o.failed(&info, sink)?;
                }
                return Ok(Control::Continue);
            }
        };
        let latency = now.elapsed();
        self.stats.processed(latency);
        let d = self
            .decider
            .decide(info.index, &scores, self.analyser.identical_run(), now);
        self.last_ratio = Some(d.ratio);
        let report = match d.report {
            Some(kind) => {
                let r = self.report(info.index, &d)?;
                if kind == Report::Start {
                    self.stats.anomaly();
                    sink.emit(&Event::AnomalyStart(r.clone()))?;
                } else {
                    sink.emit(&Event::AnomalyUpdate(r.clone()))?;
                }
                Some(r)
            }
            None => None,
        };
        if let Transition::End(ep) = d.transition {
            sink.emit(&end_event(&ep, info.index, self.t()))?;
        }
        if d.cause == Cause::Score && !self.decider.in_episode() {
            self.refresh(info.index, &scores, sink)?;
        }
        if observers.is_empty() {
            return Ok(Control::Continue);
        }
        let view = FrameView {
            index: info.index,
            truth: info.truth,
            frame: self.analyser.frame(),
            result: self.analyser.result()?,
            profile: self.profile,
            method: self.cfg.method,
            score: d.score,
            threshold: self.decider.threshold(),
            ratio: d.ratio,
            transition: d.transition,
            in_episode: self.decider.in_episode(),
            report: report.as_ref(),
            tiles: self.analyser.pipeline().grid(),
            hot_tiles: self.hot_tiles(),
            latency,
        };
        let mut control = Control::Continue;
        for o in observers.iter_mut() {
            if o.frame(&view, sink)? == Control::Stop {
                control = Control::Stop;
            }
        }
        Ok(control)
    }

    /// `--refresh`: adds normal frame `index` (scored `scores`) to the
    /// recent normal frames, and applies and logs the thresholds a due
    /// refresh gives.
    fn refresh(&mut self, index: u64, scores: &Scores, sink: &mut dyn EventSink) -> Result<()> {
        let Some(r) = self.refresher.as_mut() else {
            return Ok(());
        };
        let (method, window) = (r.method(), r.window());
        let new = r.push(scores, self.analyser.pipeline().tile_scores());
        if new.is_empty() {
            return Ok(());
        }
        for n in new {
            match n.tile {
                Some(tile) => self.analyser.set_tile_threshold(tile, method, n.threshold),
                None => self.decider.set_threshold(n.threshold),
            }
        }
        let thresholds = new.to_vec();
        let event = Event::ThresholdRefresh {
            time: now_rfc3339(),
            t: self.t(),
            frame: index,
            method,
            window,
            thresholds,
        };
        sink.emit(&event)
    }

    /// The `anomaly_start` / `anomaly_update` report of frame `index`.
    fn report(&self, index: u64, d: &Decision) -> Result<AnomalyReport> {
        let r = self.analyser.result()?;
        let pipe = self.analyser.pipeline();
        Ok(AnomalyReport {
            time: now_rfc3339(),
            t: self.t(),
            frame: index,
            method: self.cfg.method,
            score: d.score,
            threshold: self.decider.threshold(),
            ratio: d.ratio,
            peak_ratio: d.peak_ratio,
            cause: d.cause,
            latents: deviations(
                r.mu,
                r.kl,
                Some(self.profile.tile_profile(pipe.worst_tile())),
                self.active.as_deref(),
                self.names.as_deref(),
                self.cfg.top_latents,
            ),
            tiles: self.tile_reports(),
            noise: self
                .cfg
                .noise_threshold
                .zip(r.scores.noise)
                .map(|(threshold, sigma)| NoiseReport {
                    sigma: sigma as f64,
                    threshold,
                }),
        })
    }

    /// With tiles: a bit per tile above its threshold.
    fn hot_tiles(&self) -> u64 {
        let pipe = self.analyser.pipeline();
        let n = pipe.grid().map_or(0, |g| g.count()).min(64);
        (0..n)
            .filter(|&t| pipe.tile_ratio(t, self.cfg.method).is_some_and(|r| r > 1.0))
            .fold(0, |bits, t| bits | 1 << t)
    }

    /// With tiles: every tile above its threshold, highest ratio first.
    fn tile_reports(&self) -> Vec<TileReport> {
        let pipe = self.analyser.pipeline();
        let Some(grid) = pipe.grid().filter(|_| pipe.worst_tile().is_some()) else {
            return vec![];
        };
        let mut v: Vec<TileReport> = (0..grid.count())
            .filter_map(|t| {
                let ratio = pipe.tile_ratio(t, self.cfg.method)?;
                let (col, row) = grid.cell(t);
                (ratio > 1.0).then_some(TileReport {
                    tile: t,
                    col,
                    row,
                    ratio,
                })
            })
            .collect();
        v.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));
        v
    }

    /// After each frame or poll timeout: the watchdog, the source's decode
    /// failures and the stats period.
    fn between_frames(&mut self, now: Instant, sink: &mut dyn EventSink) -> Result<()> {
        let c = self.slot.counters();
        let delivered = self.slot.last_delivery();
        match self.watchdog.check(now, c.disconnects, delivered) {
            Check::Fine => {}
            Check::Lost {
                reported,
                last_frame_at,
            } => {
                // a new report gives its own reason (not that of a failed
                // reopen right after it); after a stall only a reason
                // given since the last frame counts
                let reason = if reported {
                    self.slot.last_disconnect()
                } else {
                    self.slot.last_error_since(delivered)
                };
                let reason = reason.unwrap_or_else(|| {
                    format!(
                        "no frame for {:.1} s",
                        now.saturating_duration_since(last_frame_at).as_secs_f64()
                    )
                });
                sink.emit(&Event::CameraLost {
                    time: now_rfc3339(),
                    t: self.t(),
                    last_frame: self.last_index,
                    reason,
                })?;
                if !reported {
                    // the capture thread reopens a source that reported
                    // itself lost on its own
                    self.slot.request_reopen();
                }
            }
            Check::Reopen => self.slot.request_reopen(),
        }
        self.decode_failures(now, c.bad_frames, sink)?;
        if let Some(p) = self.stats.poll(now, c.published) {
            let delivery = sink.delivery();
            let (ratio, top) = self.last_frame_summary();
            sink.emit(&Event::Stats {
                time: now_rfc3339(),
                t: self.t(),
                capture_fps: p.capture_fps,
                processed_fps: p.processed_fps,
                processed: p.processed,
                dropped: c.dropped,
                bad_frames: c.bad_frames,
                latency_ms_p50: p.latency_ms_p50,
                latency_ms_p99: p.latency_ms_p99,
                rss_mb: rss_mb(),
                ratio,
                top_latent: top.as_ref().map(|d| d.latent),
                top_latent_name: top.and_then(|d| d.name),
                mqtt_connected: delivery.map(|d| d.connected),
                mqtt_queued: delivery.map(|d| d.queued),
                mqtt_dropped: delivery.map(|d| d.dropped),
            })?;
        }
        Ok(())
    }

    /// The last scored frame's ratio (score / threshold) and its most
    /// deviant active latent, for the `stats` event.
    fn last_frame_summary(&self) -> (Option<f64>, Option<Deviation>) {
        let Some(ratio) = self.last_ratio else {
            return (None, None);
        };
        let top = self.analyser.result().ok().and_then(|r| {
            let pipe = self.analyser.pipeline();
            deviations(
                r.mu,
                r.kl,
                Some(self.profile.tile_profile(pipe.worst_tile())),
                self.active.as_deref(),
                self.names.as_deref(),
                1,
            )
            .into_iter()
            .next()
        });
        (ratio.is_finite().then_some(ratio), top)
    }

    /// Reports frames the source could not decode, given its running
    /// count `bad_frames` at `now` (rate-limited).
    fn decode_failures(
        &mut self,
        now: Instant,
        bad_frames: u64,
        sink: &mut dyn EventSink,
    ) -> Result<()> {
        let t = self.t_at(now);
        let slot = self.slot;
        if let Some(fe) = self
            .failures
            .decode_count(now, bad_frames, |s| slot.last_bad_frame_into(s))
        {
            sink.emit(&frame_error(fe, t))?;
        }
        Ok(())
    }

    /// After the capture thread has stopped: ends a running episode,
    /// reports the frame failures not reported yet, lets the observers
    /// finish, and sums the run up.
    fn finish(
        mut self,
        sink: &mut dyn EventSink,
        observers: &mut [&mut dyn Observer],
        result: Result<()>,
    ) -> Result<Summary> {
        let t = self.t();
        if let Some(ep) = self.decider.finish() {
            sink.emit(&end_event(&ep, self.last_index.unwrap_or(0), t))?;
        }
        // failures since the last look, then those still unreported
        let bad_frames = self.slot.counters().bad_frames;
        self.decode_failures(Instant::now(), bad_frames, sink)?;
        for fe in self.failures.flush() {
            sink.emit(&frame_error(fe, t))?;
        }
        let finished = observers.iter_mut().try_for_each(|o| o.finish(sink));
        sink.flush()?;
        result?;
        finished?;
        let c = self.slot.counters();
        let seconds = self.start.elapsed().as_secs_f64();
        let processed = self.stats.processed_count();
        Ok(Summary {
            processed,
            captured: c.published,
            dropped: c.dropped,
            bad_frames: c.bad_frames,
            failed_frames: self.stats.failed_count(),
            anomalies: self.stats.anomaly_count(),
            camera_lost: self.watchdog.lost_count(),
            seconds,
            processed_fps: processed as f64 / seconds.max(1e-9),
            latency_ms_p50: self.stats.latency_p50(),
            truth: None,
        })
    }
}

/// The `anomaly_end` event of `ep`, declared at `frame`.
fn end_event(ep: &Episode, frame: u64, t: f64) -> Event {
    Event::AnomalyEnd {
        time: now_rfc3339(),
        t,
        frame,
        start_frame: ep.start_frame,
        frames: ep.frames,
        peak_ratio: ep.peak_ratio,
        peak_frame: ep.peak_frame,
    }
}

/// The `frame_error` event of `fe`.
fn frame_error(fe: FrameError<'_>, t: f64) -> Event {
    Event::FrameError {
        time: now_rfc3339(),
        t,
        stage: fe.stage,
        frame: fe.frame,
        reason: fe.reason.to_string(),
        suppressed: fe.suppressed,
        total: fe.total,
    }
}
