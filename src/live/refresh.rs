//! `--refresh`: the deciding score's threshold follows the slow drift of
//! the frames the loop judges normal ([`crate::drift`]), the whole
//! frame's or, with tiles, each tile's own, and every move is logged as a
//! `threshold_refresh` event (a refresh that leaves every threshold where
//! it was logs nothing).
//!
//! A frame counts as normal when no episode runs and it is not frozen:
//! the frames of an anomaly never move the threshold, so an object left
//! in view stays an anomaly for as long as it stays.

use anyhow::{Context, Result, bail};

use super::events::RefreshedThreshold;
use crate::calibrate::Profile;
use crate::drift::{Baseline, Drift, MAX_WINDOW, MIN_WINDOW};
use crate::score::{Method, Scores};

/// How often thresholds are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshConfig {
    /// Recent normal frames each refresh is computed from
    /// ([`MIN_WINDOW`] to [`MAX_WINDOW`]).
    pub window: usize,
    /// Normal frames between two refreshes, once the window is full.
    pub every: usize,
}

impl RefreshConfig {
    /// Refreshes from the last `window` normal frames, ten times per
    /// window.
    pub fn new(window: usize) -> Result<RefreshConfig> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            bail!("--refresh must be {MIN_WINDOW} to {MAX_WINDOW} frames, found {window}");
        }
        Ok(RefreshConfig {
            window,
            every: (window / 10).max(1),
        })
    }
}

/// The drift of the whole frame's threshold, or of every tile's.
#[derive(Debug, Clone)]
pub struct Refresher {
    method: Method,
    /// The whole frame's, or one per tile.
    units: Vec<Drift>,
    out: Vec<RefreshedThreshold>,
}

impl Refresher {
    /// Follows `method`'s threshold `threshold` (the loop's, used without
    /// tiles) over `profile`'s calibration.
    pub fn new(
        profile: &Profile,
        method: Method,
        threshold: f64,
        cfg: RefreshConfig,
    ) -> Result<Refresher> {
        let base = |p: &Profile, threshold: f64| {
            p.scores
                .get(&method)
                .and_then(|sc| Baseline::of(&sc.normal, threshold))
                .with_context(|| {
                    format!(
                        "--refresh: the profile has no median of normal {method} scores to follow"
                    )
                })
        };
        let bases = match &profile.tiles {
            None => vec![base(profile, threshold)?],
            Some(t) => t
                .tiles
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let thr = p.threshold_for(method).with_context(|| {
                        format!("--refresh: tile {i} has no threshold for {method}")
                    })?;
                    base(p, thr).with_context(|| format!("tile {i}"))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let units = bases
            .into_iter()
            .map(|b| Drift::new(b, cfg.window, cfg.every))
            .collect::<Result<Vec<_>>>()?;
        Ok(Refresher {
            method,
            out: Vec::with_capacity(units.len()),
            units,
        })
    }

    /// The score followed.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Frames each refresh looks back on.
    pub fn window(&self) -> usize {
        self.units.first().map_or(0, |d| d.window())
    }

    /// Adds a normal frame: `frame` its scores without tiles, `tiles` each
    /// tile's own with tiles (the pipeline of the same profile gives them). Returns the thresholds that a refresh due at
    /// this frame moved (with tiles, those of the tiles it moved, in tile
    /// order); none when it left them where they were.
    pub fn push(&mut self, frame: &Scores, tiles: Option<&[Scores]>) -> &[RefreshedThreshold] {
        self.out.clear();
        let m = self.method;
        let value = |s: &Scores| s.get(m).unwrap_or(f32::NAN);
        match tiles {
            Some(tiles) => {
                for (t, (d, s)) in self.units.iter_mut().zip(tiles).enumerate() {
                    if let Some(r) = d.push(value(s)).filter(moved) {
                        self.out.push(refreshed(Some(t), d, r));
                    }
                }
            }
            None => {
                if let Some(d) = self.units.first_mut()
                    && let Some(r) = d.push(value(frame)).filter(moved)
                {
                    self.out.push(refreshed(None, d, r));
                }
            }
        }
        &self.out
    }
}

/// Whether a refresh changed the threshold.
fn moved(r: &crate::drift::Refresh) -> bool {
    r.threshold != r.previous
}

fn refreshed(tile: Option<usize>, d: &Drift, r: crate::drift::Refresh) -> RefreshedThreshold {
    let b = d.baseline();
    RefreshedThreshold {
        tile,
        threshold: r.threshold,
        previous: r.previous,
        calibrated: b.threshold,
        median: r.median,
        calibrated_median: b.median,
    }
}
