//! The `bvae.*` metadata an exporter may attach to a model, and the resolved
//! description of a model ([`ModelSpec`]) that the rest of the runtime uses.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Prefix of every metadata key this runtime reads.
pub const META_PREFIX: &str = "bvae.";

/// Likelihood of the decoder, which decides the reconstruction score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Pixels are Bernoulli; the score is binary cross-entropy.
    Bernoulli,
    /// Pixels are Gaussian with unit variance; the score is squared error.
    Gaussian,
}

impl fmt::Display for Likelihood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Likelihood::Bernoulli => "bernoulli",
            Likelihood::Gaussian => "gaussian",
        })
    }
}

/// Training objective recorded by the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// `recon + beta * KL` (Higgins et al. 2017).
    Beta,
    /// `recon + gamma * |KL - C|` (Burgess et al. 2018).
    Capacity,
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Objective::Beta => "beta",
            Objective::Capacity => "capacity",
        })
    }
}

/// The `bvae.*` metadata as found in the file: every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawMeta {
    /// `bvae.format`.
    pub format: Option<String>,
    /// `bvae.latent_dim`.
    pub latent_dim: Option<usize>,
    /// `bvae.channels`.
    pub channels: Option<usize>,
    /// `bvae.height`.
    pub height: Option<usize>,
    /// `bvae.width`.
    pub width: Option<usize>,
    /// `bvae.likelihood`.
    pub likelihood: Option<Likelihood>,
    /// `bvae.objective`.
    pub objective: Option<Objective>,
    /// `bvae.beta`.
    pub beta: Option<f32>,
    /// `bvae.gamma`.
    pub gamma: Option<f32>,
    /// `bvae.capacity_max`.
    pub capacity_max: Option<f32>,
    /// `bvae.latent_kl`: mean KL (nats) per latent on the training data.
    pub latent_kl: Option<Vec<f32>>,
    /// `bvae.dataset`.
    pub dataset: Option<String>,
    /// `bvae.steps`.
    pub steps: Option<u64>,
    /// `bvae.seed`.
    pub seed: Option<u64>,
    /// Every other metadata entry, verbatim.
    pub other: BTreeMap<String, String>,
}

fn parse_num<T: std::str::FromStr>(
    key: &str,
    value: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    match value.trim().parse::<T>() {
        Ok(v) => Some(v),
        Err(_) => {
            problems.push(format!(
                "metadata `{key}`: expected a number, found {value:?}"
            ));
            None
        }
    }
}

impl RawMeta {
    /// Reads metadata from `(key, value)` pairs. Malformed values of known
    /// keys are reported in `problems`; unknown keys are kept in `other`.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        problems: &mut Vec<String>,
    ) -> RawMeta {
        let mut m = RawMeta::default();
        for (key, value) in pairs {
            match key {
                "bvae.format" => m.format = Some(value.to_string()),
                "bvae.latent_dim" => m.latent_dim = parse_num(key, value, problems),
                "bvae.channels" => m.channels = parse_num(key, value, problems),
                "bvae.height" => m.height = parse_num(key, value, problems),
                "bvae.width" => m.width = parse_num(key, value, problems),
                "bvae.beta" => m.beta = parse_num(key, value, problems),
                "bvae.gamma" => m.gamma = parse_num(key, value, problems),
                "bvae.capacity_max" => m.capacity_max = parse_num(key, value, problems),
                "bvae.steps" => m.steps = parse_num(key, value, problems),
                "bvae.seed" => m.seed = parse_num(key, value, problems),
                "bvae.dataset" => m.dataset = Some(value.to_string()),
                "bvae.likelihood" => match value.trim() {
                    "bernoulli" => m.likelihood = Some(Likelihood::Bernoulli),
                    "gaussian" => m.likelihood = Some(Likelihood::Gaussian),
                    other => problems.push(format!(
                        "metadata `bvae.likelihood`: expected \"bernoulli\" or \"gaussian\", found {other:?}"
                    )),
                },
                "bvae.objective" => match value.trim() {
                    "beta" => m.objective = Some(Objective::Beta),
                    "capacity" => m.objective = Some(Objective::Capacity),
                    other => problems.push(format!(
                        "metadata `bvae.objective`: expected \"beta\" or \"capacity\", found {other:?}"
                    )),
                },
                "bvae.latent_kl" => match serde_json::from_str::<Vec<f32>>(value) {
                    Ok(v) => m.latent_kl = Some(v),
                    Err(e) => problems.push(format!(
                        "metadata `bvae.latent_kl`: expected a JSON array of numbers, found {value:?} ({e})"
                    )),
                },
                _ => {
                    m.other.insert(key.to_string(), value.to_string());
                }
            }
        }
        m
    }
}

/// Default likelihood when a model carries no `bvae.likelihood`.
pub const DEFAULT_LIKELIHOOD: Likelihood = Likelihood::Bernoulli;
/// Default β when a model carries no `bvae.beta` (the plain ELBO).
pub const DEFAULT_BETA: f32 = 1.0;
/// A latent whose mean KL on the training data is below this many nats is
/// reported as inactive (it carries almost no information).
pub const ACTIVE_KL_NATS: f32 = 0.01;

/// Everything the runtime needs to know about a model, resolved from its
/// graph and metadata: no `Option` left where a default exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Image channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// Number of latents Z.
    pub latent_dim: usize,
    /// Decoder likelihood (default Bernoulli).
    pub likelihood: Likelihood,
    /// Training objective (default β).
    pub objective: Objective,
    /// β used by the `elbo` score (default 1; 1 for capacity models, whose
    /// training weight γ is not a KL weight of the ELBO).
    pub beta: f32,
    /// Mean KL per latent on the training data, when the exporter recorded it.
    pub latent_kl: Option<Vec<f32>>,
    /// Largest batch the graph accepts, when its batch dimension is fixed.
    pub max_batch: Option<usize>,
}

impl ModelSpec {
    /// Number of pixel values in one input image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Which latents are active according to the training-data KL, if known.
    pub fn active_latents(&self) -> Option<Vec<bool>> {
        self.latent_kl
            .as_ref()
            .map(|kl| kl.iter().map(|&k| k >= ACTIVE_KL_NATS).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_and_reports_bad_values() {
        let mut problems = vec![];
        let m = RawMeta::from_pairs(
            [
                ("bvae.latent_dim", "10"),
                ("bvae.likelihood", "gaussian"),
                ("bvae.beta", "4.0"),
                ("bvae.latent_kl", "[0.5, 0.0, 2]"),
                ("bvae.height", "sixty-four"),
                ("bvae.objective", "vae"),
                ("producer", "me"),
            ],
            &mut problems,
        );
        assert_eq!(m.latent_dim, Some(10));
        assert_eq!(m.likelihood, Some(Likelihood::Gaussian));
        assert_eq!(m.beta, Some(4.0));
        assert_eq!(m.latent_kl, Some(vec![0.5, 0.0, 2.0]));
        assert_eq!(m.height, None);
        assert_eq!(m.other.get("producer").map(String::as_str), Some("me"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("bvae.height"));
        assert!(problems[1].contains("bvae.objective"));
    }
}
