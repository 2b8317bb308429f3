//! The tract steps the encoder and the decoder share: translating a
//! checked ONNX file into a tract graph, analysing it for concrete input
//! shapes, and optimising it into a runnable plan with bvae's kernels
//! substituted where the runtime allows them.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::onnx::ParsedFile;
use super::{MAX_TENSOR_BYTES, Runtime};
use crate::error::ModelError;

/// A tract error as a [`ModelError::Runtime`] saying what failed.
pub(super) fn tract_err<E: Into<anyhow::Error>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> ModelError {
    let what = what.into();
    move |e| ModelError::Runtime {
        what,
        cause: e.into(),
    }
}

/// The error listing the contract `problems` of the file at `path`.
pub(super) fn broken(path: &Path, problems: Vec<String>) -> ModelError {
    ModelError::Contract {
        path: path.to_path_buf(),
        problems,
    }
}

/// Runs one tract step (parsing, analysis, optimisation) and turns a panic
/// inside it, on a malformed graph tract does not check, into an error
/// rather than a crash of the whole process.
pub(super) fn guarded<T>(
    what: impl Into<String>,
    step: impl FnOnce() -> TractResult<T>,
) -> Result<T, ModelError> {
    let what = what.into();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(r) => r.map_err(tract_err(what)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ModelError::Runtime {
                what,
                cause: anyhow::anyhow!(
                    "tract failed on a malformed graph ({msg}); check the model with \
                     onnx.checker.check_model or export it again"
                ),
            })
        }
    }
}

/// The ONNX parser as this runtime uses it. Shapes declared on outputs and
/// intermediate values are ignored: exporters name the batch dimension
/// symbolically there (torch's dynamo exporter does), which conflicts with
/// the concrete batch size every plan is built for; tract infers them anew.
fn onnx_parser() -> tract_onnx::Onnx {
    onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
}

/// The loading prelude of the encoder and the decoder: refuses the file
/// when `problems` (those its reading found, and the contract checks'
/// so far) is not empty, else translates it into a tract graph (external
/// weights are read from the model's folder) that reads nothing undefined.
pub(super) fn translate(
    file: &ParsedFile,
    path: &Path,
    problems: Vec<String>,
) -> Result<InferenceModel, ModelError> {
    if !problems.is_empty() {
        return Err(broken(path, problems));
    }
    let dir = path
        .parent()
        .and_then(|d| d.to_str())
        .map(|d| if d.is_empty() { "." } else { d });
    let parsed = guarded(
        format!("cannot translate {} into a tract graph", path.display()),
        || onnx_parser().parse(&file.proto, dir),
    )?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(broken(
            path,
            vec![format!(
                "the graph reads tensors that nothing defines: {:?}",
                parsed.unresolved_inputs
            )],
        ));
    }
    Ok(parsed.model)
}

/// `inference` analysed with its first input fixed to float32 of `shape`.
pub(super) fn analyse(inference: &InferenceModel, shape: &[usize]) -> TractResult<TypedModel> {
    let mut m = inference.clone();
    m.set_input_fact(
        0,
        InferenceFact::dt_shape(
            f32::datum_type(),
            shape.iter().copied().collect::<TVec<_>>(),
        ),
    )?;
    m.into_typed()
}

/// Declutters `typed`, hands the convolutions and dense layers bvae runs
/// faster to its own kernels ([`crate::tract_conv`]) when `runtime` allows
/// them, optimises the rest with tract and makes it runnable.
pub(super) fn optimize(
    typed: TypedModel,
    runtime: &Runtime,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut typed = typed.into_decluttered()?;
    if let Some(isa) = runtime.kernels().isa() {
        crate::tract_conv::substitute(&mut typed, isa)?;
    }
    typed.into_optimized()?.into_runnable()
}

/// Most oversized tensors [`oversized_tensors`] reports.
const MAX_OVERSIZED_LISTED: usize = 5;

/// The values of an analysed graph (for `what`, e.g. one image) larger
/// than [`MAX_TENSOR_BYTES`]: refused before a plan allocates them.
pub(super) fn oversized_tensors(model: &TypedModel, what: &str) -> Vec<String> {
    let mut out = vec![];
    for node in model.nodes() {
        for o in &node.outputs {
            let Some(shape) = o.fact.shape.as_concrete() else {
                continue;
            };
            let bytes = shape
                .iter()
                .try_fold(o.fact.datum_type.size_of(), |acc, &d| acc.checked_mul(d));
            if bytes.is_none_or(|b| b > MAX_TENSOR_BYTES) {
                out.push(format!(
                    "node `{}` ({}) computes a {:?} tensor of {:?} for {what}, more than {} MiB; \
                     expected at most that per tensor (export the model for a smaller input)",
                    node.name,
                    node.op.name(),
                    o.fact.datum_type,
                    shape,
                    MAX_TENSOR_BYTES >> 20
                ));
                if out.len() == MAX_OVERSIZED_LISTED {
                    return out;
                }
            }
        }
    }
    out
}

/// The output of an analysed graph named `name` (by its label, else by
/// its node's name).
pub(super) fn find_output(model: &TypedModel, name: &str) -> Option<OutletId> {
    let outs = model.output_outlets().ok()?;
    outs.iter()
        .copied()
        .find(|o| model.outlet_label(*o) == Some(name))
        .or_else(|| {
            outs.iter()
                .copied()
                .find(|o| model.node(o.node).name == name)
        })
}
