//! Plans: a model's graph optimised for one set of outputs and one batch
//! size, with bvae's kernels substituted where its runtime allows them.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::graph::{analyse, find_output, guarded, optimize, oversized_tensors, tract_err};
use super::session::Session;
use super::{
    MAX_BATCH_INPUT_BYTES, Model, OUTPUT_LOGVAR, OUTPUT_MU, OUTPUT_RECON, PlanKind, Runtime,
};
use crate::error::ModelError;
use crate::meta::ModelSpec;

impl Model {
    /// Builds an optimised plan for `batch` images at a time. With a dynamic
    /// batch axis the plan is the batch-1 plan run once per image (see the
    /// module documentation); a graph with a fixed batch size is planned for
    /// that size.
    pub fn plan(&self, kind: PlanKind, batch: usize) -> Result<Plan, ModelError> {
        if batch == 0 {
            return Err(ModelError::Usage(
                "a batch must hold at least one image".into(),
            ));
        }
        if let Some(max) = self.spec().max_batch
            && batch != max
        {
            return Err(ModelError::Usage(format!(
                "{} has a fixed batch size of {max} in its graph, so it cannot run {batch} images at once; \
                 export it with a dynamic batch axis",
                self.path().display()
            )));
        }
        let s = self.spec();
        if batch
            .checked_mul(s.image_len() * 4)
            .is_none_or(|b| b > MAX_BATCH_INPUT_BYTES)
        {
            return Err(ModelError::Usage(format!(
                "a batch of {batch} images of {}×{}×{} is more than {} MiB of input; \
                 use a smaller batch",
                s.channels,
                s.height,
                s.width,
                MAX_BATCH_INPUT_BYTES >> 20
            )));
        }
        let what = || {
            format!(
                "cannot build a plan for {} (batch {batch})",
                self.path().display()
            )
        };
        // Images per run of the tract plan.
        let run_batch = if s.max_batch.is_some() { batch } else { 1 };
        let mut typed = if run_batch == 1 {
            self.typed1.clone()
        } else {
            let shape = [batch, s.channels, s.height, s.width];
            let typed = guarded(what(), || analyse(&self.inference, &shape))?;
            let big = oversized_tensors(&typed, &format!("a batch of {batch}"));
            if !big.is_empty() {
                return Err(ModelError::Contract {
                    path: self.path().to_path_buf(),
                    problems: big,
                });
            }
            typed
        };
        let names: &[&str] = match kind {
            PlanKind::Full => &[OUTPUT_MU, OUTPUT_LOGVAR, OUTPUT_RECON],
            PlanKind::EncoderOnly => &[OUTPUT_MU, OUTPUT_LOGVAR],
        };
        let mut outlets = Vec::with_capacity(names.len());
        for n in names {
            let o = find_output(&typed, n).ok_or_else(|| {
                ModelError::Usage(format!("output `{n}` disappeared from the graph"))
            })?;
            outlets.push(o);
        }
        typed
            .select_output_outlets(&outlets)
            .map_err(tract_err(what()))?;
        let runnable = guarded(what(), || optimize(typed, &self.runtime))?;
        Ok(Plan {
            runnable,
            kind,
            batch,
            run_batch,
            spec: self.spec().clone(),
            runtime: self.runtime.clone(),
        })
    }
}

/// An optimised plan for one batch size and one set of outputs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) runnable: Arc<TypedRunnableModel>,
    pub(super) kind: PlanKind,
    pub(super) batch: usize,
    /// Images per run of `runnable`: `batch`, or 1 when a batch runs image
    /// by image.
    pub(super) run_batch: usize,
    pub(super) spec: ModelSpec,
    /// The threads and kernels it runs with (its model's).
    pub(super) runtime: Runtime,
}

impl Plan {
    /// Which outputs the plan computes.
    pub fn kind(&self) -> PlanKind {
        self.kind
    }

    /// Images per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The model's description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The runtime it runs with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The optimised tract model (for tests and benchmarks).
    pub fn runnable(&self) -> &Arc<TypedRunnableModel> {
        &self.runnable
    }

    /// Spawns a session: one reusable state and input buffer for a stream.
    pub fn session(&self) -> Result<Session, ModelError> {
        Session::new(self)
    }
}
