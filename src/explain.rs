//! Which latents explain an anomaly: each latent's deviation from the
//! normal data (z-score against the calibration profile), or its KL when
//! no profile is loaded.

use serde::Serialize;

use crate::calibrate::Profile;

/// One latent's deviation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deviation {
    /// Latent index.
    pub latent: usize,
    /// mu of the latent.
    pub value: f32,
    /// z-score against normal data (with a profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// KL of the latent in nats.
    pub kl: f32,
}

/// Latents ranked by |z| against the profile, or by KL without one.
pub fn deviations(mu: &[f32], kl: &[f32], profile: Option<&Profile>, top: usize) -> Vec<Deviation> {
    let mut d: Vec<Deviation> = (0..mu.len())
        .map(|i| Deviation {
            latent: i,
            value: mu[i],
            z: profile.map(|p| {
                let g = &p.latent.gaussian;
                (mu[i] as f64 - g.mean[i]) / p.latent.std[i].max(1e-9)
            }),
            kl: kl[i],
        })
        .collect();
    d.sort_by(|a, b| match (a.z, b.z) {
        (Some(x), Some(y)) => y.abs().total_cmp(&x.abs()),
        _ => b.kl.total_cmp(&a.kl),
    });
    d.truncate(top);
    d
}
