//! The live loop: frames from a source, newest first, to scores, a
//! decision with hysteresis, and events.
//!
//! Capture runs in its own thread ([`capture`]) and hands frames over a
//! single slot ([`slot`]): a slow loop drops stale frames, it never queues
//! them. A watchdog in the loop notices when frames stop (a stalled or
//! unplugged camera), emits `camera_lost`, asks the capture thread to
//! reopen the source with backoff, and emits `camera_recovered` when
//! frames return. All buffers are allocated before the loop runs.

pub mod capture;
pub mod decide;
pub mod events;
pub mod observe;
pub mod slot;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::calibrate::Profile;
use crate::explain::deviations;
use crate::frame::Frame;
use crate::model::{Model, PlanKind};
use crate::pipeline::Pipeline;
use crate::score::Method;
use crate::source::{AnomalyKind, FrameSource};
use capture::{Backoff, spawn_capture};
use decide::{Hysteresis, Transition};
use events::{AnomalyReport, Cause, Event, EventSink, TruthEpisode, now_rfc3339};
use observe::{Control, FrameView, Observer};
use slot::{FrameSlot, Take};

/// Ratio reported for a frozen frame whose score alone is below threshold.
const FROZEN_RATIO: f64 = 2.0;
/// Latencies kept for the p50/p99 of a stats period.
const LATENCY_WINDOW: usize = 4096;
/// How long a stopping loop waits for the capture thread to finish. A
/// thread still inside a source call then is left behind (the process is
/// about to exit), so a stop never waits on a device.
const CAPTURE_STOP_WAIT: Duration = Duration::from_millis(1000);
/// Frame periods of its own a source may miss before the watchdog calls
/// it stalled, whatever `--stall-timeout` says.
const STALL_PERIODS: u32 = 3;

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
}

impl LiveConfig {
    /// Defaults for a profile: its method and threshold, enter after 3
    /// frames, leave after 5, frozen after 15 identical frames, camera lost
    /// after 2 s, stats every 5 s, updates at most every second.
    pub fn for_profile(profile: &Profile) -> LiveConfig {
        LiveConfig {
            method: profile.method,
            threshold: profile.threshold,
            enter_after: 3,
            leave_after: 5,
            freeze_frames: 15,
            stall_timeout: Duration::from_secs(2),
            stats_interval: Duration::from_secs(5),
            update_interval: Duration::from_secs(1),
            top_latents: 3,
            max_frames: None,
            max_duration: None,
            backoff: Backoff::default(),
        }
    }
}

/// Detection figures against the synthetic scene's ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthSummary {
    /// Injected anomaly episodes seen by the loop.
    pub injected: usize,
    /// Of those, episodes during which (or right after which) an
    /// `anomaly_start` was raised.
    pub detected: usize,
    /// `anomaly_start` events that matched no injected episode.
    pub false_alarms: usize,
    /// Normal frames processed.
    pub normal_frames: u64,
    /// False alarms per 1000 normal frames.
    pub false_alarms_per_1000: f64,
    /// Mean frames from an episode's first frame to its detection.
    pub mean_delay_frames: Option<f64>,
    /// (injected, detected) per anomaly kind.
    pub per_kind: BTreeMap<String, (usize, usize)>,
    /// Every episode.
    pub episodes: Vec<TruthEpisode>,
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
    /// Ground-truth figures, when the source knows the truth.
    pub truth: Option<TruthSummary>,
}

/// Resident memory of this process in MB, from /proc (Linux).
pub fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Latencies of recent frames in a fixed ring, with percentiles computed
/// in a preallocated scratch buffer.
struct Latencies {
    ring: Vec<f64>,
    next: usize,
    len: usize,
    scratch: Vec<f64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            ring: vec![0.0; LATENCY_WINDOW],
            next: 0,
            len: 0,
            scratch: Vec::with_capacity(LATENCY_WINDOW),
        }
    }
    fn push(&mut self, ms: f64) {
        self.ring[self.next] = ms;
        self.next = (self.next + 1) % LATENCY_WINDOW;
        self.len = (self.len + 1).min(LATENCY_WINDOW);
    }
    fn percentiles(&mut self) -> (f64, f64) {
        if self.len == 0 {
            return (0.0, 0.0);
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring[..self.len]);
        self.scratch.sort_unstable_by(f64::total_cmp);
        (
            crate::stats::quantile_sorted(&self.scratch, 0.5),
            crate::stats::quantile_sorted(&self.scratch, 0.99),
        )
    }
}

