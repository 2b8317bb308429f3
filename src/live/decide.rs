//! The decision with hysteresis: an episode starts after `enter_after`
//! consecutive frames above the threshold and ends after `leave_after`
//! consecutive frames below it, so one noisy frame raises no alarm.
//!
//! [`Decider`] wraps [`Hysteresis`] with the rest of a frame's decision:
//! the ratio of the deciding score to its threshold, a noisy camera
//! (sensor noise above the profile's limit, [`crate::noise`]) and a frozen
//! one (many identical frames) counted as anomalous, and which frames get an
//! `anomaly_start` or `anomaly_update` report (at most one update per
//! update interval).

use std::time::{Duration, Instant};

use super::LiveConfig;
use super::events::Cause;
use crate::score::{Method, Scores};

/// Ratio reported for a frozen frame whose score alone is below threshold.
pub const FROZEN_RATIO: f64 = 2.0;

/// What one frame changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Nothing to report.
    None,
    /// An episode started at this frame.
    Start,
    /// An episode goes on.
    Continue,
    /// The episode that was running ended at this frame.
    End(Episode),
}

/// A finished or running anomaly episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Episode {
    /// Frame index at which the episode was declared.
    pub start_frame: u64,
    /// Last frame above the threshold.
    pub last_above_frame: u64,
    /// Highest score / threshold ratio seen.
    pub peak_ratio: f64,
    /// Frame of the peak.
    pub peak_frame: u64,
    /// Frames processed during the episode.
    pub frames: u64,
}

/// Hysteresis state machine.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    enter_after: u32,
    leave_after: u32,
    above_run: u32,
    below_run: u32,
    episode: Option<Episode>,
    pending_peak: (f64, u64),
}

impl Hysteresis {
    /// Enter after `enter_after` frames above, leave after `leave_after`
    /// below (both at least 1).
    pub fn new(enter_after: u32, leave_after: u32) -> Hysteresis {
        Hysteresis {
            enter_after: enter_after.max(1),
            leave_after: leave_after.max(1),
            above_run: 0,
            below_run: 0,
            episode: None,
            pending_peak: (0.0, 0),
        }
    }

    /// The running episode, if any.
    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    /// Feeds one frame's ratio of score to threshold (`> 1` is above).
    pub fn update(&mut self, frame: u64, ratio: f64) -> Transition {
        let above = ratio > 1.0;
        if above {
            self.above_run += 1;
            self.below_run = 0;
        } else {
            self.below_run += 1;
            self.above_run = 0;
        }
        match &mut self.episode {
            None => {
                if above {
                    if self.above_run == 1 || ratio > self.pending_peak.0 {
                        self.pending_peak = (ratio, frame);
                    }
                    if self.above_run >= self.enter_after {
                        let (peak_ratio, peak_frame) = self.pending_peak;
                        self.episode = Some(Episode {
                            start_frame: frame,
                            last_above_frame: frame,
                            peak_ratio,
                            peak_frame,
                            frames: 1,
                        });
                        return Transition::Start;
                    }
                }
                Transition::None
            }
            Some(ep) => {
                ep.frames += 1;
                if above {
                    ep.last_above_frame = frame;
                    if ratio > ep.peak_ratio {
                        ep.peak_ratio = ratio;
                        ep.peak_frame = frame;
                    }
                }
                if self.below_run >= self.leave_after {
                    let done = *ep;
                    self.episode = None;
                    return Transition::End(done);
                }
                Transition::Continue
            }
        }
    }

    /// Ends a running episode (at shutdown).
    pub fn finish(&mut self) -> Option<Episode> {
        self.episode.take()
    }
}

/// Which anomaly report a frame gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `anomaly_start`.
    Start,
    /// `anomaly_update`.
    Update,
}

/// One frame's decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The deciding score (NaN if missing).
    pub score: f64,
    /// score / threshold; for a frame anomalous only by the camera's
    /// checks, its noise / the noise threshold, or [`FROZEN_RATIO`] when
    /// frozen.
    pub ratio: f64,
    /// Why the frame counts as anomalous (when it does).
    pub cause: Cause,
    /// What the frame changed.
    pub transition: Transition,
    /// Highest ratio of the running episode (this frame's ratio outside one).
    pub peak_ratio: f64,
    /// The report this frame gets, if any.
    pub report: Option<Report>,
}

