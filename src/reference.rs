//! What a calibration profile knows of normal data, in the form the scorer
//! evaluates per frame: the Mahalanobis distance of the latent means, the
//! distance to the nearest normal latents (`knn`), the per-pixel residual
//! statistics (`pixel`), and the combination of scores standardised on
//! normal data (`combined`). Evaluation allocates nothing.

use anyhow::{Result, ensure};

use crate::score::{Method, Scores};
use crate::stats::Mahalanobis;

/// Nearest neighbours whose distances `knn` averages.
pub const KNN_K: usize = 5;
/// Most normal latent means a profile keeps for `knn`.
pub const MAX_BANK: usize = 4096;

/// Mean Euclidean distance from a latent mean to its `k` nearest normal
/// latent means, both whitened by the normal Gaussian (so that every
/// direction of normal variation counts alike).
#[derive(Debug, Clone)]
pub struct NearestNormal {
    /// Whitened bank, `rows × dim`, row-major.
    bank: Vec<f32>,
    dim: usize,
    k: usize,
    /// The whitened query.
    query: Vec<f32>,
    /// The `k` smallest squared distances so far, ascending.
    best: Vec<f32>,
}

impl NearestNormal {
    /// Whitens `rows` (each `dim` long) with `whiten`; `k` neighbours.
    pub fn new(rows: &[Vec<f32>], k: usize, whiten: &Mahalanobis) -> Result<NearestNormal> {
        let dim = whiten.dim();
        ensure!(
            (1..=rows.len()).contains(&k),
            "knn needs 1 to {} neighbours (the bank's size), found {k}",
            rows.len()
        );
        ensure!(
            rows.len() <= MAX_BANK,
            "the knn bank holds {} latent means, at most {MAX_BANK} are allowed",
            rows.len()
        );
        let mut bank = vec![0.0f32; rows.len() * dim];
        for (row, out) in rows.iter().zip(bank.chunks_exact_mut(dim.max(1))) {
            ensure!(
                row.len() == dim,
                "a knn bank row has {} values, the model has {dim} latents",
                row.len()
            );
            whiten.whiten(row, out);
        }
        Ok(NearestNormal {
            bank,
            dim,
            k,
            query: vec![0.0; dim],
            best: Vec::with_capacity(k + 1),
        })
    }

