//! Thresholds that follow the slow drift of normal frames.
//!
//! A fixed camera's normal frames drift: the light changes over the day,
//! the camera settles on its mount, the sensor warms up. A threshold
//! fitted once on calibration frames then flags more and more normal
//! frames (on the photos scene, a profile set for 1% flagged a quarter to
//! two thirds of the later frames, README "Detection quality").
//!
//! [`Drift`] follows the shift of one score's normal distribution: it
//! keeps the scores of the last `window` frames that the loop judged
//! normal and, every `every` of them, moves the threshold so that it sits
//! as far above their median as the calibrated threshold sat above the
//! calibration frames' median:
//!
//! `threshold = clamp(T + m − M, T, MAX_DRIFT · T)`
//!
//! with `T` the calibrated threshold, `M` the calibration frames' median
//! and `m` the recent frames' median. The median ignores the anomalous
//! frames that slip into the window (frames of a running episode are kept
//! out by the caller, those of an anomaly not detected are not). Two
//! choices, both measured on the photos scene (README "Detection
//! quality"):
//! - **A shift, not a stretch.** Scaling by the recent spread (90th
//!   percentile − median) as well let every undetected anomaly in the
//!   window widen it: the `pixel` threshold rose to 1.7× and the rate of
//!   normal frames above it fell to 0.35%, a third of its 1% target, with
//!   fewer episodes found.
//! - **Never below the calibrated threshold.** A window shorter than the
//!   scene's slow normal cycles sees a narrower range than the
//!   calibration did; letting the threshold follow it down made `kl` flag
//!   47% of later normal frames. The calibrated threshold is the floor, a
//!   refresh only follows normal frames that got worse, and [`MAX_DRIFT`]
//!   times it the ceiling, so no slow change walks it off.
//!
//! Everything is sized at construction: pushing a score and refreshing
//! allocate nothing.

use anyhow::{Result, ensure};

use crate::stats::Summary;

/// Most the threshold may rise above its calibrated value, as a factor.
pub const MAX_DRIFT: f64 = 4.0;
/// Fewest recent frames a refresh is computed from.
pub const MIN_WINDOW: usize = 50;
/// Most recent frames a refresh is computed from.
pub const MAX_WINDOW: usize = 100_000;

/// Where the normal scores sat at calibration: median and threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Median of the score over the calibration frames.
    pub median: f64,
    /// The calibrated threshold (> 0).
    pub threshold: f64,
}

impl Baseline {
    /// The baseline of a score whose calibration frames `normal`
    /// summarises, with threshold `threshold`; `None` when the summary has
    /// no finite median or the threshold is not a positive number.
    pub fn of(normal: &Summary, threshold: f64) -> Option<Baseline> {
        let median = normal
            .quantiles
            .iter()
            .find(|(at, _)| (at - 0.5).abs() < 1e-9)
            .map(|&(_, v)| v)?;
        (median.is_finite() && threshold.is_finite() && threshold > 0.0)
            .then_some(Baseline { median, threshold })
    }
}

/// One refresh: the threshold before and after, and the recent frames'
/// median it was computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refresh {
    /// The threshold until now.
    pub previous: f64,
    /// The new threshold.
    pub threshold: f64,
    /// Median of the recent normal frames' score.
    pub median: f64,
}

/// The recent normal scores of one score (of the whole frame, or of one
/// tile) and the threshold they give.
#[derive(Debug, Clone)]
pub struct Drift {
    base: Baseline,
    threshold: f64,
    /// Ring of the last `window` scores.
    ring: Vec<f32>,
    /// Next slot of `ring` to write.
    next: usize,
    /// Slots of `ring` filled.
    filled: usize,
    /// Scores pushed since the last refresh.
    since: usize,
    every: usize,
    scratch: Vec<f32>,
}

impl Drift {
    /// Follows a score from `base`, refreshing every `every` scores pushed
    /// once `window` ([`MIN_WINDOW`] to [`MAX_WINDOW`]) have been.
    pub fn new(base: Baseline, window: usize, every: usize) -> Result<Drift> {
        ensure!(
            (MIN_WINDOW..=MAX_WINDOW).contains(&window),
            "the refresh window must be {MIN_WINDOW} to {MAX_WINDOW} frames, found {window}"
        );
        ensure!(
            (1..=window).contains(&every),
            "a refresh every {every} frames: expected 1 to the window ({window})"
        );
        Ok(Drift {
            base,
            threshold: base.threshold,
            ring: vec![0.0; window],
            next: 0,
            filled: 0,
            since: 0,
            every,
            scratch: vec![0.0; window],
        })
    }

    /// The threshold in force.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Scores each refresh looks back on.
    pub fn window(&self) -> usize {
        self.ring.len()
    }

