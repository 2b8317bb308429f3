//! Small statistics used by scoring and calibration: quantiles, summary
//! statistics, a shrinkage covariance and Mahalanobis distances.

// Matrix code reads best with explicit row and column indices.
#![allow(clippy::needless_range_loop)]

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Quantile of a sorted sample with linear interpolation between order
/// statistics (Hyndman & Fan type 7, NumPy's default).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let q = q.clamp(0.0, 1.0);
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// The quantiles every score summary records.
pub const SUMMARY_QUANTILES: [f64; 7] = [0.01, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999];

/// Summary statistics of one score over normal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Sample size.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (n − 1).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// `(q, value)` pairs for [`SUMMARY_QUANTILES`].
    pub quantiles: Vec<(f64, f64)>,
}

impl Summary {
    /// Summarises a sample; errors on an empty sample or a non-finite value.
    pub fn of(values: &[f64]) -> Result<Summary> {
        if values.is_empty() {
            bail!("cannot summarise an empty sample");
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            bail!("sample contains a non-finite value ({v})");
        }
        let mut s = values.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len() as f64;
        let mean = s.iter().sum::<f64>() / n;
        let var = if s.len() > 1 {
            s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Ok(Summary {
            count: s.len(),
            mean,
            std: var.sqrt(),
            min: s[0],
            max: s[s.len() - 1],
            quantiles: SUMMARY_QUANTILES
                .iter()
                .map(|&q| (q, quantile_sorted(&s, q)))
                .collect(),
        })
    }
}

/// Mean and Ledoit–Wolf shrinkage covariance of the rows of a sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gaussian {
    /// Mean vector (length p).
    pub mean: Vec<f64>,
    /// Covariance, p×p row-major.
    pub cov: Vec<f64>,
    /// Shrinkage intensity towards a scaled identity, in [0, 1].
    pub shrinkage: f64,
}

/// Smallest variance kept on the covariance diagonal, so that a latent that
/// never moves in normal data (an inactive one) does not make the matrix
/// singular.
pub const MIN_VARIANCE: f64 = 1e-6;

impl Gaussian {
    /// Fits `rows` (n vectors of length p). Ledoit & Wolf (2004), "A
    /// well-conditioned estimator for large-dimensional covariance
    /// matrices": the sample covariance shrunk towards `m·I` (m = mean
    /// eigenvalue) with the intensity that minimises the expected Frobenius
    /// loss.
    pub fn fit(rows: &[Vec<f64>]) -> Result<Gaussian> {
        let n = rows.len();
        if n < 2 {
            bail!("need at least 2 samples to fit a covariance, found {n}");
        }
        let p = rows[0].len();
        if p == 0 || rows.iter().any(|r| r.len() != p) {
            bail!("all samples must have the same non-zero length");
        }
        let nf = n as f64;
        let mut mean = vec![0.0; p];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / nf;
            }
        }
        // S = X^T X / n on centred data (the ML estimate LW works with).
        let mut s = vec![0.0; p * p];
        let mut centred = vec![0.0; p];
        for r in rows {
            for i in 0..p {
                centred[i] = r[i] - mean[i];
            }
            for i in 0..p {
                for j in 0..p {
                    s[i * p + j] += centred[i] * centred[j] / nf;
                }
            }
        }
        let mu = (0..p).map(|i| s[i * p + i]).sum::<f64>() / p as f64;
        let frob2 = |m: &[f64]| m.iter().map(|v| v * v).sum::<f64>();
        let mut target_diff = s.clone();
        for i in 0..p {
            target_diff[i * p + i] -= mu;
        }
        let d2 = frob2(&target_diff);
        let s_frob2 = frob2(&s);
        // b̄² = 1/n² Σ_k ||x_k x_kᵀ − S||²_F, with
        // ||x xᵀ − S||² = ||x||⁴ − 2 xᵀ S x + ||S||².
        let mut b2 = 0.0;
        for r in rows {
            for i in 0..p {
                centred[i] = r[i] - mean[i];
            }
            let norm2: f64 = centred.iter().map(|v| v * v).sum();
            let mut xsx = 0.0;
            for i in 0..p {
                let mut acc = 0.0;
                for j in 0..p {
                    acc += s[i * p + j] * centred[j];
                }
                xsx += centred[i] * acc;
            }
            b2 += norm2 * norm2 - 2.0 * xsx + s_frob2;
        }
        b2 /= nf * nf;
        let shrinkage = if d2 > 0.0 {
            (b2.min(d2) / d2).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let mut cov = vec![0.0; p * p];
        for i in 0..p {
            for j in 0..p {
                cov[i * p + j] = (1.0 - shrinkage) * s[i * p + j];
            }
            cov[i * p + i] = (cov[i * p + i] + shrinkage * mu).max(MIN_VARIANCE);
        }
        Ok(Gaussian {
            mean,
            cov,
            shrinkage,
        })
    }

    /// Dimension p.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Standard deviation of each coordinate (square root of the diagonal).
    pub fn std(&self) -> Vec<f64> {
        let p = self.dim();
        (0..p).map(|i| self.cov[i * p + i].sqrt()).collect()
    }
}