/// Ground-truth bookkeeping.
struct Truth {
    episodes: Vec<TruthEpisode>,
    open: Option<usize>,
    normal_frames: u64,
    false_alarms: usize,
    grace: u64,
    seen: bool,
}

impl Truth {
    fn frame(&mut self, index: u64, truth: Option<Option<AnomalyKind>>) {
        let Some(t) = truth else { return };
        self.seen = true;
        match t {
            None => {
                self.normal_frames += 1;
                self.open = None;
            }
            Some(kind) => match self.open {
                Some(i) if self.episodes[i].kind == kind => self.episodes[i].end_frame = index,
                _ => {
                    self.episodes.push(TruthEpisode {
                        kind,
                        start_frame: index,
                        end_frame: index,
                        detected_at: None,
                    });
                    self.open = Some(self.episodes.len() - 1);
                }
            },
        }
    }

    fn alarm(&mut self, frame: u64) {
        if !self.seen {
            return;
        }
        let grace = self.grace;
        let hit = self.episodes.iter_mut().rev().find(|e| {
            frame >= e.start_frame && frame <= e.end_frame + grace && e.detected_at.is_none()
        });
        match hit {
            Some(e) => e.detected_at = Some(frame),
            None => {
                // An alarm raised while an already-detected episode runs is
                // the same anomaly again, not a false alarm.
                let inside = self
                    .episodes
                    .iter()
                    .any(|e| frame >= e.start_frame && frame <= e.end_frame + grace);
                if !inside {
                    self.false_alarms += 1;
                }
            }
        }
    }

