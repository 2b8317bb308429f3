//! Calibration on normal frames: score statistics, the threshold for a
//! target false-positive rate, the normal latents' mean and shrinkage
//! covariance, and the choice of the default score.
//!
//! Users rarely have labelled anomalies, so the default score is chosen
//! from normal frames alone: the `combined` score, the sum of
//! [`COMBINED_PARTS`] each standardised on the normal frames. Scores
//! chosen by how many synthetic anomalies they flag (an occluding patch, a
//! noise burst, an inverted region) favoured the `recon` score, which is
//! the weakest on real anomalies (one-class Fashion-MNIST, README "Detection
//! quality"); the synthetic detection rates are still measured and kept in
//! the profile.
//!
//! The latent distance is cross-fitted: the Gaussian of one half of the
//! frames scores the other half, so its threshold is not set on distances
//! that were fitted to themselves (which would be too small). Likewise
//! each frame's `knn` distance leaves the frame itself out of the bank.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::error::ProfileError;
use crate::frame::Frame;
use crate::imageio::write_atomic;
use crate::mask::Mask;
use crate::meta::{MAX_LATENT_DIM, ModelSpec};
use crate::model::{Model, PlanKind};
use crate::pipeline::Pipeline;
use crate::preprocess::Fit;
use crate::probe::{self, ProbeKind};
use crate::reference::{
    Combination, KNN_K, MAX_BANK, MIN_PIXEL_STD_FLOOR, NearestNormal, Part, PixelNormal, Reference,
};
use crate::rng::SplitMix64;
use crate::score::{Method, Scores};
use crate::stats::{Gaussian, Mahalanobis, Summary, quantile_sorted};
use crate::tiles::Grid;

/// Version of the profile format this build writes and reads.
pub const PROFILE_FORMAT: u32 = 1;
/// Fewest normal frames calibration accepts.
pub const MIN_FRAMES: usize = 20;
/// Most normal frames used to make synthetic anomalies.
const MAX_PROBES: usize = 300;
/// Largest calibration profile file accepted, in bytes. A profile for
/// [`MAX_LATENT_DIM`] latents, whose covariance is a million numbers, is
/// about 36 MB.
pub const MAX_PROFILE_BYTES: u64 = 64 << 20;
/// Most quantiles one score's summary may hold (calibration writes
/// [`crate::stats::SUMMARY_QUANTILES`]).
pub const MAX_PROFILE_QUANTILES: usize = 64;
/// Most warnings a profile may hold.
pub const MAX_PROFILE_WARNINGS: usize = 256;

/// Per-score calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreCalibration {
    /// Statistics of the score over the normal frames.
    pub normal: Summary,
    /// Threshold: the (1 − fpr) quantile of the normal scores.
    pub threshold: f64,
    /// Fraction of synthetic anomalies above the threshold.
    pub synthetic_detection: f64,
    /// False-positive rate on normal frames of a stretch of time the
    /// threshold was not fitted on (blocked cross-validation over
    /// [`HELD_OUT_FOLDS`] parts, [`held_out_fpr`]; in profiles of earlier
    /// versions, the later half with everything fitted on the earlier one;
    /// absent in older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_fpr: Option<f64>,
}

/// The normal latent means that the `knn` score compares with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnnCalibration {
    /// Neighbours averaged.
    pub k: usize,
    /// Latent means of normal frames (at most [`MAX_BANK`]).
    pub bank: Vec<Vec<f32>>,
}

/// One part of the `combined` score, standardised on normal frames.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombinedPart {
    /// The score.
    pub method: Method,
    /// Its mean on normal frames.
    pub mean: f64,
    /// Its standard deviation on normal frames.
    pub std: f64,
    /// Whether only its excess over 3σ above its normal mean counts
    /// ([`crate::reference::Part::excess`]; absent in older profiles).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub excess: bool,
}

/// The scores summed, standardised, into the `combined` score, with
/// whether each counts only its excess over 3σ: the latent distance, the
/// distance to the nearest normal latents and the per-pixel residual
/// z-score in full, and the reconstruction NLL only where it is far beyond
/// normal. Each catches what the others miss (an unusual code, an unseen
/// combination of usual latents, a local pixel change, a frame the model
/// cannot reconstruct at all).
///
/// On the one-class Fashion-MNIST validation split (README "Detection
/// quality"), latent + knn + recon in full gave a mean AUROC of 92.5
/// (weakest class 76.1) and latent + knn + pixel 93.9 (weakest 84.2):
/// simple, dark images reconstruct well whatever they are, so the whole
/// `recon` value often runs against the anomaly. Its excess over 3σ changes
/// nothing there (93.9, 84.2) and keeps a gross failure to reconstruct (a
/// scene the model never saw scored 100× the normal `recon`) from being
/// diluted by the other parts.
pub const COMBINED_PARTS: [(Method, bool); 4] = [
    (Method::Latent, false),
    (Method::Knn, false),
    (Method::Pixel, false),
    (Method::Recon, true),
];

/// The per-pixel residual statistics of the `pixel` score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelCalibration {
    /// Smallest standard deviation divided by (calibration: the mean of
    /// `std`, at least [`MIN_PIXEL_STD_FLOOR`]).
    pub floor: f32,
    /// Mean residual `x − recon` of each input value (C·H·W, row-major).
    pub mean: Vec<f32>,
    /// Standard deviation of each input value's residual.
    pub std: Vec<f32>,
}

/// Sums of the residuals `x − recon` of each input value over frames.
#[derive(Debug, Clone)]
struct Residuals {
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    frames: usize,
}

impl Residuals {
    fn new(len: usize) -> Residuals {
        Residuals {
            sum: vec![0.0; len],
            sum_sq: vec![0.0; len],
            frames: 0,
        }
    }

    fn add(&mut self, x: &[f32], r: &[f32]) {
        for ((s, q), (&x, &r)) in self
            .sum
            .iter_mut()
            .zip(&mut self.sum_sq)
            .zip(x.iter().zip(r))
        {
            let d = (x - r) as f64;
            *s += d;
            *q += d * d;
        }
        self.frames += 1;
    }

    /// The sums of every frame but `part`'s (a subset of these frames).
    fn without(&self, part: &Residuals) -> Residuals {
        let minus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a - b).collect();
        Residuals {
            sum: minus(&self.sum, &part.sum),
            sum_sq: minus(&self.sum_sq, &part.sum_sq),
            frames: self.frames.saturating_sub(part.frames),
        }
    }

    fn calibration(&self) -> PixelCalibration {
        let n = self.frames.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std: Vec<f32> = self
            .sum_sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(0.0)).sqrt() as f32)
            .collect();
        let mean_std = std.iter().map(|&s| s as f64).sum::<f64>() / std.len().max(1) as f64;
        PixelCalibration {
            floor: (mean_std as f32).max(MIN_PIXEL_STD_FLOOR),
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }
}

