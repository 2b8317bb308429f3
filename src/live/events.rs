//! Events of the live loop, written as JSON Lines (one object per line,
//! with a `type` field).

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::explain::Deviation;
use crate::score::Method;
use crate::source::AnomalyKind;

/// Why a frame counts as anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The calibrated score is above its threshold.
    Score,
    /// The frame has not changed for many frames (a stuck camera).
    FrozenFrame,
    /// The camera frame's sensor noise is above the profile's limit (a
    /// failing or jammed sensor), whatever the score says.
    SensorNoise,
}

/// Where a frame failed (`frame_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameStage {
    /// The source could not decode it (capture side).
    Decode,
    /// The pipeline could not score it (e.g. its buffer does not match
    /// its size).
    Score,
}

/// The state of an anomaly at one frame (`anomaly_start`, `anomaly_update`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyReport {
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    /// Seconds since the loop started.
    pub t: f64,
    /// Source frame index.
    pub frame: u64,
    /// Score method.
    pub method: Method,
    /// Score of this frame.
    pub score: f64,
    /// Calibrated threshold.
    pub threshold: f64,
    /// score / threshold.
    pub ratio: f64,
    /// Highest ratio so far in the episode.
    pub peak_ratio: f64,
    /// Why the frame is anomalous.
    pub cause: Cause,
    /// Latents that deviate most from normal data (with tiles: in the
    /// worst tile, by its own calibration).
    pub latents: Vec<Deviation>,
    /// With tiles: every tile above its threshold, highest ratio first
    /// (absent without tiles). `score` is then the worst tile's ratio and
    /// `threshold` 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiles: Vec<TileReport>,
    /// With the profile's noise check: the frame's sensor noise (σ as a
    /// fraction of full scale) and the limit it is held to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseReport>,
}

/// A frame's sensor noise against the profile's limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NoiseReport {
    /// The frame's noise σ, fraction of full scale.
    pub sigma: f64,
    /// The σ above which a frame is anomalous.
    pub threshold: f64,
}

/// One anomalous tile of a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TileReport {
    /// Tile number, row by row from the top left.
    pub tile: usize,
    /// Its column.
    pub col: usize,
    /// Its row.
    pub row: usize,
    /// Its score's ratio to its own threshold.
    pub ratio: f64,
}

/// One threshold of a `threshold_refresh` event.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RefreshedThreshold {
    /// With tiles: the tile (absent for the whole frame).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<usize>,
    /// The new threshold.
    pub threshold: f64,
    /// The threshold until now.
    pub previous: f64,
    /// The calibrated threshold.
    pub calibrated: f64,
    /// Median of the score over the recent normal frames.
    pub median: f64,
    /// Its median over the calibration frames.
    pub calibrated_median: f64,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An anomaly episode starts (after `enter_after` frames above threshold).
    AnomalyStart(AnomalyReport),
    /// The episode goes on (at most one per update interval).
    AnomalyUpdate(AnomalyReport),
    /// The episode ended (after `leave_after` frames below threshold).
    AnomalyEnd {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Frame at which the end was declared.
        frame: u64,
        /// Frame at which the episode started.
        start_frame: u64,
        /// Frames processed during the episode.
        frames: u64,
        /// Highest score / threshold ratio.
        peak_ratio: f64,
        /// Frame of the peak.
        peak_frame: u64,
    },
    /// No frame for longer than the stall timeout, or the source reported itself lost.
    CameraLost {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Last frame processed.
        last_frame: Option<u64>,
        /// What the source last reported.
        reason: String,
    },
    /// Frames are coming again.
    CameraRecovered {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// First frame after the outage.
        frame: u64,
        /// How long no frame came, in seconds.
        down_s: f64,
    },
    /// The threshold moved with the drift of recent normal frames
    /// (`--refresh`, [`crate::drift`]).
    ThresholdRefresh {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Frame after which the new thresholds hold.
        frame: u64,
        /// The score whose threshold moved.
        method: Method,
        /// Normal frames the refresh was computed from.
        window: usize,
        /// The thresholds that moved: the whole frame's, or those of the
        /// tiles whose threshold moved.
        thresholds: Vec<RefreshedThreshold>,
    },
    /// A snapshot of an anomalous frame was written (`--snapshots DIR`).
    Snapshot {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Frame shown.
        frame: u64,
        /// `start` or `update`: the anomaly event the snapshot belongs to.
        anomaly: String,
        /// The PNG file.
        path: String,
        /// Its size in bytes.
        bytes: u64,
        /// Older snapshots deleted to stay within the disk budget.
        deleted: u32,
    },
    /// A snapshot could not be written (full disk, unwritable folder, or
    /// a snapshot larger than the budget). The loop goes on; the next
    /// attempt waits `retry_in_s` seconds.
    SnapshotError {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Frame that was not saved.
        frame: u64,
        /// The file it was meant for.
        path: String,
        /// What went wrong.
        reason: String,
        /// Whether the disk (or quota) is full.
        disk_full: bool,
        /// Seconds until snapshots are tried again.
        retry_in_s: f64,
    },
    /// Frames fail to decode or to be scored. Rate-limited: at most one
    /// per stage every few seconds (5 s by default); the failures in
    /// between are counted in `suppressed`.
    FrameError {
        /// Wall-clock time.
        time: String,
        /// Seconds since start, when the loop saw the reported failure.
        t: f64,
        /// `decode` (the source could not decode it) or `score` (the
        /// pipeline refused it).
        stage: FrameStage,
        /// The failed frame's index (`score` failures; a frame that could
        /// not be decoded has none).
        frame: Option<u64>,
        /// Why the last failure happened.
        reason: String,
        /// Failures of this stage not reported since the previous
        /// `frame_error` of the stage.
        suppressed: u64,
        /// Failures of this stage so far.
        total: u64,
    },
    /// The end-of-run summary (last line of a `watch` or `demo` run).
    Summary(crate::live::Summary),
    /// Periodic statistics.
    Stats {
        /// Wall-clock time.
        time: String,
        /// Seconds since start.
        t: f64,
        /// Frames delivered by the source per second (this period).
        capture_fps: f64,
        /// Frames scored per second (this period).
        processed_fps: f64,
        /// Frames processed so far.
        processed: u64,
        /// Frames replaced before they could be processed, so far.
        dropped: u64,
        /// Frames the source could not decode, so far.
        bad_frames: u64,
        /// Median per-frame latency (preprocess + inference + score), ms.
        latency_ms_p50: f64,
        /// 99th percentile latency, ms.
        latency_ms_p99: f64,
        /// Resident memory, MB (when the OS reports it).
        rss_mb: Option<f64>,
        /// The last processed frame's score / threshold (NaN written as
        /// `null` when it had no score).
        ratio: Option<f64>,
        /// The active latent of the last processed frame that deviates
        /// most from normal data.
        top_latent: Option<usize>,
        /// Its name, when the model names it (`bvae.latent_names`).
        #[serde(skip_serializing_if = "Option::is_none")]
        top_latent_name: Option<String>,
        /// With `--mqtt`: whether the broker is connected.
        #[serde(skip_serializing_if = "Option::is_none")]
        mqtt_connected: Option<bool>,
        /// With `--mqtt`: events waiting for the broker (memory and spool).
        #[serde(skip_serializing_if = "Option::is_none")]
        mqtt_queued: Option<u64>,
        /// With `--mqtt`: events dropped so far because the spool's cap
        /// was reached (the oldest go first).
        #[serde(skip_serializing_if = "Option::is_none")]
        mqtt_dropped: Option<u64>,
    },
}