/// The whole decision of the loop, frame by frame.
#[derive(Debug, Clone)]
pub struct Decider {
    method: Method,
    threshold: f64,
    freeze_frames: u32,
    noise_threshold: Option<f64>,
    update_interval: Duration,
    hysteresis: Hysteresis,
    last_report: Instant,
}

impl Decider {
    /// The decision `cfg` describes, for a loop started at `start`.
    pub fn new(cfg: &LiveConfig, start: Instant) -> Decider {
        Decider {
            method: cfg.method,
            threshold: cfg.threshold,
            freeze_frames: cfg.freeze_frames,
            noise_threshold: cfg.noise_threshold,
            update_interval: cfg.update_interval,
            hysteresis: Hysteresis::new(cfg.enter_after, cfg.leave_after),
            last_report: start,
        }
    }

    /// Decides frame `frame` with `scores`, taken at `now`, the last of
    /// `identical_run` frames in a row identical to the one before.
    pub fn decide(
        &mut self,
        frame: u64,
        scores: &Scores,
        identical_run: u32,
        now: Instant,
    ) -> Decision {
        let score = scores.get(self.method).map_or(f64::NAN, |v| v as f64);
        let mut ratio = score / self.threshold;
        let mut cause = Cause::Score;
        let above = |ratio: f64| ratio.partial_cmp(&1.0) == Some(std::cmp::Ordering::Greater);
        if let (Some(limit), Some(sigma)) = (self.noise_threshold, scores.noise)
            && !above(ratio)
            && above(sigma as f64 / limit)
        {
            ratio = sigma as f64 / limit;
            cause = Cause::SensorNoise;
        } else if self.freeze_frames > 0 && identical_run >= self.freeze_frames && !above(ratio) {
            ratio = FROZEN_RATIO;
            cause = Cause::FrozenFrame;
        }
        let transition = self.hysteresis.update(frame, ratio);
        let peak_ratio = self.hysteresis.episode().map_or(ratio, |e| e.peak_ratio);
        let report = match transition {
            Transition::Start => Some(Report::Start),
            Transition::Continue
                if now.saturating_duration_since(self.last_report) >= self.update_interval =>
            {
                Some(Report::Update)
            }
            _ => None,
        };
        if report.is_some() {
            self.last_report = now;
        }
        Decision {
            score,
            ratio,
            cause,
            transition,
            peak_ratio,
            report,
        }
    }

    /// The threshold the deciding score is compared with.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Compares the deciding score with `threshold` from the next frame on
    /// (`--refresh`; a threshold that is not a positive number is ignored).
    pub fn set_threshold(&mut self, threshold: f64) {
        if threshold.is_finite() && threshold > 0.0 {
            self.threshold = threshold;
        }
    }

    /// Whether an episode is running.
    pub fn in_episode(&self) -> bool {
        self.hysteresis.episode().is_some()
    }

    /// Ends a running episode (at shutdown).
    pub fn finish(&mut self) -> Option<Episode> {
        self.hysteresis.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decider(freeze_frames: u32, update_ms: u64, t0: Instant) -> Decider {
        Decider {
            method: Method::Kl,
            threshold: 10.0,
            freeze_frames,
            noise_threshold: None,
            update_interval: Duration::from_millis(update_ms),
            hysteresis: Hysteresis::new(2, 2),
            last_report: t0,
        }
    }

    fn kl(v: f32) -> Scores {
        Scores {
            kl: v,
            ..Scores::default()
        }
    }

    #[test]
    fn reports_a_start_then_updates_at_most_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = decider(0, 100, t0);
        let r: Vec<Option<Report>> = [0, 10, 20, 90, 130, 200, 260]
            .iter()
            .enumerate()
            .map(|(i, t)| d.decide(i as u64, &kl(20.0), 0, t0 + ms(*t)).report)
            .collect();
        use Report::{Start, Update};
        assert_eq!(
            r,
            [
                None,
                Some(Start),
                None,
                None,
                Some(Update),
                None,
                Some(Update)
            ]
        );
        let last = d.decide(7, &kl(20.0), 0, t0 + ms(270));
        assert!((last.ratio - 2.0).abs() < 1e-12 && last.cause == Cause::Score);
        assert!(d.in_episode());
        assert!(d.finish().is_some());
    }