impl PixelCalibration {
    /// The scorer of these statistics.
    pub fn normal(&self) -> Result<PixelNormal> {
        PixelNormal::new(&self.mean, &self.std, self.floor)
    }
}

/// Statistics of the latent means over normal frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentCalibration {
    /// Mean and shrinkage covariance of mu.
    pub gaussian: Gaussian,
    /// Per-latent standard deviation of mu.
    pub std: Vec<f64>,
    /// Per-latent 1st percentile of mu (lower end of the normal range).
    pub p01: Vec<f64>,
    /// Per-latent 99th percentile of mu (upper end of the normal range).
    pub p99: Vec<f64>,
}

/// A calibration profile (`NAME.calibration.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile format version.
    pub format: u32,
    /// SHA-256 of the model the profile was fitted for.
    pub model_sha256: String,
    /// File name of that model (informative).
    pub model_file: String,
    /// When the profile was made (RFC 3339, UTC).
    pub created: String,
    /// Number of normal frames.
    pub frames: usize,
    /// How frames were fitted to the model's input.
    pub fit: Fit,
    /// Target false-positive rate.
    pub fpr: f64,
    /// Default score method.
    pub method: Method,
    /// Threshold of the default method.
    pub threshold: f64,
    /// Why the default method was chosen.
    pub method_reason: String,
    /// Calibration of every score.
    pub scores: BTreeMap<Method, ScoreCalibration>,
    /// Normal latent statistics.
    pub latent: LatentCalibration,
    /// The bank of the `knn` score (absent in profiles of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn: Option<KnnCalibration>,
    /// The parts of the `combined` score (absent in profiles of older
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<Vec<CombinedPart>>,
    /// The residual statistics of the `pixel` score (absent in profiles of
    /// older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel: Option<PixelCalibration>,
    /// Per kind of synthetic anomaly, the fraction each score flagged
    /// (absent in profiles of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<ProbeDetection>>,
    /// Warnings raised while calibrating (e.g. too few frames for the FPR).
    pub warnings: Vec<String>,
    /// With tiles: the grid and each tile's own calibration. The profile's
    /// other fields are then the statistics shared by every tile (fitted
    /// on tiles from all places), and its method decides every tile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<TileCalibration>,
    /// The regions of the frame left out of every score and heatmap
    /// (`bvae calibrate --mask`); kept in the profile so that every run
    /// scores as the calibration did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<Mask>,
    /// The camera's sensor-noise check (absent in profiles of older
    /// versions and when `--noise-factor 0` turned it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseCalibration>,
}

/// The sensor-noise check of a profile ([`crate::noise`]): a frame whose
/// noise is above `threshold` is anomalous whatever its score, as a frozen
/// one is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseCalibration {
    /// The noise σ (fraction of full scale) of the normal frames.
    pub normal: Summary,
    /// How many times the noisiest normal frame's σ a frame may reach.
    pub factor: f64,
    /// The σ above which a frame is too noisy: `factor` × the normal
    /// frames' largest, and at least [`MIN_NOISE_THRESHOLD`].
    pub threshold: f64,
}

/// Default of `calibrate --noise-factor`: a frame fails the noise check
/// above twice the noise of the noisiest normal frame. Normal sensor noise
/// varies little (on the photos scene every normal frame measured
/// σ = 0.0078) and a failing or jammed sensor is far above it (a burst of
/// σ = 0.15 measured 0.126–0.133).
pub const DEFAULT_NOISE_FACTOR: f64 = 2.0;

/// Lowest noise threshold, σ as a fraction of full scale (about 5 gray
/// levels): a camera whose frames carry no measurable noise (a test
/// pattern, strong compression) must not flag the first speck of it.
pub const MIN_NOISE_THRESHOLD: f64 = 0.02;

impl NoiseCalibration {
    /// The check for the noise `sigmas` of normal frames, at `factor` (> 0).
    pub fn new(sigmas: &[f64], factor: f64) -> Result<NoiseCalibration> {
        ensure!(
            factor.is_finite() && factor > 0.0,
            "the noise factor must be a positive number, found {factor}"
        );
        let normal = Summary::of(sigmas).context("summarising the frames' noise")?;
        let threshold = (factor * normal.max).max(MIN_NOISE_THRESHOLD);
        Ok(NoiseCalibration {
            normal,
            factor,
            threshold,
        })
    }
}

/// The tiles of a tiled profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileCalibration {
    /// Columns × rows.
    pub grid: Grid,
    /// Per score, the factor every tile's threshold was raised by so that
    /// "any tile above its threshold" keeps the target false-positive rate
    /// per frame (≥ 1).
    pub frame_factor: BTreeMap<Method, f64>,
    /// Each tile's calibration, row by row (no tiles of their own).
    pub tiles: Vec<Profile>,
}

/// How often each score flagged one kind of synthetic anomaly
/// ([`crate::probe::ProbeKind`]) at its calibrated threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeDetection {
    /// The kind's name (`occlusion`, `noise`, ...).
    pub kind: String,
    /// Probes of this kind.
    pub count: usize,
    /// Fraction flagged, per score.
    pub detected: BTreeMap<Method, f64>,
    /// Fraction the sensor-noise check flagged (absent without the check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_check: Option<f64>,
}

/// Most kinds of probe a profile may report.
const MAX_PROFILE_PROBE_KINDS: usize = 64;

impl Profile {
    /// Threshold of one method.
    pub fn threshold_for(&self, m: Method) -> Option<f64> {
        self.scores.get(&m).map(|s| s.threshold)
    }

    /// The Mahalanobis scorer of the normal latents.
    pub fn mahalanobis(&self) -> Result<Mahalanobis> {
        Mahalanobis::new(&self.latent.gaussian)
    }

    /// Everything the scorer compares frames with: the latent Gaussian,
    /// the `knn` bank and the `combined` parts, where the profile has them.
    pub fn reference(&self) -> Result<Reference> {
        let mahalanobis = self.mahalanobis()?;
        let knn = match &self.knn {
            Some(k) => Some(NearestNormal::new(&k.bank, k.k, &mahalanobis)?),
            None => None,
        };
        let combined = match &self.combined {
            Some(parts) => Some(combination(parts)?),
            None => None,
        };
        let pixel = match &self.pixel {
            Some(p) => Some(p.normal()?),
            None => None,
        };
        Ok(Reference::new(mahalanobis, knn, pixel, combined))
    }