    /// Rows in the bank.
    pub fn len(&self) -> usize {
        self.bank.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Whether the bank is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The score of latent mean `mu`, leaving bank row `skip` out (the
    /// calibration frames score themselves against the others).
    pub fn distance(&mut self, mu: &[f32], whiten: &Mahalanobis, skip: Option<usize>) -> f32 {
        let mut query = std::mem::take(&mut self.query);
        whiten.whiten(mu, &mut query);
        let d = self.distance_whitened(&query, skip);
        self.query = query;
        d
    }

    /// [`NearestNormal::distance`] of a latent mean already whitened by the
    /// bank's Gaussian (as [`Mahalanobis::distance`] leaves it in its
    /// scratch).
    pub fn distance_whitened(&mut self, query: &[f32], skip: Option<usize>) -> f32 {
        self.best.clear();
        let k = self.k;
        for (i, row) in self.bank.chunks_exact(self.dim.max(1)).enumerate() {
            if Some(i) == skip {
                continue;
            }
            let d: f32 = row.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum();
            if self.best.len() == k && d >= self.best[k - 1] {
                continue;
            }
            let at = self.best.partition_point(|&b| b <= d);
            if self.best.len() == k {
                self.best.pop();
            }
            self.best.insert(at, d);
        }
        if self.best.is_empty() {
            return 0.0;
        }
        self.best.iter().map(|d| d.sqrt()).sum::<f32>() / self.best.len() as f32
    }
}

/// Smallest floor of the per-pixel residual standard deviation, in units
/// of the model's [0, 1] input. Calibration floors each pixel's std at the
/// mean std over the image (see [`PixelNormal`]), and never below this.
pub const MIN_PIXEL_STD_FLOOR: f32 = 1e-3;

/// The normal residual `x − recon` of every input value (channel, row,
/// column) over normal frames: the `pixel` score is the mean of
/// `((x − recon − mean) / max(std, floor))²` over the image, about 1 on a
/// normal frame. Without a floor, a pixel that is always black in normal
/// frames (std ≈ 0) would make any speck there dominate the score.
/// Calibration sets the floor to the mean std over the image, so it scales
/// with the data rather than assuming a noise level: on one-class
/// Fashion-MNIST a fixed floor of 0.1 and the mean std did as well
/// (validation AUROC 93.9 for either in the combined score), and the
/// synthetic scene's residuals vary about four times less (mean std
/// 0.028). A pixel score tells where a frame differs from its
/// reconstruction *more than normal frames do there*: parts of the scene
/// the model always reconstructs poorly (fine texture) count less, and
/// parts it reconstructs well count more.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelNormal {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl PixelNormal {
    /// Statistics of `mean.len()` input values; each `std` is floored at
    /// `floor` (> 0).
    pub fn new(mean: &[f32], std: &[f32], floor: f32) -> Result<PixelNormal> {
        ensure!(
            mean.len() == std.len() && !mean.is_empty(),
            "pixel statistics need one mean and one std per input value, found {} and {}",
            mean.len(),
            std.len()
        );
        ensure!(
            floor.is_finite() && floor > 0.0,
            "the pixel std floor must be a positive number, found {floor}"
        );
        ensure!(
            mean.iter().chain(std).all(|v| v.is_finite()) && std.iter().all(|&s| s >= 0.0),
            "pixel statistics must be finite numbers, with every std ≥ 0"
        );
        Ok(PixelNormal {
            mean: mean.to_vec(),
            inv_std: std.iter().map(|&s| 1.0 / s.max(floor)).collect(),
        })
    }

    /// Input values covered (C·H·W).
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// Whether it covers no value (never, once built).
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// The `pixel` score of input `x` and its reconstruction `r` (both
    /// [`PixelNormal::len`] long; extra values are ignored).
    pub fn score(&self, x: &[f32], r: &[f32]) -> f32 {
        let n = self.mean.len().min(x.len()).min(r.len());
        let mut sum = 0.0f32;
        for i in 0..n {
            let z = (x[i] - r[i] - self.mean[i]) * self.inv_std[i];
            sum += z * z;
        }
        sum / n.max(1) as f32
    }
}

/// One standardised part of the combined score: `(value − mean) / std` of
/// that score on normal frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    /// The score.
    pub method: Method,
    /// Its mean on normal frames.
    pub mean: f32,
    /// Its standard deviation on normal frames (> 0).
    pub std: f32,
    /// Whether the part counts only its excess over [`FLOOR_SIGMAS`] above
    /// its normal mean (`max(z − 3, 0)`), not its whole standardised value.
    pub excess: bool,
}

/// How far below its normal mean a part may count, in standard deviations:
/// the combined score adds `max(z, −FLOOR_SIGMAS) + FLOOR_SIGMAS` per part,
/// so it is never negative (0 when every part is far below normal) and a
/// threshold is a positive number that `score / threshold` can be read
/// against, as for every other score.
pub const FLOOR_SIGMAS: f32 = 3.0;

/// The combined score: the sum of its standardised parts, each floored at
/// [`FLOOR_SIGMAS`] below its normal mean and shifted up by as much; an
/// `excess` part adds only how far it is above [`FLOOR_SIGMAS`] over its
/// normal mean (nothing on a typical normal frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    parts: Vec<Part>,
}

impl Combination {
    /// A combination of `parts`, none of them `combined` itself.
    pub fn new(parts: Vec<Part>) -> Result<Combination> {
        ensure!(!parts.is_empty(), "the combined score has no parts");
        for p in &parts {
            ensure!(
                p.method != Method::Combined,
                "the combined score cannot be a part of itself"
            );
            ensure!(
                p.mean.is_finite() && p.std.is_finite() && p.std > 0.0,
                "combined part {}: mean {} and std {} must be finite, std > 0",
                p.method,
                p.mean,
                p.std
            );
        }
        Ok(Combination { parts })
    }

    /// The parts.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether a part needs the reconstruction.
    pub fn needs_recon(&self) -> bool {
        self.parts.iter().any(|p| p.method.needs_recon())
    }