    #[test]
    fn a_frozen_frame_counts_as_anomalous_and_a_missing_score_does_not() {
        let t0 = Instant::now();
        let mut d = decider(3, 0, t0);
        let under = d.decide(0, &kl(5.0), 2, t0);
        assert_eq!((under.ratio, under.cause), (0.5, Cause::Score));
        let frozen = d.decide(1, &kl(5.0), 3, t0);
        assert_eq!(
            (frozen.ratio, frozen.cause),
            (FROZEN_RATIO, Cause::FrozenFrame)
        );
        // a frozen frame that is anomalous anyway keeps its own ratio
        let high = d.decide(2, &kl(30.0), 4, t0);
        assert_eq!((high.ratio, high.cause), (3.0, Cause::Score));
        let mut m = decider(0, 0, t0);
        m.method = Method::Recon;
        let missing = m.decide(0, &kl(1.0), 0, t0);
        assert!(missing.score.is_nan() && missing.ratio.is_nan());
        assert_eq!(missing.transition, Transition::None);
    }

    #[test]
    fn a_noisy_camera_counts_as_anomalous_whatever_the_score() {
        let t0 = Instant::now();
        let mut d = decider(3, 0, t0);
        let noisy = |score: f32, sigma: f32| Scores {
            noise: Some(sigma),
            ..kl(score)
        };
        // no check in the profile: the noise is not looked at
        let off = d.decide(0, &noisy(5.0, 0.5), 0, t0);
        assert_eq!((off.ratio, off.cause), (0.5, Cause::Score));
        d.noise_threshold = Some(0.02);
        let quiet = d.decide(1, &noisy(5.0, 0.01), 0, t0);
        assert_eq!((quiet.ratio, quiet.cause), (0.5, Cause::Score));
        let loud = d.decide(2, &noisy(5.0, 0.13), 0, t0);
        assert!((loud.ratio - 6.5).abs() < 1e-6, "{}", loud.ratio);
        assert_eq!(loud.cause, Cause::SensorNoise);
        // noisy and frozen: the noise is the cause (the sensor still sends)
        let both = d.decide(3, &noisy(5.0, 0.13), 5, t0);
        assert_eq!(both.cause, Cause::SensorNoise);
        // a score above its threshold keeps its own ratio and cause
        let high = d.decide(4, &noisy(30.0, 0.13), 0, t0);
        assert_eq!((high.ratio, high.cause), (3.0, Cause::Score));
        // a frame without a measurement is decided by its score
        let unmeasured = d.decide(5, &kl(5.0), 0, t0);
        assert_eq!((unmeasured.ratio, unmeasured.cause), (0.5, Cause::Score));
    }

    #[test]
    fn one_noisy_frame_raises_no_alarm() {
        let mut h = Hysteresis::new(3, 5);
        let ratios = [0.5, 2.0, 0.5, 0.5, 2.0, 2.0, 0.9];
        for (i, r) in ratios.iter().enumerate() {
            assert_eq!(h.update(i as u64, *r), Transition::None, "frame {i}");
        }
    }

    #[test]
    fn enters_after_k_and_leaves_after_m() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.update(0, 1.5), Transition::None);
        assert_eq!(h.update(1, 3.0), Transition::Start);
        assert_eq!(h.update(2, 0.5), Transition::Continue);
        assert_eq!(h.update(3, 1.2), Transition::Continue);
        assert_eq!(h.update(4, 0.5), Transition::Continue);
        assert_eq!(h.update(5, 0.5), Transition::Continue);
        match h.update(6, 0.5) {
            Transition::End(ep) => {
                assert_eq!(ep.start_frame, 1);
                assert_eq!(ep.last_above_frame, 3);
                assert_eq!((ep.peak_ratio, ep.peak_frame), (3.0, 1));
                assert_eq!(ep.frames, 6);
            }
            other => panic!("expected the end, got {other:?}"),
        }
        assert!(h.episode().is_none());
    }
}