    /// Saves the profile atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).context("serialising the profile")?;
        text.push('\n');
        write_atomic(path, text.as_bytes())
    }

    /// Loads a profile and checks that it was made for `model`.
    pub fn load(path: &Path, model: &Model) -> Result<Profile, ProfileError> {
        use std::io::Read;
        let unreadable = |detail: String| ProfileError::Unreadable {
            path: path.to_path_buf(),
            detail,
        };
        let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
        // One byte more than the limit tells a file that is too large.
        let mut bytes = vec![];
        file.take(MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        Profile::from_bytes(&bytes, path, model)
    }

    /// Parses the bytes of a profile file read from `path` (which names it
    /// in errors) and checks that it was made for `model` and that its
    /// sizes match the model's.
    pub fn from_bytes(bytes: &[u8], path: &Path, model: &Model) -> Result<Profile, ProfileError> {
        let unreadable = |detail: String| ProfileError::Unreadable {
            path: path.to_path_buf(),
            detail,
        };
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(unreadable(format!(
                "more than {} MiB; expected a profile written by `bvae calibrate` (a few kB to \
                 tens of MB)",
                MAX_PROFILE_BYTES >> 20
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| unreadable(format!("not a bvae profile: not UTF-8 text ({e})")))?;
        let p: Profile = serde_json::from_str(text)
            .map_err(|e| unreadable(format!("not a bvae profile: {e}")))?;
        p.check(path, model)?;
        let trained = model.meta().tiles;
        if trained.is_some() && trained != p.tiles.as_ref().map(|t| t.grid) {
            return Err(ProfileError::Invalid {
                path: path.to_path_buf(),
                detail: format!(
                    "the model was trained on tiles of a {} grid, the profile scores {}; run \
                     `bvae calibrate` again for this model",
                    trained.map(|g| g.to_string()).unwrap_or_default(),
                    p.tiles
                        .as_ref()
                        .map_or("whole frames".to_string(), |t| format!("a {} grid", t.grid))
                ),
            });
        }
        if let Some(t) = &p.tiles {
            let invalid = |detail: String| ProfileError::Invalid {
                path: path.to_path_buf(),
                detail,
            };
            if t.tiles.len() != t.grid.count() {
                return Err(invalid(format!(
                    "a {} grid has {} tiles, the profile calibrates {}; run `bvae calibrate` \
                     again for this model",
                    t.grid,
                    t.grid.count(),
                    t.tiles.len()
                )));
            }
            for (i, tile) in t.tiles.iter().enumerate() {
                if tile.tiles.is_some() {
                    return Err(invalid(format!("tile {i} has tiles of its own")));
                }
                if tile.method != p.method {
                    return Err(invalid(format!(
                        "tile {i} decides with {}, the profile with {}",
                        tile.method, p.method
                    )));
                }
                tile.check(path, model).map_err(|e| match e {
                    ProfileError::Invalid { path, detail } => ProfileError::Invalid {
                        path,
                        detail: format!("tile {i}: {detail}"),
                    },
                    e => e,
                })?;
            }
        }
        Ok(p)
    }

    /// The threshold the live decision compares `m`'s score with: the
    /// profile's, or with tiles 1 (the frame's score is then the largest
    /// ratio of a tile's score to its threshold), when every tile has one.
    pub fn decision_threshold(&self, m: Method) -> Option<f64> {
        match &self.tiles {
            None => self.threshold_for(m),
            Some(t) => t
                .tiles
                .iter()
                .all(|p| p.scores.contains_key(&m))
                .then_some(1.0),
        }
    }

    /// The calibration that explains tile `t`'s latents: the tile's own, or
    /// the whole profile without tiles.
    pub fn tile_profile(&self, t: Option<usize>) -> &Profile {
        match (&self.tiles, t) {
            (Some(tiles), Some(t)) => tiles.tiles.get(t).unwrap_or(self),
            _ => self,
        }
    }

    /// Checks a parsed profile (one tile's, or one without tiles) against
    /// `model`.
    fn check(&self, path: &Path, model: &Model) -> Result<(), ProfileError> {
        let p = self;
        let invalid = |detail: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        if p.format != PROFILE_FORMAT {
            return Err(invalid(format!(
                "format {} is not the supported {PROFILE_FORMAT}",
                p.format
            )));
        }
        if p.model_sha256 != model.sha256() {
            return Err(ProfileError::ModelMismatch {
                path: path.to_path_buf(),
                expected: p.model_sha256.clone(),
                model: model.path().to_path_buf(),
                found: model.sha256().to_string(),
            });
        }
        p.check_sizes(model.spec().latent_dim, model.spec().image_len())
            .map_err(invalid)?;
        if !p.threshold.is_finite() || !p.scores.contains_key(&p.method) {
            return Err(invalid(format!(
                "no finite threshold for the default method {}",
                p.method
            )));
        }
        if let Err(e) = Mahalanobis::new(&p.latent.gaussian) {
            return Err(invalid(format!("latent covariance unusable: {e}")));
        }
        if let Some(n) = &p.noise
            && !(n.threshold.is_finite() && n.threshold > 0.0)
        {
            return Err(invalid(format!(
                "the noise threshold must be a positive number, found {}; run `bvae calibrate` \
                 again for this model",
                n.threshold
            )));
        }
        if let Err(e) = p.reference() {
            return Err(invalid(format!(
                "{e}; run `bvae calibrate` again for this model"
            )));
        }
        let known = |m: Method| match m {
            Method::Knn => p.knn.is_some(),
            Method::Combined => p.combined.is_some(),
            Method::Pixel => p.pixel.is_some(),
            _ => true,
        };
        if let Some(m) = p.scores.keys().copied().find(|&m| !known(m)) {
            return Err(invalid(format!(
                "score {m} has a threshold but the profile lacks what it needs; run `bvae \
                 calibrate` again for this model"
            )));
        }
        Ok(())
    }

    /// Checks every array of the profile against the model's `z` latents
    /// and the format's bounds, and that the numbers are finite; says what
    /// is wrong and what to do.
    fn check_sizes(&self, z: usize, image_len: usize) -> Result<(), String> {
        let again = "run `bvae calibrate` again for this model";
        if z > MAX_LATENT_DIM {
            return Err(format!(
                "the model has {z} latents; expected at most {MAX_LATENT_DIM}"
            ));
        }
        let l = &self.latent;
        let g = &l.gaussian;
        for (name, len, want) in [
            ("latent.gaussian.mean", g.mean.len(), z),
            ("latent.gaussian.cov", g.cov.len(), z * z),
            ("latent.std", l.std.len(), z),
            ("latent.p01", l.p01.len(), z),
            ("latent.p99", l.p99.len(), z),
        ] {
            if len != want {
                return Err(format!(
                    "latent statistics are not for {z} latents: `{name}` has {len} entries, \
                     expected {want}; {again}"
                ));
            }
        }
        for (name, v) in [
            ("latent.gaussian.mean", &g.mean),
            ("latent.gaussian.cov", &g.cov),
            ("latent.std", &l.std),
            ("latent.p01", &l.p01),
            ("latent.p99", &l.p99),
        ] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(format!(
                    "`{name}` entry {i} is {}: expected a finite number; {again}",
                    v[i]
                ));
            }
        }
        if let Some(i) = l.std.iter().position(|&s| s < 0.0) {
            return Err(format!(
                "`latent.std` entry {i} is {}: expected a standard deviation ≥ 0; {again}",
                l.std[i]
            ));
        }
        if !(0.0..=1.0).contains(&g.shrinkage) {
            return Err(format!(
                "`latent.gaussian.shrinkage` is {}: expected 0 to 1; {again}",
                g.shrinkage
            ));
        }
        for (m, c) in &self.scores {
            let q = &c.normal.quantiles;
            if q.len() > MAX_PROFILE_QUANTILES {
                return Err(format!(
                    "score {m} has {} quantiles: expected at most {MAX_PROFILE_QUANTILES}; {again}",
                    q.len()
                ));
            }
            let n = &c.normal;
            let finite = [
                n.mean,
                n.std,
                n.min,
                n.max,
                c.threshold,
                c.synthetic_detection,
            ]
            .iter()
            .chain(q.iter().flat_map(|(a, b)| [a, b]))
            .all(|v| v.is_finite());
            if !finite {
                return Err(format!(
                    "score {m}: its statistics or threshold are not finite numbers; {again}"
                ));
            }
        }
        if let Some(k) = &self.knn {
            if k.bank.len() > MAX_BANK {
                return Err(format!(
                    "the knn bank has {} rows: expected at most {MAX_BANK}; {again}",
                    k.bank.len()
                ));
            }
            if let Some(i) = k.bank.iter().position(|r| r.len() != z) {
                return Err(format!(
                    "knn bank row {i} has {} values, expected {z}; {again}",
                    k.bank[i].len()
                ));
            }
            if k.bank.iter().flatten().any(|v| !v.is_finite()) {
                return Err(format!(
                    "the knn bank holds a number that is not finite; {again}"
                ));
            }
        }
        if let Some(p) = &self.pixel
            && (p.mean.len() != image_len || p.std.len() != image_len)
        {
            return Err(format!(
                "pixel statistics are not for this model's {image_len} input values: \
                 {} means and {} stds; {again}",
                p.mean.len(),
                p.std.len()
            ));
        }
        if self
            .combined
            .as_ref()
            .is_some_and(|c| c.len() > Method::ALL.len())
        {
            return Err(format!("the combined score has too many parts; {again}"));
        }
        if let Some(p) = &self.probes {
            if p.len() > MAX_PROFILE_PROBE_KINDS {
                return Err(format!(
                    "{} kinds of probe: expected at most {MAX_PROFILE_PROBE_KINDS}; {again}",
                    p.len()
                ));
            }
            let bad = |d: &ProbeDetection| {
                d.kind.len() > 64 || d.detected.values().any(|v| !(0.0..=1.0).contains(v))
            };
            if p.iter().any(bad) {
                return Err(format!(
                    "a probe's name is too long or its rate is not in 0 to 1; {again}"
                ));
            }
        }
        if self.warnings.len() > MAX_PROFILE_WARNINGS {
            return Err(format!(
                "{} warnings: expected at most {MAX_PROFILE_WARNINGS}; {again}",
                self.warnings.len()
            ));
        }
        Ok(())
    }
}