/// Mahalanobis distance against a fitted [`Gaussian`], through the Cholesky
/// factor of its covariance. Evaluation allocates nothing.
#[derive(Debug, Clone)]
pub struct Mahalanobis {
    mean: Vec<f32>,
    /// Lower-triangular L with L Lᵀ = Σ, row-major.
    chol: Vec<f32>,
    p: usize,
}

impl Mahalanobis {
    /// Factors the covariance; errors if it is not positive definite.
    pub fn new(g: &Gaussian) -> Result<Mahalanobis> {
        let p = g.dim();
        if g.cov.len() != p * p {
            bail!(
                "covariance has {} entries, expected {}×{}",
                g.cov.len(),
                p,
                p
            );
        }
        let mut l = vec![0.0f64; p * p];
        for i in 0..p {
            for j in 0..=i {
                let mut sum = g.cov[i * p + j];
                for k in 0..j {
                    sum -= l[i * p + k] * l[j * p + k];
                }
                if i == j {
                    if sum <= 0.0 || !sum.is_finite() {
                        bail!("covariance is not positive definite (pivot {i} is {sum})");
                    }
                    l[i * p + i] = sum.sqrt();
                } else {
                    l[i * p + j] = sum / l[j * p + j];
                }
            }
        }
        Ok(Mahalanobis {
            mean: g.mean.iter().map(|&v| v as f32).collect(),
            chol: l.iter().map(|&v| v as f32).collect(),
            p,
        })
    }

    /// Dimension p.
    pub fn dim(&self) -> usize {
        self.p
    }

    /// √((x − m)ᵀ Σ⁻¹ (x − m)) by forward substitution into `scratch`
    /// (length p).
    pub fn distance(&self, x: &[f32], scratch: &mut [f32]) -> f32 {
        self.whiten(x, scratch);
        scratch[..self.p].iter().map(|v| v * v).sum::<f32>().sqrt()
    }

    /// The whitened point L⁻¹(x − m) into `out` (length p): normal data
    /// has identity covariance there.
    pub fn whiten(&self, x: &[f32], out: &mut [f32]) {
        let p = self.p;
        for i in 0..p {
            let mut v = x[i] - self.mean[i];
            for k in 0..i {
                v -= self.chol[i * p + k] * out[k];
            }
            v /= self.chol[i * p + i];
            out[i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile_sorted(&s, 0.5), 2.5);
        assert_eq!(quantile_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_sorted(&s, 1.0), 4.0);
        assert!((quantile_sorted(&s, 0.9) - 3.7).abs() < 1e-12);
    }

    #[test]
    fn mahalanobis_of_a_diagonal_gaussian_is_a_scaled_norm() {
        let g = Gaussian {
            mean: vec![1.0, -1.0],
            cov: vec![4.0, 0.0, 0.0, 0.25],
            shrinkage: 0.0,
        };
        let m = Mahalanobis::new(&g).unwrap();
        let mut scratch = [0.0; 2];
        // (3-1)/2 = 1, (-1.5+1)/0.5 = -1 → √2
        let d = m.distance(&[3.0, -1.5], &mut scratch);
        assert!((d - 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn mahalanobis_with_correlation_matches_the_inverse() {
        // Σ = [[2, 1], [1, 2]], Σ⁻¹ = 1/3 [[2, -1], [-1, 2]]; x = (1, 0): d² = 2/3.
        let g = Gaussian {
            mean: vec![0.0, 0.0],
            cov: vec![2.0, 1.0, 1.0, 2.0],
            shrinkage: 0.0,
        };
        let m = Mahalanobis::new(&g).unwrap();
        let d = m.distance(&[1.0, 0.0], &mut [0.0; 2]);
        assert!((d * d - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn shrinkage_fit_is_sane() {
        // Points on a line with a little noise: shrinkage keeps it invertible.
        let rows: Vec<Vec<f64>> = (0..50)
            .map(|i| {
                let t = i as f64 / 10.0;
                vec![t, 2.0 * t + ((i * 7919) % 13) as f64 * 1e-3, 0.0]
            })
            .collect();
        let g = Gaussian::fit(&rows).unwrap();
        assert!((g.mean[0] - 2.45).abs() < 1e-9);
        assert!(g.shrinkage >= 0.0 && g.shrinkage <= 1.0);
        assert!(g.cov[2 * 3 + 2] >= MIN_VARIANCE);
        assert!(Mahalanobis::new(&g).is_ok());
        assert!(Gaussian::fit(&rows[..1]).is_err());
    }

    #[test]
    fn summary_rejects_bad_samples() {
        assert!(Summary::of(&[]).is_err());
        assert!(Summary::of(&[1.0, f64::NAN]).is_err());
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.max, s.mean, s.std), (1.0, 3.0, 2.0, 1.0));
    }
}
