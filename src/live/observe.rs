//! Observers: code that looks at every processed frame of the live loop
//! besides the decision itself (snapshots on disk, the live window).
//!
//! The loop lends each observer a [`FrameView`] after the frame has been
//! scored and its events emitted. Observers run on the loop's thread, so
//! they must be quick and must not allocate per frame once running.

use anyhow::Result;

use super::decide::Transition;
use super::events::{AnomalyReport, EventSink};
use crate::calibrate::Profile;
use crate::frame::FrameRef;
use crate::pipeline::Pipeline;
use crate::score::Method;

/// What the loop knows about one processed frame.
pub struct FrameView<'a> {
    /// Source frame index.
    pub index: u64,
    /// The frame as captured (camera resolution).
    pub frame: FrameRef<'a>,
    /// The pipeline that scored it: input, latents, reconstruction (when
    /// the plan computes it) and the per-pixel anomaly map.
    pub pipeline: &'a mut Pipeline,
    /// The calibration profile in use.
    pub profile: &'a Profile,
    /// The deciding score.
    pub method: Method,
    /// This frame's score (NaN if the score is missing).
    pub score: f64,
    /// The threshold of the deciding score.
    pub threshold: f64,
    /// score / threshold, or the frozen-frame ratio.
    pub ratio: f64,
    /// What this frame changed in the decision.
    pub transition: Transition,
    /// Whether an anomaly episode is running after this frame.
    pub in_episode: bool,
    /// The `anomaly_start` or `anomaly_update` report emitted for this
    /// frame, if one was (at most one per update interval).
    pub report: Option<&'a AnomalyReport>,
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

    /// Called once per processed frame. Errors stop the loop, so an
    /// observer reports problems it can live with (a full disk) as events
    /// through `sink` and returns `Ok`.
    fn frame(&mut self, view: &mut FrameView<'_>, sink: &mut dyn EventSink) -> Result<Control>;

    /// Called once when the loop ends.
    fn finish(&mut self, _sink: &mut dyn EventSink) -> Result<()> {
        Ok(())
    }
}