/// The [`Combination`] of a profile's `combined` parts.
fn combination(parts: &[CombinedPart]) -> Result<Combination> {
    Combination::new(
        parts
            .iter()
            .map(|p| Part {
                method: p.method,
                mean: p.mean as f32,
                std: p.std as f32,
                excess: p.excess,
            })
            .collect(),
    )
}

/// What the normal frames give: every score's normal values (the latent
/// distance cross-fitted, `knn` leaving each frame out), the latent
/// Gaussian and the reference that scores new frames against them.
struct FittedNormal {
    normal: BTreeMap<Method, Vec<f64>>,
    gaussian: Gaussian,
    reference: Reference,
    k: usize,
    bank: Vec<Vec<f32>>,
    parts: Vec<CombinedPart>,
}

/// Fits [`FittedNormal`] to the latent means `mus` and the per-frame
/// `pixel` scores (recon, kl, elbo) of the same frames.
fn fit_normal(mus: &[Vec<f64>], pixel: &BTreeMap<Method, Vec<f64>>) -> Result<FittedNormal> {
    let n = mus.len();
    ensure!(n >= 4, "too few frames to fit the normal data: {n}");
    let z = mus[0].len();
    let mut normal = pixel.clone();
    // Latent distance, cross-fitted on two halves.
    let (even, odd): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| i % 2 == 0);
    let fit_on = |idx: &[usize]| -> Result<Mahalanobis> {
        let rows: Vec<Vec<f64>> = idx.iter().map(|&i| mus[i].clone()).collect();
        Mahalanobis::new(&Gaussian::fit(&rows)?)
    };
    let (m_even, m_odd) = (fit_on(&even)?, fit_on(&odd)?);
    let mut scratch = vec![0.0f32; z];
    let as_f32 = |r: &[f64]| -> Vec<f32> { r.iter().map(|&v| v as f32).collect() };
    let mut latent = vec![0.0; n];
    for (i, v) in latent.iter_mut().enumerate() {
        let m = if i % 2 == 0 { &m_odd } else { &m_even };
        *v = m.distance(&as_f32(&mus[i]), &mut scratch) as f64;
    }
    normal.insert(Method::Latent, latent);
    let gaussian = Gaussian::fit(mus)?;
    let full = Mahalanobis::new(&gaussian)?;

    // Nearest normal latents: a bank spread evenly over the frames; a
    // frame in the bank is scored without itself.
    let step = n.div_ceil(MAX_BANK);
    let bank: Vec<Vec<f32>> = mus.iter().step_by(step).map(|r| as_f32(r)).collect();
    let k = KNN_K.min(bank.len() - 1);
    let mut nn = NearestNormal::new(&bank, k, &full)?;
    let mut knn = vec![0.0; n];
    for (i, v) in knn.iter_mut().enumerate() {
        let skip = i.is_multiple_of(step).then_some(i / step);
        *v = nn.distance(&as_f32(&mus[i]), &full, skip) as f64;
    }
    normal.insert(Method::Knn, knn);

    // The combined score, standardised on the normal frames' scores.
    let mut parts = vec![];
    for (m, excess) in COMBINED_PARTS {
        let values = normal
            .get(&m)
            .with_context(|| format!("no normal {m} scores to combine"))?;
        let sum = Summary::of(values)?;
        let std = if sum.std > 0.0 { sum.std } else { 1.0 };
        parts.push(CombinedPart {
            method: m,
            mean: sum.mean,
            std,
            excess,
        });
    }
    let combination = combination(&parts)?;
    let combined: Vec<f64> = (0..n)
        .map(|i| {
            combination
                .value(|m| normal.get(&m).map(|v| v[i] as f32))
                .map_or(f64::NAN, f64::from)
        })
        .collect();
    normal.insert(Method::Combined, combined);
    Ok(FittedNormal {
        normal,
        gaussian,
        reference: Reference::new(full, Some(nn), None, Some(combination)),
        k,
        bank,
        parts,
    })
}

