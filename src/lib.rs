//! bvae: a β-VAE anomaly detector for cameras on small ARM boards.
//!
//! The library loads any ONNX β-VAE that follows the model contract
//! ([`model`]), turns frames into model inputs ([`preprocess`]), scores them
//! ([`score`]) and calibrates the decision on normal data ([`calibrate`]).
//! The `bvae` binary is a thin command line over it ([`cli`]).

pub mod calibrate;
pub mod cli;
pub mod display;
pub mod drift;
pub mod error;
pub mod explain;
pub mod frame;
pub mod heat;
pub mod imageio;
pub mod kernels;
pub mod live;
pub mod mask;
pub mod meta;
pub mod model;
pub mod mqtt;
pub mod noise;
pub mod pipeline;
pub mod preprocess;
pub mod probe;
pub mod reference;
pub mod rng;
pub mod score;
pub mod source;
pub mod stats;
pub mod tiles;
pub mod tract_conv;
pub mod traverse;
#[cfg(feature = "http")]
pub mod web;

pub use error::{ModelError, ProfileError};
pub use meta::{Likelihood, ModelSpec, Objective};
pub use model::{Decoder, Model, Plan, PlanKind, Session};