    /// The calibration's baseline.
    pub fn baseline(&self) -> Baseline {
        self.base
    }

    /// Adds the score of a frame judged normal (a non-finite one is
    /// skipped) and returns the refresh when one is due.
    pub fn push(&mut self, score: f32) -> Option<Refresh> {
        if !score.is_finite() {
            return None;
        }
        let n = self.ring.len();
        self.ring[self.next] = score;
        self.next = (self.next + 1) % n;
        self.filled = (self.filled + 1).min(n);
        self.since += 1;
        if self.filled < n || self.since < self.every {
            return None;
        }
        self.since = 0;
        Some(self.refresh())
    }

    /// Computes the threshold from the window (full).
    fn refresh(&mut self) -> Refresh {
        self.scratch.copy_from_slice(&self.ring);
        let mid = self.scratch.len() / 2;
        let median = *self.scratch.select_nth_unstable_by(mid, f32::total_cmp).1 as f64;
        let b = self.base;
        let t = (b.threshold + median - b.median).clamp(b.threshold, b.threshold * MAX_DRIFT);
        let previous = self.threshold;
        self.threshold = t;
        Refresh {
            previous,
            threshold: t,
            median,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64 as Rng;

    fn base() -> Baseline {
        // normal scores uniform on [0, 1]: median 0.5, T = q99
        Baseline {
            median: 0.5,
            threshold: 0.99,
        }
    }

    #[test]
    fn a_baseline_needs_a_median_and_a_threshold() {
        let s = Summary::of(&(0..100).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
        let b = Baseline::of(&s, 99.0).unwrap();
        assert!((b.median - 49.5).abs() < 1.0 && b.threshold == 99.0);
        assert!(Baseline::of(&s, f64::NAN).is_none());
        assert!(Baseline::of(&s, 0.0).is_none());
        let mut no_median = s.clone();
        no_median.quantiles.retain(|(q, _)| *q != 0.5);
        assert!(Baseline::of(&no_median, 99.0).is_none());
    }

    #[test]
    fn the_window_must_fill_before_a_refresh() {
        assert!(Drift::new(base(), MIN_WINDOW - 1, 1).is_err());
        assert!(Drift::new(base(), 100, 0).is_err());
        assert!(Drift::new(base(), 100, 101).is_err());
        let mut d = Drift::new(base(), 100, 10).unwrap();
        for i in 0..99 {
            assert_eq!(d.push(i as f32 / 100.0), None);
        }
        assert!(d.push(f32::NAN).is_none());
        assert!(d.push(0.99).is_some());
        for _ in 0..9 {
            assert!(d.push(0.5).is_none());
        }
        assert!(d.push(0.5).is_some());
    }

    #[test]
    fn a_shifted_distribution_moves_the_threshold_with_it() {
        let mut rng = Rng::new(7);
        let mut d = Drift::new(base(), 1000, 1000).unwrap();
        // the same scores: the threshold stays where it was
        let mut last = None;
        for _ in 0..1000 {
            last = d.push(rng.unit_f32()).or(last);
        }
        let r = last.unwrap();
        assert!((r.threshold - 0.99).abs() < 0.05, "{r:?}");
        // scores now uniform on [2, 3]: median 2.5, T = 2.99
        for _ in 0..1000 {
            last = d.push(2.0 + rng.unit_f32()).or(last);
        }
        let r = last.unwrap();
        assert!((r.median - 2.5).abs() < 0.05, "{r:?}");
        assert!((r.threshold - 2.99).abs() < 0.05, "{r:?}");
        assert!((d.threshold() - r.threshold).abs() < 1e-12);
        // about 1% of the new scores are above the new threshold
        let above = (0..10_000)
            .filter(|_| 2.0 + rng.unit_f32() as f64 > d.threshold())
            .count();
        assert!((20..=300).contains(&above), "{above}");
    }

    #[test]
    fn outliers_do_not_move_it_and_it_stays_within_its_bounds() {
        let mut rng = Rng::new(3);
        let mut d = Drift::new(base(), 500, 500).unwrap();
        let mut last = None;
        for i in 0..500 {
            let v = if i % 5 == 0 { 1e6 } else { rng.unit_f32() };
            last = d.push(v).or(last);
        }
        // a fifth of the window far off moves the median by a fraction
        assert!((last.unwrap().threshold - 0.99).abs() < 0.2, "{last:?}");
        for _ in 0..500 {
            last = d.push(1e9).or(last);
        }
        assert_eq!(last.unwrap().threshold, 0.99 * MAX_DRIFT);
        // lower normal scores never bring it below the calibrated one
        for _ in 0..500 {
            last = d.push(-5.0).or(last);
        }
        assert_eq!(last.unwrap().threshold, 0.99);
    }
}