    /// The sum of floored, standardised parts, from the value each part
    /// had (`None` when one was not computed).
    pub fn value(&self, get: impl Fn(Method) -> Option<f32>) -> Option<f32> {
        let mut sum = 0.0;
        for p in &self.parts {
            let z = (get(p.method)? - p.mean) / p.std;
            sum += if p.excess {
                (z - FLOOR_SIGMAS).max(0.0)
            } else {
                z.max(-FLOOR_SIGMAS) + FLOOR_SIGMAS
            };
        }
        Some(sum)
    }
}

/// The normal data a scorer compares frames with.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The Gaussian of the normal latent means.
    pub mahalanobis: Mahalanobis,
    /// The nearest normal latents, when the profile has a bank.
    pub knn: Option<NearestNormal>,
    /// The per-pixel residual statistics, when the profile has them.
    pub pixel: Option<PixelNormal>,
    /// The combined score, when the profile defines one.
    pub combined: Option<Combination>,
    /// The whitened latent mean of the last frame, shared by `latent` and
    /// `knn`.
    whitened: Vec<f32>,
}

impl Reference {
    /// A reference of these parts.
    pub fn new(
        mahalanobis: Mahalanobis,
        knn: Option<NearestNormal>,
        pixel: Option<PixelNormal>,
        combined: Option<Combination>,
    ) -> Reference {
        let whitened = vec![0.0; mahalanobis.dim()];
        Reference {
            mahalanobis,
            knn,
            pixel,
            combined,
            whitened,
        }
    }