/// The (1 − fpr) quantile of each score's normal values.
fn thresholds_of(normal: &BTreeMap<Method, Vec<f64>>, fpr: f64) -> BTreeMap<Method, f64> {
    let mut thresholds = BTreeMap::new();
    for (m, v) in normal {
        let mut s = v.clone();
        s.sort_by(f64::total_cmp);
        thresholds.insert(*m, quantile_sorted(&s, 1.0 - fpr));
    }
    thresholds
}

/// Contiguous parts of the frames (in the order given, which for a
/// recording is time) that the held-out check leaves out in turn.
pub const HELD_OUT_FOLDS: usize = 4;

/// The held-out part of frame `i` of `n`.
fn fold_of(i: usize, n: usize) -> usize {
    (i * HELD_OUT_FOLDS / n.max(1)).min(HELD_OUT_FOLDS - 1)
}

/// Whether thresholds hold on normal frames they were not fitted on, from
/// another stretch of time: the frames (in the order given, which for a
/// recording is time) are cut into [`HELD_OUT_FOLDS`] contiguous parts,
/// everything is fitted on all parts but one, and each score's
/// false-positive rate is measured on the part left out; the rates are
/// pooled over the parts (blocked cross-validation, as for time series:
/// Bergmeir & Benítez 2012, "On the use of cross-validation for time
/// series predictor evaluation", Information Sciences 191). A score whose
/// normal range drifts (as the latent distances do when the scene slowly
/// changes) flags far more than `fpr` on a stretch it did not see.
///
/// `scores` holds `recon`, `kl` and `elbo` per frame; `pixel_without[f]`
/// every frame's `pixel` score by the residual statistics of all parts
/// but `f`. (Until this version the check fitted on the earlier half and
/// measured on the later: half the recording is a poor model of the
/// whole, and on the photos scene it refused `recon` and `pixel`, whose
/// thresholds fitted on all frames held on 7,000 later ones, for `kl`.)
fn held_out_fpr(
    mus: &[Vec<f64>],
    scores: &BTreeMap<Method, Vec<f64>>,
    pixel_without: &[Vec<f64>],
    fpr: f64,
) -> Result<BTreeMap<Method, f64>> {
    let n = mus.len();
    let mut flagged: BTreeMap<Method, usize> = BTreeMap::new();
    let mut methods = vec![];
    for (f, pixel) in pixel_without.iter().enumerate() {
        let fit: Vec<usize> = (0..n).filter(|&i| fold_of(i, n) != f).collect();
        let pick = |v: &[f64]| -> Vec<f64> { fit.iter().map(|&i| v[i]).collect() };
        let mut fit_scores: BTreeMap<Method, Vec<f64>> =
            scores.iter().map(|(m, v)| (*m, pick(v))).collect();
        fit_scores.insert(Method::Pixel, pick(pixel));
        let fit_mus: Vec<Vec<f64>> = fit.iter().map(|&i| mus[i].clone()).collect();
        let mut fitted = fit_normal(&fit_mus, &fit_scores)?;
        let thresholds = thresholds_of(&fitted.normal, fpr);
        methods = thresholds.keys().copied().collect();
        let at = |m: Method, i: usize| scores.get(&m).map(|v| v[i] as f32);
        for i in (0..n).filter(|&i| fold_of(i, n) == f) {
            let mu: Vec<f32> = mus[i].iter().map(|&v| v as f32).collect();
            let mut s = Scores {
                recon: at(Method::Recon, i),
                kl: at(Method::Kl, i).unwrap_or(0.0),
                elbo: at(Method::Elbo, i),
                pixel: Some(pixel[i] as f32),
                ..Scores::default()
            };
            fitted.reference.score(&[], &mu, None, &mut s);
            for (m, &t) in &thresholds {
                if s.get(*m).is_some_and(|v| v as f64 > t) {
                    *flagged.entry(*m).or_default() += 1;
                }
            }
        }
    }
    let tested = n.max(1) as f64;
    Ok(methods
        .into_iter()
        .map(|m| (m, *flagged.get(&m).unwrap_or(&0) as f64 / tested))
        .collect())
}

/// The order in which scores are preferred when the combined score's
/// threshold does not hold on held-out frames: the first whose threshold
/// holds, roughly from the most to the least sensitive (`kl` flagged 1% of
/// the probes on the photos scene, `recon` 54%); when none holds, the
/// lowest held-out false-positive rate, ties to the earlier.
const FALLBACK_ORDER: [Method; 6] = [
    Method::Recon,
    Method::Pixel,
    Method::Knn,
    Method::Latent,
    Method::Kl,
    Method::Elbo,
];

