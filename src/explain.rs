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
    /// The generative factor the latent follows, when the model names it
    /// (`bvae.latent_names`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// mu of the latent.
    pub value: f32,
    /// z-score against normal data (with a profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// KL of the latent in nats.
    pub kl: f32,
}

impl Deviation {
    /// `z3`, or `z3 (size)` when the latent has a name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("z{} ({n})", self.latent),
            None => format!("z{}", self.latent),
        }
    }
}

/// Latents ranked by |z| against the profile, or by KL without one.
///
/// `active` (from [`crate::meta::ModelSpec::active_latents`], one
/// definition for every output) leaves out the latents that carry no
/// information: an inactive latent's normal spread is tiny, so noise alone
/// gives it a large z-score. When the model does not say, or calls every
/// latent inactive, all are ranked. `names` (`bvae.latent_names`) names the
/// latents that follow a known factor.
pub fn deviations(
    mu: &[f32],
    kl: &[f32],
    profile: Option<&Profile>,
    active: Option<&[bool]>,
    names: Option<&[String]>,
    top: usize,
) -> Vec<Deviation> {
    let any_active = active.is_some_and(|a| a.iter().any(|&x| x));
    let keep = |i: usize| !any_active || active.and_then(|a| a.get(i).copied()).unwrap_or(true);
    let mut d: Vec<Deviation> = (0..mu.len())
        .filter(|&i| keep(i))
        .map(|i| Deviation {
            latent: i,
            name: names
                .and_then(|n| n.get(i))
                .filter(|n| !n.is_empty())
                .cloned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_latents_are_never_blamed() {
        let mu = [0.1f32, 2.0, -0.3, 0.0];
        let kl = [0.5f32, 3.0, 1.0, 0.001];
        let all = deviations(&mu, &kl, None, None, None, 2);
        assert_eq!(all.iter().map(|d| d.latent).collect::<Vec<_>>(), [1, 2]);
        // latent 1 is inactive: the next ones are blamed instead
        let active = [true, false, true, false];
        let some = deviations(&mu, &kl, None, Some(&active), None, 4);
        assert_eq!(some.iter().map(|d| d.latent).collect::<Vec<_>>(), [2, 0]);
        // a model that calls every latent inactive still gets an explanation
        let none = deviations(&mu, &kl, None, Some(&[false; 4]), None, 1);
        // names: empty ones mean "unnamed"
        let names = ["x".to_string(), String::new(), "size".into(), "y".into()];
        let named = deviations(&mu, &kl, None, None, Some(&names), 4);
        for d in &named {
            let want = names[d.latent].clone();
            assert_eq!(d.name, (!want.is_empty()).then_some(want));
        }
        assert!(named.iter().any(|d| d.label() == "z2 (size)"));
        assert!(named.iter().any(|d| d.label() == "z1"));
        assert_eq!(none[0].latent, 1);
    }
}