    fn summary(&self) -> Option<TruthSummary> {
        if !self.seen {
            return None;
        }
        let detected: Vec<&TruthEpisode> = self
            .episodes
            .iter()
            .filter(|e| e.detected_at.is_some())
            .collect();
        let delays: Vec<f64> = detected
            .iter()
            .filter_map(|e| {
                e.detected_at
                    .map(|d| d.saturating_sub(e.start_frame) as f64)
            })
            .collect();
        let mut per_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for e in &self.episodes {
            let k = per_kind.entry(e.kind.name().to_string()).or_default();
            k.0 += 1;
            k.1 += e.detected_at.is_some() as usize;
        }
        Some(TruthSummary {
            injected: self.episodes.len(),
            detected: detected.len(),
            false_alarms: self.false_alarms,
            normal_frames: self.normal_frames,
            false_alarms_per_1000: if self.normal_frames > 0 {
                1000.0 * self.false_alarms as f64 / self.normal_frames as f64
            } else {
                0.0
            },
            mean_delay_frames: (!delays.is_empty())
                .then(|| delays.iter().sum::<f64>() / delays.len() as f64),
            per_kind,
            episodes: self.episodes.clone(),
        })
    }
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
/// live window). An observer returning [`Control::Stop`] ends the loop.
pub fn run_with(
    model: &Model,
    profile: &Profile,
    source: Box<dyn FrameSource>,
    cfg: &LiveConfig,
    sink: &mut dyn EventSink,
    stop: &AtomicBool,
    observers: &mut [&mut dyn Observer],
) -> Result<Summary> {
    let kind = if cfg.method.needs_recon() || observers.iter().any(|o| o.needs_recon()) {
        PlanKind::Full
    } else {
        PlanKind::EncoderOnly
    };
    let maha = profile.mahalanobis()?;
    let mut pipe = Pipeline::new(model, kind, profile.fit, Some(maha))?;
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
    let mut frame = Frame::empty();
    let mut previous = Frame::empty();
    let mut identical_run = 0u32;
    // Scores of `previous`: a frame identical to it is not run again.
    let mut last_scores = None;
    let mut hyst = Hysteresis::new(cfg.enter_after, cfg.leave_after);
    let mut lat = Latencies::new();
    let mut truth = Truth {
        episodes: vec![],
        open: None,
        normal_frames: 0,
        false_alarms: 0,
        grace: cfg.enter_after as u64 + 2,
        seen: false,
    };
    let (mut processed, mut failed, mut anomalies, mut lost_count) = (0u64, 0u64, 0u64, 0u64);
    let mut seen_disconnects = 0u64;
    let mut last_index: Option<u64> = None;
    // While the camera is lost: since when (its last frame, or the moment
    // it reported itself lost), and when the loss was noticed. Only a
    // frame delivered after that moment means it is back.
    let mut lost_since: Option<(Instant, Instant)> = None;
    let mut next_reopen = Instant::now();
    let mut reopen_wait = stall_timeout;
    let mut last_update = Instant::now();
    let mut last_stats = Instant::now();
    let (mut stats_published, mut stats_processed) = (0u64, 0u64);
    let poll = (stall_timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
    let ts = |start: Instant| start.elapsed().as_secs_f64();
    let mut stop_requested = false;

    let result: Result<()> = (|| {
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if cfg.max_frames.is_some_and(|m| processed >= m)
                || cfg.max_duration.is_some_and(|d| start.elapsed() >= d)
            {
                break;
            }
            match slot.take(&mut frame, poll) {
                Take::Closed => break,
                Take::Timeout => {}
                Take::Frame(info, delivered) => {
                    let now = Instant::now();
                    if let Some((since, noticed)) = lost_since
                        && delivered > noticed
                    {
                        lost_since = None;
                        sink.emit(&Event::CameraRecovered {
                            time: now_rfc3339(),
                            t: ts(start),
                            frame: info.index,
                            down_s: delivered.saturating_duration_since(since).as_secs_f64(),
                        })?;
                        reopen_wait = stall_timeout;
                    }
                    last_index = Some(info.index);
                    truth.frame(info.index, info.truth);
                    let same = frame.width == previous.width
                        && frame.height == previous.height
                        && frame.format == previous.format
                        && frame.data == previous.data;
                    // The pipeline still holds the results of `previous`,
                    // so an identical frame reuses them without inference.
                    let scores = match last_scores {
                        Some(s) if same => s,
                        _ => match pipe.process(frame.as_ref()) {
                            Ok(s) => s,
                            Err(_) => {
                                failed += 1;
                                // the pipeline's buffers no longer match `previous`
                                last_scores = None;
                                continue;
                            }
                        },
                    };
                    last_scores = Some(scores);
                    processed += 1;
                    identical_run = if same { identical_run + 1 } else { 0 };
                    // Keep this frame for the next comparison by swapping
                    // buffers: no copy, and the slot recycles the other one.
                    std::mem::swap(&mut frame, &mut previous);
                    let score = scores.get(cfg.method).map_or(f64::NAN, |v| v as f64);
                    let mut ratio = score / cfg.threshold;
                    let mut cause = Cause::Score;
                    if cfg.freeze_frames > 0
                        && identical_run >= cfg.freeze_frames
                        && ratio.partial_cmp(&1.0) != Some(std::cmp::Ordering::Greater)
                    {
                        ratio = FROZEN_RATIO;
                        cause = Cause::FrozenFrame;
                    }
                    lat.push(now.elapsed().as_secs_f64() * 1e3);
                    let transition = hyst.update(info.index, ratio);
                    let peak = hyst.episode().map_or(ratio, |e| e.peak_ratio);
                    let report = |pipe: &Pipeline| -> Result<AnomalyReport> {
                        Ok(AnomalyReport {
                            time: now_rfc3339(),
                            t: ts(start),
                            frame: info.index,
                            method: cfg.method,
                            score,
                            threshold: cfg.threshold,
                            ratio,
                            peak_ratio: peak,
                            cause,
                            latents: deviations(
                                pipe.mu()?,
                                pipe.kl_latents(),
                                Some(profile),
                                cfg.top_latents,
                            ),
                        })
                    };
                    let mut emitted: Option<AnomalyReport> = None;
                    match transition {
                        Transition::Start => {
                            anomalies += 1;
                            truth.alarm(info.index);
                            last_update = now;
                            let r = report(&pipe)?;
                            sink.emit(&Event::AnomalyStart(r.clone()))?;
                            emitted = Some(r);
                        }
                        Transition::Continue
                            if now.duration_since(last_update) >= cfg.update_interval =>
                        {
                            last_update = now;
                            let r = report(&pipe)?;
                            sink.emit(&Event::AnomalyUpdate(r.clone()))?;
                            emitted = Some(r);
                        }
                        Transition::End(ep) => sink.emit(&Event::AnomalyEnd {
                            time: now_rfc3339(),
                            t: ts(start),
                            frame: info.index,
                            start_frame: ep.start_frame,
                            frames: ep.frames,
                            peak_ratio: ep.peak_ratio,
                            peak_frame: ep.peak_frame,
                        })?,
                        _ => {}
                    }
                    if !observers.is_empty() {
                        let in_episode = hyst.episode().is_some();
                        let mut view = FrameView {
                            index: info.index,
                            // `previous` holds this frame since the swap above.
                            frame: previous.as_ref(),
                            pipeline: &mut pipe,
                            profile,
                            method: cfg.method,
                            score,
                            threshold: cfg.threshold,
                            ratio,
                            transition,
                            in_episode,
                            report: emitted.as_ref(),
                        };
                        for o in observers.iter_mut() {
                            if o.frame(&mut view, sink)? == Control::Stop {
                                stop_requested = true;
                            }
                        }
                        if stop_requested {
                            break;
                        }
                    }
                }
            }
            // Watchdog: the source said it is lost, or it delivered no frame
            // for too long (timed from the capture side, so a slow loop is
            // not mistaken for a stalled camera).
            let now = Instant::now();
            let disconnects = slot.counters().disconnects;
            let reported_lost = disconnects > seen_disconnects;
            seen_disconnects = disconnects;
            let delivered = slot.last_delivery();
            let last_frame_at = delivered.unwrap_or(start);
            if reported_lost || now.duration_since(last_frame_at) > stall_timeout {
                if lost_since.is_none() {
                    lost_since = Some((if reported_lost { now } else { last_frame_at }, now));
                    lost_count += 1;
                    // a new report gives its own reason (not that of a
                    // failed reopen right after it); after a stall only a
                    // reason given since the last frame counts
                    let reason = if reported_lost {
                        slot.last_disconnect()
                    } else {
                        slot.last_error_since(delivered)
                    };
                    let reason = reason.unwrap_or_else(|| {
                        format!(
                            "no frame for {:.1} s",
                            now.duration_since(last_frame_at).as_secs_f64()
                        )
                    });
                    sink.emit(&Event::CameraLost {
                        time: now_rfc3339(),
                        t: ts(start),
                        last_frame: last_index,
                        reason,
                    })?;
                    if !reported_lost {
                        // the capture thread reopens a source that reported
                        // itself lost on its own
                        slot.request_reopen();
                    }
                    next_reopen = now + reopen_wait;
                } else if now >= next_reopen && now.duration_since(last_frame_at) > stall_timeout {
                    slot.request_reopen();
                    reopen_wait = (reopen_wait * 2).min(cfg.backoff.max.max(stall_timeout));
                    next_reopen = now + reopen_wait;
                }
            }
            // Stats.
            if now.duration_since(last_stats) >= cfg.stats_interval {
                let period = now.duration_since(last_stats).as_secs_f64();
                let c = slot.counters();
                let (p50, p99) = lat.percentiles();
                sink.emit(&Event::Stats {
                    time: now_rfc3339(),
                    t: ts(start),
                    capture_fps: (c.published - stats_published) as f64 / period,
                    processed_fps: (processed - stats_processed) as f64 / period,
                    processed,
                    dropped: c.dropped,
                    bad_frames: c.bad_frames,
                    latency_ms_p50: p50,
                    latency_ms_p99: p99,
                    rss_mb: rss_mb(),
                })?;
                stats_published = c.published;
                stats_processed = processed;
                last_stats = now;
            }
        }
        Ok(())
    })();

    capture_stop.store(true, Ordering::Relaxed);
    // The capture thread checks the flag after each frame or timeout; one
    // stuck in a source call is left behind rather than waited for.
    if slot.wait_closed(CAPTURE_STOP_WAIT) {
        let _ = handle.join();
    }
    if let Some(ep) = hyst.finish() {
        sink.emit(&Event::AnomalyEnd {
            time: now_rfc3339(),
            t: ts(start),
            frame: last_index.unwrap_or(0),
            start_frame: ep.start_frame,
            frames: ep.frames,
            peak_ratio: ep.peak_ratio,
            peak_frame: ep.peak_frame,
        })?;
    }
    let finished = observers.iter_mut().try_for_each(|o| o.finish(sink));
    sink.flush()?;
    result?;
    finished?;
    let c = slot.counters();
    let seconds = start.elapsed().as_secs_f64();
    let (p50, _) = lat.percentiles();
    Ok(Summary {
        processed,
        captured: c.published,
        dropped: c.dropped,
        bad_frames: c.bad_frames,
        failed_frames: failed,
        anomalies,
        camera_lost: lost_count,
        seconds,
        processed_fps: processed as f64 / seconds.max(1e-9),
        latency_ms_p50: p50,
        truth: truth.summary(),
    })
}
