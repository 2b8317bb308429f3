//! The `bvae.*` metadata an exporter may attach to a model, and the resolved
//! description of a model ([`ModelSpec`]) that the rest of the runtime uses.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::preprocess::Fit;
use crate::tiles::Grid;

/// Prefix of every metadata key this runtime reads.
pub const META_PREFIX: &str = "bvae.";

/// Most latents a model may have (the width of its `mu` output, or
/// `bvae.latent_dim`). A calibration profile holds a Z×Z covariance: at
/// this bound that is a million numbers (about 35 MB of JSON), and a
/// β-VAE meant for a small board has tens of latents.
pub const MAX_LATENT_DIM: usize = 1024;

/// Longest metadata value quoted in an error message.
const QUOTE_CHARS: usize = 80;

/// `value` for an error message: cut after [`QUOTE_CHARS`] characters.
fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &value[..end], value.len()),
        None => format!("{value:?}"),
    }
}

/// Parses a JSON array of at most `max` entries, refusing a longer one
/// while reading it (before it is allocated).
pub fn parse_bounded_json_array<T: serde::de::DeserializeOwned>(
    text: &str,
    max: usize,
) -> Result<Vec<T>, String> {
    use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};
    use std::marker::PhantomData;

    struct Bounded<T>(usize, PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a JSON array of at most {} entries", self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.0));
            while let Some(x) = seq.next_element()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!(
                        "more than {} entries (at most one per latent)",
                        self.0
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Bounded(max, PhantomData)
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

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
    /// `bvae.latent_names`: the generative factor each latent follows
    /// (`""` where none).
    pub latent_names: Option<Vec<String>>,
    /// `bvae.fit`: how the training data was fitted to the model's input
    /// (and so how frames with another aspect ratio should be).
    pub fit: Option<Fit>,
    /// `bvae.illumination`: `"gain"` when every input was scaled to the
    /// mean brightness `bvae.illumination_mean` (`false` for `"none"`).
    pub illumination: Option<bool>,
    /// `bvae.illumination_mean`: the mean input value that gain
    /// normalisation scales every input to, in (0, 1].
    pub illumination_mean: Option<f32>,
    /// `bvae.tiles`: the grid (`"4x3"`) the training frames were cut into;
    /// each tile was one training image.
    pub tiles: Option<Grid>,
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
                "metadata `{key}`: expected a number, found {}",
                quote(value)
            ));
            None
        }
    }
}

/// A metadata number that must be finite (β, γ, C_max).
fn parse_finite(key: &str, value: &str, problems: &mut Vec<String>) -> Option<f32> {
    match parse_num::<f32>(key, value, problems) {
        Some(v) if v.is_finite() => Some(v),
        Some(_) => {
            problems.push(format!(
                "metadata `{key}`: expected a finite number, found {}",
                quote(value)
            ));
            None
        }
        None => None,
    }
}

/// A metadata value that must be one of two names.
fn parse_choice<T: Copy>(
    key: &str,
    value: &str,
    [(a, va), (b, vb)]: [(&str, T); 2],
    problems: &mut Vec<String>,
) -> Option<T> {
    match value.trim() {
        v if v == a => Some(va),
        v if v == b => Some(vb),
        other => {
            problems.push(format!(
                "metadata `{key}`: expected {a:?} or {b:?}, found {}",
                quote(other)
            ));
            None
        }
    }
}

impl RawMeta {
    /// How frames are fitted to this model by default: as it was trained
    /// (`bvae.fit`), else [`Fit::Crop`].
    pub fn fit_or_default(&self) -> Fit {
        self.fit.unwrap_or_default()
    }

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
                "bvae.beta" => m.beta = parse_finite(key, value, problems),
                "bvae.gamma" => m.gamma = parse_finite(key, value, problems),
                "bvae.capacity_max" => m.capacity_max = parse_finite(key, value, problems),
                "bvae.steps" => m.steps = parse_num(key, value, problems),
                "bvae.seed" => m.seed = parse_num(key, value, problems),
                "bvae.dataset" => m.dataset = Some(value.to_string()),
                "bvae.tiles" => match value.parse::<Grid>() {
                    Ok(g) => m.tiles = Some(g),
                    Err(e) => problems.push(format!("metadata `{key}`: {e}")),
                },
                "bvae.likelihood" => {
                    m.likelihood = parse_choice(
                        key,
                        value,
                        [
                            ("bernoulli", Likelihood::Bernoulli),
                            ("gaussian", Likelihood::Gaussian),
                        ],
                        problems,
                    )
                }
                "bvae.objective" => {
                    m.objective = parse_choice(
                        key,
                        value,
                        [("beta", Objective::Beta), ("capacity", Objective::Capacity)],
                        problems,
                    )
                }
                "bvae.illumination" => {
                    m.illumination =
                        parse_choice(key, value, [("none", false), ("gain", true)], problems)
                }
                "bvae.illumination_mean" => {
                    m.illumination_mean = parse_finite(key, value, problems);
                    if m.illumination_mean.is_some_and(|v| !(v > 0.0 && v <= 1.0)) {
                        problems.push(format!(
                            "metadata `{key}`: expected a mean input value in (0, 1], found {}",
                            quote(value)
                        ));
                        m.illumination_mean = None;
                    }
                }
                "bvae.fit" => {
                    m.fit = parse_choice(
                        key,
                        value,
                        [("crop", Fit::Crop), ("letterbox", Fit::Letterbox)],
                        problems,
                    )
                }
                "bvae.latent_kl" => match parse_bounded_json_array::<f32>(value, MAX_LATENT_DIM) {
                    Ok(v) if v.iter().all(|k| k.is_finite()) => m.latent_kl = Some(v),
                    Ok(_) => problems.push(format!(
                        "metadata `bvae.latent_kl`: expected finite numbers (nats per latent), \
                             found {}",
                        quote(value)
                    )),
                    Err(e) => problems.push(format!(
                        "metadata `bvae.latent_kl`: expected a JSON array of at most \
                             {MAX_LATENT_DIM} numbers (nats per latent), found {} ({e})",
                        quote(value)
                    )),
                },
                "bvae.latent_names" => {
                    match parse_bounded_json_array::<String>(value, MAX_LATENT_DIM) {
                        Ok(v) if v.iter().all(|n| valid_latent_name(n)) => {
                            m.latent_names = Some(v)
                        }
                        Ok(_) => problems.push(format!(
                            "metadata `bvae.latent_names`: a name has more than \
                             {MAX_LATENT_NAME} characters or a control character, found {}",
                            quote(value)
                        )),
                        Err(e) => problems.push(format!(
                            "metadata `bvae.latent_names`: expected a JSON array of at most \
                             {MAX_LATENT_DIM} strings (one per latent, \"\" where none), found {} ({e})",
                            quote(value)
                        )),
                    }
                }
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

/// Longest latent name (`bvae.latent_names`), in characters.
pub const MAX_LATENT_NAME: usize = 32;

/// A latent name fits in events, the window and topics: at most
/// [`MAX_LATENT_NAME`] characters, none of them a control character.
pub fn valid_latent_name(name: &str) -> bool {
    name.chars().count() <= MAX_LATENT_NAME && !name.chars().any(char::is_control)
}

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
    /// The generative factor each latent follows (`bvae.latent_names`;
    /// `""` where none), when the exporter recorded them.
    #[serde(default)]
    pub latent_names: Option<Vec<String>>,
    /// Largest batch the graph accepts, when its batch dimension is fixed.
    pub max_batch: Option<usize>,
    /// The mean input value every input is scaled to (gain normalisation
    /// of the illumination, `bvae.illumination = "gain"`), or `None` when
    /// inputs are not normalised.
    pub illumination: Option<f32>,
}