    /// Fills the scores that compare with normal data (`latent`, `knn`,
    /// `pixel`, `combined`) into `s`, whose other scores are already
    /// computed, for input `x` with latent mean `mu` and reconstruction
    /// `recon`. The latent mean is whitened once for both distances.
    /// Without a reconstruction (or pixel statistics) `s.pixel` is left as
    /// it is.
    pub fn score(&mut self, x: &[f32], mu: &[f32], recon: Option<&[f32]>, s: &mut Scores) {
        if let (Some(p), Some(r)) = (&self.pixel, recon) {
            s.pixel = Some(p.score(x, r));
        }
        s.latent = Some(self.mahalanobis.distance(mu, &mut self.whitened));
        s.knn = self
            .knn
            .as_mut()
            .map(|k| k.distance_whitened(&self.whitened, None));
        s.combined = self.combined.as_ref().and_then(|c| c.value(|m| s.get(m)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Gaussian;

    fn identity(dim: usize) -> Mahalanobis {
        let mut cov = vec![0.0; dim * dim];
        for i in 0..dim {
            cov[i * dim + i] = 1.0;
        }
        let g = Gaussian {
            mean: vec![0.0; dim],
            cov,
            shrinkage: 0.0,
        };
        Mahalanobis::new(&g).unwrap()
    }

    #[test]
    fn knn_averages_the_k_nearest_and_can_leave_one_out() {
        let w = identity(2);
        let rows: Vec<Vec<f32>> = [0.0f32, 1.0, 2.0, 3.0, 10.0]
            .iter()
            .map(|&x| vec![x, 0.0])
            .collect();
        let mut nn = NearestNormal::new(&rows, 2, &w).unwrap();
        assert_eq!(nn.len(), 5);
        // from 1.2: 1.0 (0.2) and 2.0 (0.8)
        assert!((nn.distance(&[1.2, 0.0], &w, None) - 0.5).abs() < 1e-6);
        // leaving row 1 (x = 1) out: 2.0 (0.8) and 0.0 (1.2)
        assert!((nn.distance(&[1.2, 0.0], &w, Some(1)) - 1.0).abs() < 1e-6);
        // far away: 3 and 10 are the nearest of 20's
        assert!((nn.distance(&[20.0, 0.0], &w, None) - 13.5).abs() < 1e-5);
        // a brute-force check on a bigger bank
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| vec![(i * 37 % 11) as f32, (i * 13 % 7) as f32])
            .collect();
        let mut nn = NearestNormal::new(&rows, KNN_K, &w).unwrap();
        let q = [4.3f32, 2.2];
        let mut d: Vec<f32> = rows
            .iter()
            .map(|r| ((r[0] - q[0]).powi(2) + (r[1] - q[1]).powi(2)).sqrt())
            .collect();
        d.sort_by(f32::total_cmp);
        let want = d[..KNN_K].iter().sum::<f32>() / KNN_K as f32;
        assert!((nn.distance(&q, &w, None) - want).abs() < 1e-5);
    }

    #[test]
    fn knn_whitens_by_the_normal_covariance() {
        // variance 4 along x: a step of 2 in x counts as a step of 1 in y
        let g = Gaussian {
            mean: vec![0.0, 0.0],
            cov: vec![4.0, 0.0, 0.0, 1.0],
            shrinkage: 0.0,
        };
        let w = Mahalanobis::new(&g).unwrap();
        let mut nn = NearestNormal::new(&[vec![0.0, 0.0]], 1, &w).unwrap();
        let dx = nn.distance(&[2.0, 0.0], &w, None);
        let dy = nn.distance(&[0.0, 1.0], &w, None);
        assert!((dx - dy).abs() < 1e-6 && (dx - 1.0).abs() < 1e-6);
    }

    #[test]
    fn bad_banks_and_parts_are_refused() {
        let w = identity(2);
        assert!(NearestNormal::new(&[vec![0.0, 0.0]], 2, &w).is_err());
        assert!(NearestNormal::new(&[vec![0.0]], 1, &w).is_err());
        assert!(Combination::new(vec![]).is_err());
        let part = |method, std| Part {
            method,
            mean: 0.0,
            std,
            excess: false,
        };
        assert!(Combination::new(vec![part(Method::Kl, 0.0)]).is_err());
        assert!(Combination::new(vec![part(Method::Combined, 1.0)]).is_err());
        let c = Combination::new(vec![
            Part {
                method: Method::Kl,
                mean: 1.0,
                std: 2.0,
                excess: false,
            },
            part(Method::Latent, 0.5),
        ])
        .unwrap();
        let v = c.value(|m| match m {
            Method::Kl => Some(5.0),
            Method::Latent => Some(1.0),
            _ => None,
        });
        assert_eq!(v, Some((2.0 + 3.0) + (2.0 + 3.0)));
        // a part far below normal counts as 3σ below, never negative
        let v = c.value(|m| match m {
            Method::Kl => Some(-100.0),
            _ => Some(0.0),
        });
        assert_eq!(v, Some(0.0 + 3.0));
        assert_eq!(c.value(|_| None), None);
        assert!(!c.needs_recon());
        // an excess part adds only what is beyond 3σ above normal
        let c = Combination::new(vec![Part {
            method: Method::Recon,
            mean: 1.0,
            std: 0.5,
            excess: true,
        }])
        .unwrap();
        let at = |v: f32| c.value(|_| Some(v)).unwrap();
        assert_eq!((at(0.0), at(2.0), at(2.5)), (0.0, 0.0, 0.0));
        assert!((at(4.5) - 4.0).abs() < 1e-6);
        assert!(c.needs_recon());
    }

    #[test]
    fn pixel_scores_standardise_each_residual_with_a_floor() {
        // residual means 0 and 0.1, stds 0.5 and 0 (floored to 0.25)
        let p = PixelNormal::new(&[0.0, 0.1], &[0.5, 0.0], 0.25).unwrap();
        assert_eq!(p.len(), 2);
        // residuals 0.5 and 0.6: z = 1 and 2
        let v = p.score(&[0.75, 0.8], &[0.25, 0.2]);
        assert!((v - (1.0 + 4.0) / 2.0).abs() < 1e-5, "{v}");
        assert_eq!(p.score(&[0.0, 0.1], &[0.0, 0.0]), 0.0);
        assert!(PixelNormal::new(&[0.0], &[1.0, 1.0], 0.1).is_err());
        assert!(PixelNormal::new(&[0.0], &[-1.0], 0.1).is_err());
        assert!(PixelNormal::new(&[0.0], &[1.0], 0.0).is_err());
        assert!(PixelNormal::new(&[f32::NAN], &[1.0], 0.1).is_err());
        // the reference fills pixel only with a reconstruction
        let mut r = Reference::new(identity(1), None, Some(p), None);
        let mut s = Scores::default();
        r.score(&[0.75, 0.8], &[0.0], None, &mut s);
        assert_eq!(s.pixel, None);
        r.score(&[0.75, 0.8], &[0.0], Some(&[0.25, 0.2]), &mut s);
        assert!((s.pixel.unwrap() - 2.5).abs() < 1e-5);
    }
}
