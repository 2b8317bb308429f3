//! Anomaly scores of one image, as defined in DESIGN.md. Higher is more
//! anomalous for every score.
//!
//! - `recon`: mean per-pixel negative log-likelihood of the input under the
//!   reconstruction (Bernoulli: binary cross-entropy; Gaussian: squared
//!   error, as the training tool's loss).
//! - `kl`: KL(q(z|x) ‖ N(0, I)) in nats, in total and per latent.
//! - `elbo`: summed reconstruction NLL + β·KL (the training objective).
//! - `latent`: Mahalanobis distance of `mu` from the normal data's latents
//!   (needs a calibration profile).
//! - `knn`: mean distance of the whitened `mu` to its nearest normal latent
//!   means (needs a profile with a bank, [`crate::reference`]).
//! - `pixel`: the mean squared z-score of each pixel's reconstruction
//!   residual against that pixel's normal residuals (needs a profile with
//!   pixel statistics, [`crate::reference::PixelNormal`]).
//! - `combined`: the sum of several scores, each standardised on normal
//!   data and floored at 3σ below normal, so it is never negative (needs a
//!   profile that defines it).
//! - a per-pixel anomaly map (per-pixel NLL, averaged over channels).

use serde::{Deserialize, Serialize};

use crate::meta::{Likelihood, ModelSpec};
use crate::reference::Reference;

/// PyTorch's `binary_cross_entropy` clamps each log term at −100; so do we,
/// so a pixel the model is certain about cannot make the score infinite.
const LOG_FLOOR: f32 = -100.0;

/// The score methods.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Mean per-pixel reconstruction NLL.
    Recon,
    /// Total KL of q(z|x) from the prior.
    Kl,
    /// Summed reconstruction NLL + β·KL.
    Elbo,
    /// Mahalanobis distance of mu from normal latents.
    Latent,
    /// Mean distance to the nearest normal latent means.
    Knn,
    /// Mean squared z-score of the per-pixel residuals.
    Pixel,
    /// Sum of standardised scores.
    Combined,
}

impl Method {
    /// Every method, in a fixed order.
    pub const ALL: [Method; 7] = [
        Method::Recon,
        Method::Kl,
        Method::Elbo,
        Method::Latent,
        Method::Knn,
        Method::Pixel,
        Method::Combined,
    ];