/// The wall-clock time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// How a sink that forwards events over a network is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Whether the other end is connected.
    pub connected: bool,
    /// Events waiting for it.
    pub queued: u64,
    /// Events dropped so far.
    pub dropped: u64,
    /// Events it acknowledged so far.
    pub delivered: u64,
}

/// Where events go.
pub trait EventSink {
    /// Records one event.
    fn emit(&mut self, event: &Event) -> Result<()>;
    /// Flushes buffered events.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// For a sink that forwards events over a network: how delivery goes
    /// (reported in `stats` events).
    fn delivery(&self) -> Option<Delivery> {
        None
    }
}

/// Every event to each of several sinks, in order; an error of one sink
/// is returned after the others had the event.
pub struct Tee<'a> {
    sinks: Vec<&'a mut dyn EventSink>,
}

impl<'a> Tee<'a> {
    /// The sinks, in the order they get each event.
    pub fn new(sinks: Vec<&'a mut dyn EventSink>) -> Tee<'a> {
        Tee { sinks }
    }
}

impl EventSink for Tee<'_> {
    fn emit(&mut self, event: &Event) -> Result<()> {
        let mut first_err = None;
        for s in self.sinks.iter_mut() {
            if let Err(e) = s.emit(event) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn flush(&mut self) -> Result<()> {
        let mut first_err = None;
        for s in self.sinks.iter_mut() {
            if let Err(e) = s.flush() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn delivery(&self) -> Option<Delivery> {
        self.sinks.iter().find_map(|s| s.delivery())
    }
}

/// Writes events as JSON Lines, flushing each line (events are rare and a
/// reader tailing the file should see them at once).
pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    /// Wraps a writer.
    pub fn new(out: W) -> Self {
        JsonLines { out }
    }
}

impl<W: Write> EventSink for JsonLines<W> {
    fn emit(&mut self, event: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, event).context("writing an event")?;
        self.out.write_all(b"\n").context("writing an event")?;
        self.out.flush().context("flushing events")
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flushing events")
    }
}

/// Keeps events in memory (tests, summaries).
impl EventSink for Vec<Event> {
    fn emit(&mut self, event: &Event) -> Result<()> {
        self.push(event.clone());
        Ok(())
    }
}

/// Ground truth of one injected anomaly episode, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthEpisode {
    /// Kind of anomaly.
    pub kind: AnomalyKind,
    /// First processed frame of the episode.
    pub start_frame: u64,
    /// Last processed frame of the episode.
    pub end_frame: u64,
    /// Frame at which the loop raised `anomaly_start`, if it did.
    pub detected_at: Option<u64>,
}
