//! The encoder model (`NAME.onnx`): loaded, checked against the contract
//! and analysed once for a batch of one image.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;

use super::contract::{check_analysed, check_declared_input, check_declared_outputs};
use super::graph::{analyse, broken, guarded, translate};
use super::onnx::{ParsedFile, model_dir, parse_onnx, read_onnx};
use super::{Port, Runtime};
use crate::error::ModelError;
use crate::meta::{DEFAULT_BETA, DEFAULT_LIKELIHOOD, ModelSpec, Objective, RawMeta};

/// A loaded β-VAE encoder model (`NAME.onnx`) that follows the contract.
#[derive(Debug, Clone)]
pub struct Model {
    path: PathBuf,
    sha256: String,
    spec: ModelSpec,
    meta: RawMeta,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    pub(super) inference: InferenceModel,
    /// The graph analysed for a batch of one image: every plan starts here,
    /// so planning does not analyse the graph again.
    pub(super) typed1: TypedModel,
    /// The threads and kernels its plans run with.
    pub(super) runtime: Runtime,
    load_time: Duration,
}

impl Model {
    /// Loads and validates an encoder model. Every contract violation found
    /// is listed in the error, each saying what was expected and found.
    /// Its plans run on one thread ([`Runtime::default`]) until
    /// [`Model::with_runtime`] says otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let start = Instant::now();
        let path = path.as_ref();
        let file = read_onnx(path)?;
        Model::from_parsed(file, path, start)
    }

    /// Loads and validates an encoder model from the bytes of an ONNX file,
    /// as [`Model::load`] would from `path`: `path` names the model in
    /// errors, and its folder holds any external weight files.
    pub fn load_bytes(bytes: &[u8], path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let start = Instant::now();
        let path = path.as_ref();
        let file = parse_onnx(bytes, path, &model_dir(path))?;
        Model::from_parsed(file, path, start)
    }

    /// The same model with its plans run by `runtime` (threads, kernels).
    pub fn with_runtime(mut self, runtime: Runtime) -> Model {
        self.runtime = runtime;
        self
    }

    /// The runtime its plans run with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    fn from_parsed(file: ParsedFile, path: &Path, start: Instant) -> Result<Model, ModelError> {
        let mut problems = file.problems.clone();
        let meta = file.meta.clone();
        let input = check_declared_input(&file, &meta, &mut problems);
        check_declared_outputs(&file, &mut problems);
        let Some(input) = input else {
            return Err(broken(path, problems));
        };
        let inference = translate(&file, path, problems)?;
        // Let tract analyse the graph with a concrete shape.
        let typed = guarded(
            format!("cannot analyse the graph of {}", path.display()),
            || analyse(&inference, &input.shape(1)),
        )?;
        let mut problems = vec![];
        let z = check_analysed(&typed, &input, &meta, &mut problems);
        let illumination = match (meta.illumination, meta.illumination_mean) {
            (Some(true), Some(mean)) => Some(mean),
            (Some(true), None) => {
                problems.push(
                    "metadata `bvae.illumination` is \"gain\" but `bvae.illumination_mean` \
                     (the mean input value to scale to) is missing or invalid"
                        .to_string(),
                );
                None
            }
            _ => None,
        };
        let Some(z) = z.filter(|_| problems.is_empty()) else {
            return Err(broken(path, problems));
        };
        let objective = meta.objective.unwrap_or(Objective::Beta);
        let beta = match objective {
            Objective::Beta => meta.beta.unwrap_or(DEFAULT_BETA),
            Objective::Capacity => DEFAULT_BETA,
        };
        let spec = ModelSpec {
            channels: input.channels,
            height: input.height,
            width: input.width,
            latent_dim: z,
            likelihood: meta.likelihood.unwrap_or(DEFAULT_LIKELIHOOD),
            objective,
            beta,
            latent_kl: meta.latent_kl.clone(),
            latent_names: meta.latent_names.clone(),
            max_batch: input.max_batch,
            illumination,
        };
        Ok(Model {
            path: path.to_path_buf(),
            sha256: file.sha256,
            spec,
            meta,
            inputs: file.inputs,
            outputs: file.outputs,
            inference,
            typed1: typed,
            runtime: Runtime::default(),
            load_time: start.elapsed(),
        })
    }

    /// The model's resolved description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The metadata as found in the file.
    pub fn meta(&self) -> &RawMeta {
        &self.meta
    }

    /// SHA-256 of the model file (and of its external weight files).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Graph inputs as declared in the file.
    pub fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    /// Graph outputs as declared in the file.
    pub fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// Time taken by [`Model::load`] (read, parse, validate).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
}
