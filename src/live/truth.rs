//! Detection figures against ground truth, for sources that know it (the
//! synthetic and photos scenes): an [`Observer`] beside the loop, not part of it.
//!
//! [`Truth`] follows the injected anomaly episodes frame by frame and
//! matches each `anomaly_start` with the episode it belongs to. The caller
//! attaches it to the loop and puts [`Truth::summary`] into the run's
//! [`Summary`](super::Summary) before emitting it:
//!
//! ```no_run
//! # fn demo(model: &bvae::Model, profile: &bvae::calibrate::Profile,
//! #         src: Box<dyn bvae::source::FrameSource>, cfg: &bvae::live::LiveConfig,
//! #         sink: &mut dyn bvae::live::events::EventSink,
//! #         stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
//! use bvae::live::{observe::Observer, run_with, truth::Truth};
//! let mut truth = Truth::for_config(cfg);
//! let mut summary = run_with(model, profile, src, cfg, sink, stop, &mut [&mut truth])?;
//! summary.truth = truth.summary();
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::LiveConfig;
use super::decide::Transition;
use super::events::{EventSink, TruthEpisode};
use super::observe::{Control, FrameView, Observer};
use crate::source::{AnomalyKind, FrameInfo};

/// Detection figures against a rendered scene's ground truth.
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
    /// Normal frames whose deciding score was above its threshold.
    pub normal_above: u64,
    /// Their share of the normal frames: the false-positive rate per frame
    /// that the profile's `fpr` is set for.
    pub normal_fpr: f64,
    /// Mean frames from an episode's first frame to its detection.
    pub mean_delay_frames: Option<f64>,
    /// (injected, detected) per anomaly kind.
    pub per_kind: BTreeMap<String, (usize, usize)>,
    /// Every episode.
    pub episodes: Vec<TruthEpisode>,
}

/// Ground-truth bookkeeping of one run.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    episodes: Vec<TruthEpisode>,
    open: Option<usize>,
    normal_frames: u64,
    normal_above: u64,
    false_alarms: usize,
    /// Frames after an episode's end during which an alarm still counts
    /// as its detection.
    grace: u64,
    seen: bool,
}

impl Truth {
    /// Bookkeeping where an alarm up to `grace` frames after an episode's
    /// last frame still detects it.
    pub fn new(grace: u64) -> Truth {
        Truth {
            grace,
            ..Truth::default()
        }
    }

    /// The grace the loop's decision needs: an episode is declared
    /// `enter_after` frames after it starts, so an alarm up to
    /// `enter_after + 2` frames after the episode ends is still its own.
    pub fn for_config(cfg: &LiveConfig) -> Truth {
        Truth::new(cfg.enter_after as u64 + 2)
    }

    /// Records the ground truth of frame `index` (nothing when the source
    /// does not know it), whose deciding score was `above` its threshold.
    pub fn record(&mut self, index: u64, truth: Option<Option<AnomalyKind>>, above: bool) {
        let Some(t) = truth else { return };
        self.seen = true;
        match t {
            None => {
                self.normal_frames += 1;
                self.normal_above += above as u64;
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

    /// Records an `anomaly_start` raised at `frame`.
    pub fn alarm(&mut self, frame: u64) {
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

    /// The figures so far; `None` when no frame came with ground truth.
    pub fn summary(&self) -> Option<TruthSummary> {
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
            normal_above: self.normal_above,
            normal_fpr: self.normal_above as f64 / self.normal_frames.max(1) as f64,
            mean_delay_frames: (!delays.is_empty())
                .then(|| delays.iter().sum::<f64>() / delays.len() as f64),
            per_kind,
            episodes: self.episodes.clone(),
        })
    }
}

impl Observer for Truth {
    fn frame(&mut self, view: &FrameView<'_>, _sink: &mut dyn EventSink) -> Result<Control> {
        // a frozen frame's ratio is set, not scored: only the score counts
        let above = view.score > view.threshold;
        self.record(view.index, view.truth, above);
        if view.transition == Transition::Start {
            self.alarm(view.index);
        }
        Ok(Control::Continue)
    }

    fn failed(&mut self, info: &FrameInfo, _sink: &mut dyn EventSink) -> Result<()> {
        // The frame was shown to the detector; its truth counts.
        self.record(info.index, info.truth, false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(truth: &mut Truth, frames: &[(u64, Option<AnomalyKind>)], alarms: &[u64]) {
        for &(i, t) in frames {
            truth.record(i, Some(t), alarms.contains(&i));
            if alarms.contains(&i) {
                truth.alarm(i);
            }
        }
    }

    #[test]
    fn episodes_are_matched_with_their_alarms() {
        let mut t = Truth::new(2);
        let k = Some(AnomalyKind::Occlusion);
        let mut frames: Vec<(u64, Option<AnomalyKind>)> = (0..10).map(|i| (i, None)).collect();
        frames.extend((10..15).map(|i| (i, k)));
        frames.extend((15..40).map(|i| (i, None)));
        frames.extend((40..45).map(|i| (i, Some(AnomalyKind::NoiseBurst))));
        frames.extend((45..100).map(|i| (i, None)));
        // detected at 13 (delay 3), again at 14 (same episode), the noise
        // burst within the grace (46), and a false alarm at 80
        run(&mut t, &frames, &[13, 14, 46, 80]);
        let s = t.summary().unwrap();
        assert_eq!((s.injected, s.detected, s.false_alarms), (2, 2, 1));
        assert_eq!(s.normal_frames, 90);
        assert!((s.false_alarms_per_1000 - 1000.0 / 90.0).abs() < 1e-9);
        // the frames alarmed at are above: 46 and 80 are normal ones
        assert_eq!(s.normal_above, 2);
        assert!((s.normal_fpr - 2.0 / 90.0).abs() < 1e-12);
        assert_eq!(s.mean_delay_frames, Some((3.0 + 6.0) / 2.0));
        assert_eq!(s.per_kind["occlusion"], (1, 1));
        assert_eq!(s.episodes[0].end_frame, 14);
    }

    #[test]
    fn a_source_without_truth_gives_no_summary() {
        let mut t = Truth::new(5);
        t.record(0, None, true);
        t.alarm(0);
        assert_eq!(t.summary(), None);
    }
}