/// The default score and why: `combined`, unless its threshold flags more
/// than twice the target rate, plus two standard errors, on the held-out
/// normal frames ([`held_out_fpr`]); then the first of [`FALLBACK_ORDER`]
/// whose threshold holds there, or the one that comes closest. The error
/// counts both sides: the rate is measured on `tested` frames, and the
/// threshold it is measured at was itself estimated from `fitted` frames.
/// (Counting only the tested frames refused `combined` on one of 20
/// one-class Fashion-MNIST calibrations, i.i.d. images with no drift, at a
/// later rate of 3.0% for a 1% target; the 20 ranged from 0.4 to 3.0%, mean
/// 1.3%.)
fn choose_default(
    held_out: &BTreeMap<Method, f64>,
    fpr: f64,
    fitted: usize,
    tested: usize,
    probed: &str,
) -> (Method, String) {
    let halves = 1.0 / fitted.max(1) as f64 + 1.0 / tested.max(1) as f64;
    let allowed = 2.0 * fpr + 2.0 * (fpr * (1.0 - fpr) * halves).sqrt();
    let rate = |m: &Method| held_out.get(m).copied().unwrap_or(f64::INFINITY);
    let names: Vec<String> = COMBINED_PARTS
        .iter()
        .map(|(m, excess)| match excess {
            true => format!("{m} beyond 3σ"),
            false => m.name().to_string(),
        })
        .collect();
    let rates: Vec<String> = Method::ALL
        .iter()
        .map(|m| format!("{m} {:.2}%", 100.0 * rate(m)))
        .collect();
    let held = format!(
        "false-positive rates on the {tested} normal frames, each quarter (in time order) with \
         thresholds fitted on the other three (target {:.2}%, allowed {:.2}%): {}",
        100.0 * fpr,
        100.0 * allowed,
        rates.join(", ")
    );
    if rate(&Method::Combined) <= allowed {
        return (
            Method::Combined,
            format!(
                "the default: {} standardised on the normal frames and summed, whose threshold \
                 holds on held-out frames; {held}; {probed}",
                names.join(", ")
            ),
        );
    }
    if let Some(m) = FALLBACK_ORDER.into_iter().find(|m| rate(m) <= allowed) {
        return (
            m,
            format!(
                "the combined score's threshold does not hold on held-out frames, {m}'s does \
                 (the first that holds of {}); {held}; {probed}",
                FALLBACK_ORDER.map(|m| m.name()).join(", ")
            ),
        );
    }
    let mut best = FALLBACK_ORDER[0];
    for m in FALLBACK_ORDER {
        if rate(&m) < rate(&best) {
            best = m;
        }
    }
    (
        best,
        format!(
            "no score's threshold holds on held-out frames (the normal frames drift; calibrate \
             on frames spread over a longer time), {best}'s comes closest; {held}; {probed}"
        ),
    )
}

/// Options of [`calibrate`].
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// Target false-positive rate in (0, 0.5].
    pub fpr: f64,
    /// Frame fitting mode.
    pub fit: Fit,
    /// Force the default method instead of choosing it.
    pub method: Option<Method>,
    /// Seed of the synthetic anomalies.
    pub seed: u64,
    /// Score the frame as this grid of tiles, each with its own
    /// calibration (a model trained on tiles).
    pub tiles: Option<Grid>,
    /// Leave these regions of the frame out of every score.
    pub mask: Option<Mask>,
    /// The sensor-noise check's factor over the noisiest normal frame
    /// ([`NoiseCalibration`]); 0 leaves the check out.
    pub noise_factor: f64,
}

/// What part of each frame one calibration fits.
#[derive(Debug, Clone, Copy)]
enum View {
    /// The whole frame.
    Whole,
    /// One tile of the grid.
    Tile(Grid, usize),
    /// Every tile in turn: frame *i* contributes tile *i* mod the tile
    /// count (the shared statistics of a tiled profile).
    Pooled(Grid),
}

impl View {
    fn pipeline(
        self,
        model: &Model,
        opts: &CalibrateOptions,
        reference: Option<Reference>,
    ) -> Result<Pipeline> {
        let fit = opts.fit;
        let mut p = match self {
            View::Whole => Pipeline::new(model, PlanKind::Full, fit, reference)?,
            View::Tile(g, _) | View::Pooled(g) => {
                Pipeline::tile_view(model, PlanKind::Full, fit, reference, g)?
            }
        };
        p.set_mask(opts.mask.clone());
        p.measure_noise(opts.noise_factor > 0.0);
        Ok(p)
    }

    /// The tile frame `i` shows (0 for a whole frame).
    fn tile(self, i: usize) -> usize {
        match self {
            View::Whole => 0,
            View::Tile(_, t) => t,
            View::Pooled(g) => i % g.count(),
        }
    }

    /// Loads frame `i` of `files` and points `pipe` at its part.
    fn load(self, files: &[PathBuf], i: usize, pipe: &mut Pipeline) -> Result<Frame> {
        pipe.set_tile(self.tile(i));
        crate::imageio::load_image(&files[i])
    }

    /// Applies a probe to the part of `frame` (frame `i`) this view sees.
    #[allow(clippy::too_many_arguments)]
    fn probe(
        self,
        frame: &mut Frame,
        donor: &Frame,
        kind: ProbeKind,
        rng: &mut SplitMix64,
        fit: Fit,
        spec: &ModelSpec,
        i: usize,
    ) {
        match self {
            View::Whole => probe::apply(frame, donor.as_ref(), kind, rng),
            View::Tile(g, _) | View::Pooled(g) => {
                let rect = g.frame_rect(fit, frame.width, frame.height, spec, self.tile(i));
                probe::apply_in(frame, donor, kind, rng, rect);
            }
        }
    }
}