impl ModelSpec {
    /// Number of pixel values in one input image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Latent `i`'s name, if it has one.
    pub fn latent_name(&self, i: usize) -> Option<&str> {
        self.latent_names
            .as_ref()
            .and_then(|n| n.get(i))
            .map(String::as_str)
            .filter(|n| !n.is_empty())
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
                ("bvae.fit", "letterbox"),
                ("producer", "me"),
            ],
            &mut problems,
        );
        assert_eq!(m.latent_dim, Some(10));
        assert_eq!(m.likelihood, Some(Likelihood::Gaussian));
        assert_eq!(m.beta, Some(4.0));
        assert_eq!(m.latent_kl, Some(vec![0.5, 0.0, 2.0]));
        assert_eq!(m.height, None);
        assert_eq!(m.fit, Some(Fit::Letterbox));
        assert_eq!(m.other.get("producer").map(String::as_str), Some("me"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("bvae.height"));
        assert!(problems[1].contains("bvae.objective"));
        let mut problems = vec![];
        let m = RawMeta::from_pairs([("bvae.fit", "stretch")], &mut problems);
        assert_eq!((m.fit, m.fit_or_default()), (None, Fit::Crop));
        assert_eq!(
            problems,
            ["metadata `bvae.fit`: expected \"crop\" or \"letterbox\", found \"stretch\""]
        );
        assert!(m.other.is_empty());
        let mut problems = vec![];
        let m = RawMeta::from_pairs(
            [
                ("bvae.illumination", "gain"),
                ("bvae.illumination_mean", "0.42"),
            ],
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            (m.illumination, m.illumination_mean),
            (Some(true), Some(0.42))
        );
        let m = RawMeta::from_pairs(
            [
                ("bvae.illumination", "auto"),
                ("bvae.illumination_mean", "3"),
            ],
            &mut problems,
        );
        assert_eq!((m.illumination, m.illumination_mean), (None, None));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("expected a mean input value in (0, 1]"));
    }

    #[test]
    fn json_arrays_are_bounded_while_read() {
        assert_eq!(
            parse_bounded_json_array::<f32>("[1, 2.5]", 2),
            Ok(vec![1.0, 2.5])
        );
        let e = parse_bounded_json_array::<f32>("[1, 2, 3]", 2).unwrap_err();
        assert!(e.contains("more than 2 entries"), "{e}");
        assert!(parse_bounded_json_array::<f32>("[1] trailing", 2).is_err());
        assert!(parse_bounded_json_array::<String>("{}", 2).is_err());
        let mut problems = vec![];
        let long = format!("[{}]", ["1e40"; 3].join(","));
        let m = RawMeta::from_pairs(
            [
                ("bvae.latent_kl", long.as_str()),
                ("bvae.latent_names", r#"["x", ""]"#),
            ],
            &mut problems,
        );
        // 1e40 overflows f32 to infinity: refused as not finite
        assert_eq!(m.latent_kl, None);
        assert!(problems[0].contains("finite"), "{problems:?}");
        assert_eq!(m.latent_names, Some(vec!["x".to_string(), String::new()]));
        let mut problems = vec![];
        let m = RawMeta::from_pairs([("bvae.beta", "NaN"), ("bvae.gamma", "inf")], &mut problems);
        assert_eq!((m.beta, m.gamma), (None, None));
        assert!(
            problems.iter().all(|p| p.contains("finite")),
            "{problems:?}"
        );
        let huge = "x".repeat(10_000);
        let mut problems = vec![];
        RawMeta::from_pairs([("bvae.height", huge.as_str())], &mut problems);
        assert!(problems[0].len() < 300, "{}", problems[0]);
    }
}