    /// Whether the score needs the reconstruction (the decoder half). The
    /// combined score is counted as needing it: its parts may (see
    /// [`crate::reference::Combination::needs_recon`]).
    pub fn needs_recon(self) -> bool {
        matches!(
            self,
            Method::Recon | Method::Elbo | Method::Pixel | Method::Combined
        )
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Recon => "recon",
            Method::Kl => "kl",
            Method::Elbo => "elbo",
            Method::Latent => "latent",
            Method::Knn => "knn",
            Method::Pixel => "pixel",
            Method::Combined => "combined",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Negative log-likelihood of pixel value `x` under reconstruction `r`.
#[inline]
pub fn pixel_nll(x: f32, r: f32, likelihood: Likelihood) -> f32 {
    match likelihood {
        // Binary pixels (the common case for Bernoulli models) need one
        // logarithm, not two.
        Likelihood::Bernoulli if x <= 0.0 => -(1.0 - r).ln().max(LOG_FLOOR),
        Likelihood::Bernoulli if x >= 1.0 => -r.ln().max(LOG_FLOOR),
        Likelihood::Bernoulli => {
            let lr = r.ln().max(LOG_FLOOR);
            let l1r = (1.0 - r).ln().max(LOG_FLOOR);
            -(x * lr + (1.0 - x) * l1r)
        }
        Likelihood::Gaussian => (x - r) * (x - r),
    }
}

/// Summed NLL of an image `x` under its reconstruction `r`.
pub fn recon_nll_sum(x: &[f32], r: &[f32], likelihood: Likelihood) -> f32 {
    match likelihood {
        Likelihood::Bernoulli => bce_sum(x, r),
        Likelihood::Gaussian => x
            .iter()
            .zip(r)
            .map(|(&x, &r)| pixel_nll(x, r, likelihood))
            .sum(),
    }
}

/// Lanes of the vectorised binary cross-entropy.
const LANES: usize = 16;

/// Summed binary cross-entropy, [`pixel_nll`] over every pixel but with
/// [`ln_normal`] in `LANES` independent sums, so the loop vectorises (the
/// score of a 64×64 image drops from ~80 µs to a few µs). A block holding a
/// reconstruction value of 0 or 1 (or one whose complement is subnormal)
/// takes the exact scalar path, which clamps the logarithm like PyTorch.
fn bce_sum(x: &[f32], r: &[f32]) -> f32 {
    match crate::kernels::Isa::detect() {
        // SAFETY: `detect` only returns a variant this CPU runs.
        Some(isa) => unsafe { crate::kernels::simd::bce_sum(isa, x, r) },
        None => bce_sum_portable(x, r),
    }
}

/// The body of [`bce_sum`], inlined into each kernel variant
/// ([`crate::kernels`]).
#[inline(always)]
pub(crate) fn bce_sum_portable(x: &[f32], r: &[f32]) -> f32 {
    let n = x.len().min(r.len());
    let (x, r) = (&x[..n], &r[..n]);
    let mut acc = [0.0f32; LANES];
    let mut rest = 0.0f32;
    for (xs, rs) in x.chunks_exact(LANES).zip(r.chunks_exact(LANES)) {
        let normal = rs.iter().fold(true, |ok, &r| {
            ok & (r >= f32::MIN_POSITIVE) & (1.0 - r >= f32::MIN_POSITIVE)
        });
        if normal {
            for ((a, &x), &r) in acc.iter_mut().zip(xs).zip(rs) {
                let lr = ln_normal(r).max(LOG_FLOOR);
                let l1r = ln_normal(1.0 - r).max(LOG_FLOOR);
                *a -= x * lr + (1.0 - x) * l1r;
            }
        } else {
            rest += xs
                .iter()
                .zip(rs)
                .map(|(&x, &r)| pixel_nll(x, r, Likelihood::Bernoulli))
                .sum::<f32>();
        }
    }
    let tail = n - n % LANES;
    rest += x[tail..]
        .iter()
        .zip(&r[tail..])
        .map(|(&x, &r)| pixel_nll(x, r, Likelihood::Bernoulli))
        .sum::<f32>();
    acc.iter().sum::<f32>() + rest
}

/// Natural logarithm of a positive normal `f32` (Cephes `logf`: exponent
/// split plus a degree-9 polynomial, within about 1 ulp of `f32::ln`),
/// without branches so that loops over it vectorise. Zero, subnormals,
/// infinities and NaN are the caller's business.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the constants as Cephes prints them
fn ln_normal(v: f32) -> f32 {
    let bits = v.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    // mantissa in [0.5, 1)
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < std::f32::consts::FRAC_1_SQRT_2;
    let e = (e - small as i32) as f32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut y = 7.037_683_6e-2_f32;
    y = y * m - 1.151_461_1e-1;
    y = y * m + 1.167_699_9e-1;
    y = y * m - 1.242_014_1e-1;
    y = y * m + 1.424_932_3e-1;
    y = y * m - 1.666_805_8e-1;
    y = y * m + 2.000_071_4e-1;
    y = y * m - 2.499_999_4e-1;
    y = y * m + 3.333_333_1e-1;
    y = y * m * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    m + y + 0.693_359_4 * e
}

/// KL of N(mu, exp(logvar)) from N(0, 1) per latent into `out`; returns the total.
pub fn kl_per_latent(mu: &[f32], logvar: &[f32], out: &mut [f32]) -> f32 {
    let mut total = 0.0;
    for ((o, &m), &lv) in out.iter_mut().zip(mu).zip(logvar) {
        *o = 0.5 * (m * m + lv.exp() - 1.0 - lv);
        total += *o;
    }
    total
}

/// Per-pixel NLL averaged over channels: `x` and `r` are `[C, H, W]`, `out`
/// is `[H, W]`.
pub fn pixel_map(x: &[f32], r: &[f32], likelihood: Likelihood, channels: usize, out: &mut [f32]) {
    let plane = out.len();
    out.fill(0.0);
    for c in 0..channels {
        let xs = &x[c * plane..(c + 1) * plane];
        let rs = &r[c * plane..(c + 1) * plane];
        for ((o, &x), &r) in out.iter_mut().zip(xs).zip(rs) {
            *o += pixel_nll(x, r, likelihood);
        }
    }
    let inv = 1.0 / channels as f32;
    out.iter_mut().for_each(|v| *v *= inv);
}

/// All scores of one image. `recon`, `elbo` and `pixel` are absent when
/// the reconstruction was not computed; `latent`, `knn`, `pixel` and
/// `combined` when no calibration (or one without them) is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Scores {
    /// Mean per-pixel reconstruction NLL.
    pub recon: Option<f32>,
    /// Total KL (nats).
    pub kl: f32,
    /// Summed reconstruction NLL + β·KL.
    pub elbo: Option<f32>,
    /// Mahalanobis distance of mu from normal latents.
    pub latent: Option<f32>,
    /// Mean distance to the nearest normal latent means.
    pub knn: Option<f32>,
    /// Mean squared z-score of the per-pixel residuals.
    #[serde(default)]
    pub pixel: Option<f32>,
    /// Sum of standardised scores.
    pub combined: Option<f32>,
    /// The camera frame's sensor noise, σ as a fraction of full scale
    /// ([`crate::noise`]): not a score of the model, a check of the camera,
    /// measured when the pipeline's profile has a noise threshold (or
    /// calibration asks for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f32>,
}

impl Scores {
    /// The value of one method, if it was computed.
    pub fn get(&self, m: Method) -> Option<f32> {
        match m {
            Method::Recon => self.recon,
            Method::Kl => Some(self.kl),
            Method::Elbo => self.elbo,
            Method::Latent => self.latent,
            Method::Knn => self.knn,
            Method::Pixel => self.pixel,
            Method::Combined => self.combined,
        }
    }