/// Calibrates `model` on the normal images `files`. `progress` is called
/// after each image with (done, total).
///
/// With `opts.tiles`, each tile of the grid gets its own calibration (one
/// pass over the files per tile, plus one for the statistics shared by
/// every tile), all with one deciding score; each tile's thresholds are
/// then raised together so that the frame, flagged when any tile is, keeps
/// the target rate ([`TileCalibration::frame_factor`]).
pub fn calibrate(
    model: &Model,
    files: &[PathBuf],
    opts: &CalibrateOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Profile> {
    ensure!(
        opts.fpr > 0.0 && opts.fpr <= 0.5,
        "--fpr must be in (0, 0.5], found {} (0.01 means one false alarm per 100 normal frames)",
        opts.fpr
    );
    ensure!(
        opts.noise_factor.is_finite() && opts.noise_factor >= 0.0,
        "--noise-factor must be 0 (no noise check) or a positive number, found {}",
        opts.noise_factor
    );
    let n = files.len();
    if n < MIN_FRAMES {
        bail!("calibration needs at least {MIN_FRAMES} normal images, found {n}");
    }
    let Some(grid) = opts.tiles else {
        return Ok(calibrate_view(model, files, opts, View::Whole, &mut progress)?.0);
    };
    let views = grid.count() + 1;
    let step = std::cell::Cell::new(0);
    let mut report = |done: usize, total: usize| progress(step.get() * total + done, views * total);
    let (mut shared, _) = calibrate_view(model, files, opts, View::Pooled(grid), &mut report)?;
    let method = opts.method.unwrap_or(shared.method);
    // the frame's noise is checked once, by the shared profile
    let forced = CalibrateOptions {
        method: Some(method),
        noise_factor: 0.0,
        ..opts.clone()
    };
    let mut tiles = Vec::with_capacity(grid.count());
    let mut normals = Vec::with_capacity(grid.count());
    for t in 0..grid.count() {
        step.set(t + 1);
        let (mut p, normal) =
            calibrate_view(model, files, &forced, View::Tile(grid, t), &mut report)
                .with_context(|| format!("calibrating tile {t}"))?;
        let (c, r) = grid.cell(t);
        p.method_reason = format!(
            "the deciding score of every tile (column {c}, row {r} of {grid}): {}",
            if opts.method.is_some() {
                "chosen by the user (--method)".to_string()
            } else {
                format!("chosen on all tiles: {}", shared.method_reason)
            }
        );
        tiles.push(p);
        normals.push(normal);
    }
    // A frame is flagged when any tile is: raise every tile's threshold of
    // a score by the factor that brings the largest ratio over the tiles
    // back to the target rate on the normal frames.
    let mut frame_factor = BTreeMap::new();
    for m in Method::ALL {
        if !normals.iter().all(|nm| nm.contains_key(&m)) {
            continue;
        }
        let mut worst: Vec<f64> = (0..n)
            .map(|i| {
                tiles
                    .iter()
                    .zip(&normals)
                    .map(|(p, nm)| nm[&m][i] / p.scores[&m].threshold)
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        worst.sort_by(f64::total_cmp);
        let factor = quantile_sorted(&worst, 1.0 - opts.fpr).max(1.0);
        if !factor.is_finite() {
            continue;
        }
        for p in &mut tiles {
            if let Some(sc) = p.scores.get_mut(&m) {
                sc.threshold *= factor;
            }
            if p.method == m {
                p.threshold *= factor;
            }
        }
        frame_factor.insert(m, factor);
    }
    shared.method = method;
    shared.threshold = shared.scores[&method].threshold;
    shared.method_reason = match opts.method {
        Some(_) => format!("chosen by the user (--method), for every tile of {grid}"),
        None => format!("for every tile of {grid}: {}", shared.method_reason),
    };
    shared.tiles = Some(TileCalibration {
        grid,
        frame_factor,
        tiles,
    });
    Ok(shared)
}

/// Calibrates the part `view` of each frame; also returns every score's
/// value on each normal frame, in the order of `files`.
fn calibrate_view(
    model: &Model,
    files: &[PathBuf],
    opts: &CalibrateOptions,
    view: View,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Profile, BTreeMap<Method, Vec<f64>>)> {
    let n = files.len();
    let spec = model.spec().clone();
    let z = spec.latent_dim;
    let mut pipe = view.pipeline(model, opts, None)?;
    let total = 2 * n + n.min(MAX_PROBES);
    let mut all = Residuals::new(spec.image_len());
    let mut folds = vec![Residuals::new(spec.image_len()); HELD_OUT_FOLDS];
    let mut pixel_scores: BTreeMap<Method, Vec<f64>> = BTreeMap::new();
    let mut mus: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut sigmas: Vec<f64> = Vec::with_capacity(n);
    let probe_every = n.div_ceil(n.min(MAX_PROBES));
    let mut probes: Vec<usize> = vec![];
    for (i, f) in files.iter().enumerate() {
        let frame = view.load(files, i, &mut pipe)?;
        let s = pipe
            .process(frame.as_ref())
            .with_context(|| format!("scoring {}", f.display()))?;
        for m in [Method::Recon, Method::Kl, Method::Elbo] {
            let v = s.get(m).context("full plan produced no reconstruction")?;
            pixel_scores.entry(m).or_default().push(v as f64);
        }
        mus.push(pipe.mu()?.iter().map(|&v| v as f64).collect());
        sigmas.extend(s.noise.map(f64::from));
        let (x, r) = (
            pipe.input()?,
            pipe.recon()?
                .context("full plan produced no reconstruction")?,
        );
        all.add(x, r);
        folds[fold_of(i, n)].add(x, r);
        if i % probe_every == 0 {
            probes.push(i);
        }
        progress(i + 1, total);
    }

    // The pixel score of every frame: by the statistics of all frames, and
    // by those of all frames but each fold's (for the held-out check),
    // which needs every reconstruction again.
    let pixel_cal = all.calibration();
    let by_all = pixel_cal.normal()?;
    let by_others = folds
        .iter()
        .map(|f| all.without(f).calibration().normal())
        .collect::<Result<Vec<_>>>()?;
    let mut px_all = Vec::with_capacity(n);
    let mut px_others: Vec<Vec<f64>> = (0..HELD_OUT_FOLDS).map(|_| Vec::with_capacity(n)).collect();
    for (i, f) in files.iter().enumerate() {
        let frame = view.load(files, i, &mut pipe)?;
        pipe.process(frame.as_ref())
            .with_context(|| format!("scoring {}", f.display()))?;
        let (x, r) = (
            pipe.input()?,
            pipe.recon()?
                .context("full plan produced no reconstruction")?,
        );
        px_all.push(by_all.score(x, r) as f64);
        for (px, by) in px_others.iter_mut().zip(&by_others) {
            px.push(by.score(x, r) as f64);
        }
        progress(n + i + 1, total);
    }
    let held_out = held_out_fpr(&mus, &pixel_scores, &px_others, opts.fpr)?;
    pixel_scores.insert(Method::Pixel, px_all);

    let fitted = fit_normal(&mus, &pixel_scores)?;
    let FittedNormal {
        normal,
        gaussian,
        mut reference,
        k,
        bank,
        parts,
    } = fitted;
    reference.pixel = Some(by_all);
    let thresholds = thresholds_of(&normal, opts.fpr);
    let noise = match sigmas.len() {
        0 => None,
        _ => Some(NoiseCalibration::new(&sigmas, opts.noise_factor)?),
    };

    // Synthetic anomalies, made on the camera frame before preprocessing;
    // a CutPaste probe takes its patch from the previous probe's frame.
    let mut rng = SplitMix64::new(opts.seed);
    let kinds = ProbeKind::ALL.len();
    let mut detected = vec![BTreeMap::<Method, usize>::new(); kinds];
    let mut counts = vec![0usize; kinds];
    let mut noisy = vec![0usize; kinds];
    let mut pipe = view.pipeline(model, opts, Some(reference))?;
    let mut donor = crate::imageio::load_image(&files[probes[probes.len() - 1]])?;
    for (k, &i) in probes.iter().enumerate() {
        let normal = view.load(files, i, &mut pipe)?;
        let mut frame = normal.clone();
        let kind = k % kinds;
        view.probe(
            &mut frame,
            &donor,
            ProbeKind::ALL[kind],
            &mut rng,
            opts.fit,
            &spec,
            i,
        );
        donor = normal;
        let s = pipe
            .process(frame.as_ref())
            .with_context(|| format!("scoring a probe made of {}", files[i].display()))?;
        counts[kind] += 1;
        if let (Some(sigma), Some(n)) = (s.noise, &noise) {
            noisy[kind] += (sigma as f64 > n.threshold) as usize;
        }
        for m in Method::ALL {
            if let (Some(v), Some(t)) = (s.get(m), thresholds.get(&m))
                && v as f64 > *t
            {
                *detected[kind].entry(m).or_default() += 1;
            }
        }
        progress(2 * n + k + 1, total);
    }
    let n_probes = probes.len().max(1) as f64;
    let flagged = |m: Method| -> usize { detected.iter().filter_map(|d| d.get(&m)).sum() };
    let mut scores = BTreeMap::new();
    for (m, v) in &normal {
        scores.insert(
            *m,
            ScoreCalibration {
                normal: Summary::of(v)?,
                threshold: thresholds[m],
                synthetic_detection: flagged(*m) as f64 / n_probes,
                held_out_fpr: held_out.get(m).copied(),
            },
        );
    }
    let probe_rates: Vec<ProbeDetection> = ProbeKind::ALL
        .iter()
        .zip(&counts)
        .zip(&detected)
        .zip(&noisy)
        .filter(|(((_, c), _), _)| **c > 0)
        .map(|(((kind, &count), d), &noisy)| ProbeDetection {
            kind: kind.name().to_string(),
            count,
            detected: Method::ALL
                .iter()
                .filter(|m| normal.contains_key(m))
                .map(|&m| (m, *d.get(&m).unwrap_or(&0) as f64 / count as f64))
                .collect(),
            noise_check: noise.as_ref().map(|_| noisy as f64 / count as f64),
        })
        .collect();
    let table: Vec<String> = Method::ALL
        .iter()
        .map(|m| format!("{m} {:.1}%", 100.0 * scores[m].synthetic_detection))
        .collect();
    let names: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
    let probed = format!(
        "synthetic anomalies made on the camera frame, flagged at the calibrated thresholds \
         ({} probes: {}): {}",
        probes.len(),
        names.join(", "),
        table.join(", ")
    );
    let (method, method_reason) = match opts.method {
        Some(m) => (m, format!("chosen by the user (--method); {probed}")),
        None => choose_default(&held_out, opts.fpr, n - n / HELD_OUT_FOLDS, n, &probed),
    };
    let mut warnings = vec![];
    let needed = (10.0 / opts.fpr).ceil() as usize;
    if n < needed {
        warnings.push(format!(
            "{n} normal frames give a coarse threshold for fpr {}: about {needed} or more are recommended",
            opts.fpr
        ));
    }
    let col = |i: usize| -> Vec<f64> {
        let mut v: Vec<f64> = mus.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let cols: Vec<Vec<f64>> = (0..z).map(col).collect();
    let latent = LatentCalibration {
        std: gaussian.std(),
        p01: cols.iter().map(|c| quantile_sorted(c, 0.01)).collect(),
        p99: cols.iter().map(|c| quantile_sorted(c, 0.99)).collect(),
        gaussian,
    };
    let profile = Profile {
        format: PROFILE_FORMAT,
        model_sha256: model.sha256().to_string(),
        model_file: model
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        frames: n,
        fit: opts.fit,
        fpr: opts.fpr,
        method,
        threshold: scores[&method].threshold,
        method_reason,
        scores,
        latent,
        knn: Some(KnnCalibration { k, bank }),
        combined: Some(parts),
        pixel: Some(pixel_cal),
        probes: Some(probe_rates),
        warnings,
        tiles: None,
        mask: opts.mask.clone(),
        noise,
    };
    Ok((profile, normal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_threshold_is_a_factor_over_the_noisiest_normal_frame_with_a_floor() {
        let n = NoiseCalibration::new(&[0.010, 0.012, 0.011], 2.0).unwrap();
        assert!((n.threshold - 0.024).abs() < 1e-12, "{}", n.threshold);
        assert_eq!(n.normal.count, 3);
        // frames without measurable noise: the floor
        let quiet = NoiseCalibration::new(&[0.0, 0.001], 2.0).unwrap();
        assert_eq!(quiet.threshold, MIN_NOISE_THRESHOLD);
        assert!(NoiseCalibration::new(&[0.01], 0.0).is_err());
        assert!(NoiseCalibration::new(&[0.01], f64::NAN).is_err());
        assert!(NoiseCalibration::new(&[], 2.0).is_err());
        assert!(NoiseCalibration::new(&[f64::INFINITY], 2.0).is_err());
    }

    #[test]
    fn the_combined_score_is_the_default_while_its_threshold_holds_later() {
        let rates = |combined: f64, recon: f64, knn: f64| -> BTreeMap<Method, f64> {
            Method::ALL
                .iter()
                .map(|&m| {
                    let r = match m {
                        Method::Combined => combined,
                        Method::Recon | Method::Elbo => recon,
                        Method::Knn => knn,
                        _ => 0.05,
                    };
                    (m, r)
                })
                .collect()
        };
        // fitted on 1000 frames, tested on 1000, at fpr 0.01: allowed
        // 2% + 2 × √(0.0099 × 2/1000) = 2.89%
        let (m, why) = choose_default(&rates(0.025, 0.01, 0.01), 0.01, 1000, 1000, "probes");
        assert_eq!(m, Method::Combined, "{why}");
        assert!(
            why.contains("allowed 2.89%") && why.ends_with("probes"),
            "{why}"
        );
        let (m, why) = choose_default(&rates(0.03, 0.012, 0.02), 0.01, 1000, 1000, "");
        assert_eq!(m, Method::Recon, "{why}");
        assert!(why.contains("does not hold"), "{why}");
        // a score that holds is preferred to one with a lower rate later in
        // the order; when none holds, the lowest rate
        let (m, _) = choose_default(&rates(0.5, 0.02, 0.01), 0.01, 1000, 1000, "");
        assert_eq!(m, Method::Recon);
        let (m, why) = choose_default(&rates(0.5, 0.5, 0.5), 0.01, 1000, 1000, "");
        assert_eq!(m, Method::Pixel, "{why}");
        assert!(why.contains("no score's threshold holds"), "{why}");
        // ties go to the earlier score of the fallback order
        let (m, _) = choose_default(&rates(0.5, 0.02, 0.02), 0.01, 1000, 1000, "");
        assert_eq!(m, Method::Recon);
        let (m, _) = choose_default(&rates(0.5, 0.03, 0.02), 0.01, 1000, 1000, "");
        assert_eq!(m, Method::Knn);
    }
}
