//! Observers: code that looks at every processed frame of the live loop
//! besides the decision itself (snapshots on disk, the live window, the
//! ground-truth figures).
//!
//! The loop computes each frame's results once ([`FrameResult`]: scores,
//! model input, latents, reconstruction, and the pixel map and its heat
//! when an observer asked for them with [`Observer::needs_map`]) and
//! lends them, read-only, in a [`FrameView`] to every observer after the
//! frame has been scored and its events emitted. Observers run on the
//! loop's thread, so they must be quick and must not allocate per frame
//! once running.

use anyhow::Result;

use super::decide::Transition;
use super::events::{AnomalyReport, EventSink};
use crate::calibrate::Profile;
use crate::frame::FrameRef;
use crate::score::{Method, Scores};
use crate::source::{AnomalyKind, FrameInfo};
use crate::tiles::Grid;

/// What the model made of one frame, computed once per frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameResult<'a> {
    /// Model input width.
    pub width: usize,
    /// Model input height.
    pub height: usize,
    /// Model input channels (1 or 3).
    pub channels: usize,
    /// All scores of the frame.
    pub scores: Scores,
    /// The preprocessed input `[C, H, W]`, values in [0, 1].
    pub input: &'a [f32],
    /// Latent means.
    pub mu: &'a [f32],
    /// KL per latent (nats).
    pub kl: &'a [f32],
    /// The reconstruction `[C, H, W]`, when the plan computes it.
    pub recon: Option<&'a [f32]>,
    /// The per-pixel anomaly map `[H, W]` (NLL per pixel), when an
    /// observer asked for it and the reconstruction exists.
    pub map: Option<&'a [f32]>,
    /// The map's heat `[H, W]` in [0, 1] on the one heatmap scale
    /// ([`crate::heat`]), whenever `map` is there.
    pub heat: Option<&'a [f32]>,
}

/// What the loop knows about one processed frame.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    /// Source frame index.
    pub index: u64,
    /// Ground truth of the frame, when the source knows it.
    pub truth: Option<Option<AnomalyKind>>,
    /// The frame as captured (camera resolution).
    pub frame: FrameRef<'a>,
    /// What the model made of it.
    pub result: FrameResult<'a>,
    /// The calibration profile in use.
    pub profile: &'a Profile,
    /// The deciding score.
    pub method: Method,
    /// This frame's score (NaN if the score is missing).
    pub score: f64,
    /// The threshold of the deciding score.
    pub threshold: f64,
    /// score / threshold; for a frame anomalous only by the camera checks,
    /// its noise / the noise threshold or the frozen-frame ratio.
    pub ratio: f64,
    /// What this frame changed in the decision.
    pub transition: Transition,
    /// Whether an anomaly episode is running after this frame.
    pub in_episode: bool,
    /// The `anomaly_start` or `anomaly_update` report emitted for this
    /// frame, if one was (at most one per update interval).
    pub report: Option<&'a AnomalyReport>,
    /// With a tiled profile: its grid (`result`'s images are the whole
    /// grid image).
    pub tiles: Option<Grid>,
    /// With tiles: bit *t* is set when tile *t* is above its threshold of
    /// the deciding score.
    pub hot_tiles: u64,
    /// The frame's latency: preprocessing, inference and scores.
    pub latency: std::time::Duration,
}

/// What the loop should do after an observer saw a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop the loop cleanly (e.g. the user closed the window).
    Stop,
}

/// Something that sees every processed frame.
pub trait Observer {
    /// Whether this observer needs the reconstruction (and so the decoder
    /// to run even when the deciding score does not need it).
    fn needs_recon(&self) -> bool {
        false
    }

    /// Whether this observer needs the pixel map and its heat in
    /// [`FrameResult`] (implies the reconstruction). Asked once, before
    /// the loop runs.
    fn needs_map(&self) -> bool {
        false
    }

    /// Called once per processed frame. Errors stop the loop, so an
    /// observer reports problems it can live with (a full disk) as events
    /// through `sink` and returns `Ok`.
    fn frame(&mut self, view: &FrameView<'_>, sink: &mut dyn EventSink) -> Result<Control>;

    /// Called for a frame the loop took but could not score (it gets a
    /// `frame_error` event, rate-limited). Errors stop the loop.
    fn failed(&mut self, _info: &FrameInfo, _sink: &mut dyn EventSink) -> Result<()> {
        Ok(())
    }

    /// Called once when the loop ends.
    fn finish(&mut self, _sink: &mut dyn EventSink) -> Result<()> {
        Ok(())
    }
}