    /// Sets the value of one method (`None` leaves `kl`, which is always
    /// computed, at NaN).
    pub fn set(&mut self, m: Method, v: Option<f32>) {
        match m {
            Method::Recon => self.recon = v,
            Method::Kl => self.kl = v.unwrap_or(f32::NAN),
            Method::Elbo => self.elbo = v,
            Method::Latent => self.latent = v,
            Method::Knn => self.knn = v,
            Method::Pixel => self.pixel = v,
            Method::Combined => self.combined = v,
        }
    }
}

/// Computes scores for one model, with buffers sized once.
#[derive(Debug, Clone)]
pub struct Scorer {
    likelihood: Likelihood,
    beta: f32,
    latent_dim: usize,
    image_len: usize,
    reference: Option<Reference>,
    kl: Vec<f32>,
}

impl Scorer {
    /// A scorer for `spec`, with the scores that compare with normal data
    /// when `reference` is given.
    pub fn new(spec: &ModelSpec, reference: Option<Reference>) -> Scorer {
        Scorer {
            likelihood: spec.likelihood,
            beta: spec.beta,
            latent_dim: spec.latent_dim,
            image_len: spec.image_len(),
            reference,
            kl: vec![0.0; spec.latent_dim],
        }
    }

    /// Scores one image: `x` its input, `mu`/`logvar` its latents, `recon`
    /// its reconstruction when computed.
    pub fn score(
        &mut self,
        x: &[f32],
        mu: &[f32],
        logvar: &[f32],
        recon: Option<&[f32]>,
    ) -> Scores {
        let kl = kl_per_latent(mu, logvar, &mut self.kl);
        let nll = recon.map(|r| recon_nll_sum(x, r, self.likelihood));
        let mut s = Scores {
            recon: nll.map(|s| s / self.image_len as f32),
            kl,
            elbo: nll.map(|s| s + self.beta * kl),
            latent: None,
            knn: None,
            pixel: None,
            combined: None,
            noise: None,
        };
        if let Some(r) = &mut self.reference {
            r.score(x, mu, recon, &mut s);
        }
        s
    }

    /// KL per latent of the last scored image.
    pub fn kl_latents(&self) -> &[f32] {
        &self.kl
    }

