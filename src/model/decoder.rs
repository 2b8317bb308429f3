//! The decoder model (`NAME.decoder.onnx`: `z` → `recon`) of an encoder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::contract::describe_ports;
use super::graph::{
    analyse, broken, find_output, guarded, optimize, oversized_tensors, tract_err, translate,
};
use super::onnx::read_onnx;
use super::{Dim, INPUT_Z, MAX_BATCH_INPUT_BYTES, Model, OUTPUT_RECON, Runtime};
use crate::error::ModelError;

/// A loaded decoder model (`NAME.decoder.onnx`: `z` → `recon`), checked
/// against the encoder it belongs to.
#[derive(Debug)]
pub struct Decoder {
    path: PathBuf,
    runnable: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    batch: usize,
    latent_dim: usize,
    image_len: usize,
    runtime: Runtime,
}

impl Decoder {
    /// Loads the decoder of `encoder` (checked against its latent size and
    /// image shape), planned for `batch` latent vectors at a time and run
    /// with the encoder's [`super::Runtime`].
    pub fn load(
        path: impl AsRef<Path>,
        encoder: &Model,
        batch: usize,
    ) -> Result<Decoder, ModelError> {
        let path = path.as_ref();
        let spec = encoder.spec();
        let file = read_onnx(path)?;
        let mut problems = file.problems.clone();
        let fail = |problems: Vec<String>| broken(path, problems);
        let z = spec.latent_dim;
        if batch == 0
            || batch
                .checked_mul(spec.image_len().max(z) * 4)
                .is_none_or(|b| b > MAX_BATCH_INPUT_BYTES)
        {
            return Err(ModelError::Usage(format!(
                "a decoder batch of {batch} is not possible: expected 1 or more latent vectors \
                 whose images add up to at most {} MiB",
                MAX_BATCH_INPUT_BYTES >> 20
            )));
        }
        match file.inputs.iter().find(|p| p.name == INPUT_Z) {
            Some(p) if file.inputs.len() == 1 => {
                if let Some(dims) = &p.shape
                    && (dims.len() != 2 || matches!(dims[1], Dim::Fixed(d) if d != z))
                {
                    problems.push(format!(
                        "input `z`: expected [N, {z}] to match the encoder's {z} latents, found {}",
                        p.shape_text()
                    ));
                }
            }
            _ => problems.push(format!(
                "expected one input named `z` (float32 [N, {z}]), found {}",
                describe_ports(&file.inputs)
            )),
        }
        if !file.outputs.iter().any(|p| p.name == OUTPUT_RECON) {
            problems.push(format!(
                "expected an output named `recon`; the outputs are {}",
                describe_ports(&file.outputs)
            ));
        }
        if let Some(m) = file.meta.latent_dim
            && m != z
        {
            problems.push(format!(
                "metadata `bvae.latent_dim` is {m}, but the encoder has {z} latents"
            ));
        }
        let inference = translate(&file, path, problems)?;
        let what = || format!("cannot build a plan for decoder {}", path.display());
        let mut typed = guarded(what(), || analyse(&inference, &[batch, z]))?;
        let big = oversized_tensors(&typed, &format!("a batch of {batch}"));
        if !big.is_empty() {
            return Err(fail(big));
        }
        let outlet = find_output(&typed, OUTPUT_RECON)
            .ok_or_else(|| fail(vec!["output `recon` not found after analysis".into()]))?;
        let shape = typed
            .outlet_fact(outlet)
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()));
        let expected = [batch, spec.channels, spec.height, spec.width];
        if shape.as_deref() != Some(&expected[..]) {
            return Err(fail(vec![format!(
                "output `recon`: expected {expected:?} to match the encoder's images, found {shape:?}"
            )]));
        }
        typed
            .select_output_outlets(&[outlet])
            .map_err(tract_err(what()))?;
        let runnable = guarded(what(), || optimize(typed, encoder.runtime()))?;
        let state = TypedSimpleState::new(&runnable).map_err(tract_err(what()))?;
        Ok(Decoder {
            path: path.to_path_buf(),
            runnable,
            state,
            batch,
            latent_dim: z,
            image_len: spec.image_len(),
            runtime: encoder.runtime().clone(),
        })
    }

    /// Where the decoder was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Latent vectors per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Decodes `batch` latent vectors (`[batch, Z]` row-major) into `out`
    /// (`[batch, C, H, W]`).
    pub fn decode(&mut self, z: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        if z.len() != self.batch * self.latent_dim || out.len() != self.batch * self.image_len {
            return Err(ModelError::Usage(format!(
                "decoder expects {} latent values and {} output values, got {} and {}",
                self.batch * self.latent_dim,
                self.batch * self.image_len,
                z.len(),
                out.len()
            )));
        }
        let input = Tensor::from_shape(&[self.batch, self.latent_dim], z)
            .map_err(tract_err("decoder input"))?;
        let state = &mut self.state;
        let res = self
            .runtime
            .run(move || state.run(tvec![input.into_tvalue()]))
            .map_err(tract_err("decoding failed"))?;
        let r = res
            .first()
            .ok_or_else(|| ModelError::Usage("decoder produced no output".into()))?
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err("decoder output is not float32"))?;
        out.copy_from_slice(r);
        Ok(())
    }

    /// The optimised plan (for benchmarks).
    pub fn runnable(&self) -> &Arc<TypedRunnableModel> {
        &self.runnable
    }
}