    /// Number of latents.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Whether the latent distance is available.
    pub fn has_latent(&self) -> bool {
        self.reference.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Objective;

    fn spec(likelihood: Likelihood, beta: f32) -> ModelSpec {
        ModelSpec {
            channels: 1,
            height: 1,
            width: 2,
            latent_dim: 2,
            likelihood,
            objective: Objective::Beta,
            beta,
            latent_kl: None,
            latent_names: None,
            max_batch: None,
            illumination: None,
        }
    }

    #[test]
    fn bernoulli_scores_by_hand() {
        // x = [1, 0], r = [0.5, 0.25]: NLL = ln 2 + (−ln 0.75).
        // mu = [1, 0], logvar = [0, ln 4]: KL = 0.5·1 + 0.5·(4 − 1 − ln 4).
        let mut s = Scorer::new(&spec(Likelihood::Bernoulli, 4.0), None);
        let sc = s.score(
            &[1.0, 0.0],
            &[1.0, 0.0],
            &[0.0, 4f32.ln()],
            Some(&[0.5, 0.25]),
        );
        let nll = 2f32.ln() - 0.75f32.ln();
        let kl = 0.5 + 0.5 * (3.0 - 4f32.ln());
        assert!((sc.recon.unwrap() - nll / 2.0).abs() < 1e-6);
        assert!((sc.kl - kl).abs() < 1e-6);
        assert!((sc.elbo.unwrap() - (nll + 4.0 * kl)).abs() < 1e-5);
        assert!((s.kl_latents()[0] - 0.5).abs() < 1e-6);
        assert_eq!(sc.latent, None);
    }

    #[test]
    fn gaussian_scores_by_hand() {
        let mut s = Scorer::new(&spec(Likelihood::Gaussian, 1.0), None);
        let sc = s.score(&[1.0, 0.0], &[0.0, 0.0], &[0.0, 0.0], Some(&[0.5, 0.25]));
        assert!((sc.recon.unwrap() - (0.25 + 0.0625) / 2.0).abs() < 1e-7);
        assert_eq!(sc.kl, 0.0);
        assert!((sc.elbo.unwrap() - 0.3125).abs() < 1e-7);
    }

    #[test]
    fn binary_and_gray_pixels_agree_with_the_formula() {
        for &(x, r) in &[
            (0.0f32, 0.3f32),
            (1.0, 0.3),
            (0.4, 0.3),
            (1.0, 0.999),
            (0.0, 1e-6),
        ] {
            let want = -(x * r.ln().max(LOG_FLOOR) + (1.0 - x) * (1.0 - r).ln().max(LOG_FLOOR));
            assert!(
                (pixel_nll(x, r, Likelihood::Bernoulli) - want).abs() < 1e-6,
                "x={x} r={r}"
            );
        }
    }

    #[test]
    fn fast_logarithm_matches_std() {
        let mut v = f32::MIN_POSITIVE;
        while v < 4.0 {
            let (got, want) = (ln_normal(v), v.ln());
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want.abs().max(1.0),
                "ln({v}) = {want}, got {got}"
            );
            v *= 1.013;
        }
        let h = std::f32::consts::FRAC_1_SQRT_2;
        for v in [
            0.5f32,
            h,
            f32::from_bits(h.to_bits() - 1),
            1.0 - f32::EPSILON / 2.0,
            1.0,
            0.999,
            1e-6,
        ] {
            assert!((ln_normal(v) - v.ln()).abs() <= 2.0 * f32::EPSILON, "{v}");
        }
    }

    #[test]
    fn vectorised_bce_matches_the_pixel_formula() {
        // gray and binary pixels, saturated reconstructions (0 and 1) in
        // some blocks, and a tail shorter than a block
        let n = 4 * LANES + 7;
        let x: Vec<f32> = (0..n).map(|i| [0.0, 1.0, 0.37][i % 3]).collect();
        let mut r: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 101.0 + 1e-3)
            .collect();
        r[LANES + 2] = 0.0;
        r[2 * LANES + 5] = 1.0;
        let want: f64 = x
            .iter()
            .zip(&r)
            .map(|(&x, &r)| pixel_nll(x, r, Likelihood::Bernoulli) as f64)
            .sum();
        let got = recon_nll_sum(&x, &r, Likelihood::Bernoulli) as f64;
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
    }

    #[test]
    fn certain_wrong_pixels_are_finite() {
        let v = pixel_nll(1.0, 0.0, Likelihood::Bernoulli);
        assert_eq!(v, 100.0);
    }

    #[test]
    fn encoder_only_scores_have_no_recon() {
        let mut s = Scorer::new(&spec(Likelihood::Bernoulli, 1.0), None);
        let sc = s.score(&[1.0, 0.0], &[0.0, 0.0], &[0.0, 0.0], None);
        assert_eq!((sc.recon, sc.elbo), (None, None));
        assert_eq!(sc.get(Method::Kl), Some(0.0));
    }

    #[test]
    fn pixel_map_averages_channels() {
        let x = [1.0, 0.0, 0.0, 0.0];
        let r = [0.0, 0.0, 0.5, 0.0];
        let mut out = [0.0; 2];
        pixel_map(&x, &r, Likelihood::Gaussian, 2, &mut out);
        assert_eq!(out, [(1.0 + 0.25) / 2.0, 0.0]);
    }
}
