//! Plugs bvae's convolution ([`crate::conv`]) into a tract plan.
//!
//! [`substitute`] walks a decluttered typed model and replaces each 2-D
//! float convolution it can run faster (group 1, no dilation, explicit
//! padding, constant weights and bias, on a CPU with a micro-kernel), and
//! the ReLU that directly follows it when there is one, by a single
//! [`BvaeConv`] node. Everything else stays with tract. The substitution is
//! on by default; [`set_own_kernels`] turns it off (`bvae bench
//! --tract-conv` compares the two).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, LaneId, Op, OpState, StaticName, TypedModelPatch, as_op, ensure,
    format_err, not_out_of_plan, op_as_typed_op,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::conv::{ConvShape, PackedConv};

static OWN_KERNELS: AtomicBool = AtomicBool::new(true);

/// Whether plans built from now on use bvae's convolution where it applies
/// (`true`, the default) or tract's everywhere.
pub fn set_own_kernels(on: bool) {
    OWN_KERNELS.store(on, Ordering::Relaxed);
}

/// Whether plans use bvae's convolution (see [`set_own_kernels`]).
pub fn own_kernels() -> bool {
    OWN_KERNELS.load(Ordering::Relaxed)
}

/// A convolution (bias and optional ReLU fused) run by [`PackedConv`].
#[derive(Debug, Clone)]
pub struct BvaeConv {
    packed: Arc<PackedConv>,
}

impl PartialEq for BvaeConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.packed, &other.packed) || self.packed == other.packed
    }
}

impl Eq for BvaeConv {}

impl BvaeConv {
    /// Convolves every image of `input` (`[N, C, H, W]`).
    fn convolve(&self, input: &TValue, scratch: &mut Vec<f32>) -> TractResult<TValue> {
        let p = &self.packed;
        let s = p.shape();
        let shape = input.shape();
        ensure!(
            shape.len() == 4 && shape[1..] == [s.ic, s.ih, s.iw],
            "BvaeConv expects [N, {}, {}, {}], got {:?}",
            s.ic,
            s.ih,
            s.iw,
            shape
        );
        let n = shape[0];
        let (oh, ow) = p.output_hw();
        let fresh = scratch.len() < p.scratch_len();
        if fresh {
            scratch.resize(p.scratch_len(), 0.0);
        }
        // SAFETY: every value of the output is written below.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[n, s.oc, oh, ow])? };
        {
            let x = input.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let mut o = out.try_as_plain_ram_mut()?;
            let o = o.as_slice_mut::<f32>()?;
            for (i, (src, dst)) in x
                .chunks_exact(s.input_len())
                .zip(o.chunks_exact_mut(p.output_len()))
                .enumerate()
            {
                p.run(src, scratch, fresh && i == 0, dst);
            }
        }
        Ok(out.into_tvalue())
    }
}

impl Op for BvaeConv {
    fn name(&self) -> StaticName {
        "BvaeConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let s = self.packed.shape();
        Ok(vec![format!(
            "{}→{} channels, {}×{} kernel, stride {}×{}, pads {:?}, relu {}, {:?}",
            s.ic,
            s.oc,
            s.kh,
            s.kw,
            s.sh,
            s.sw,
            s.pads,
            self.packed.relu(),
            self.packed.isa()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for BvaeConv {
    not_out_of_plan!();

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(ConvState { scratch: vec![] })))
    }
}

/// The per-session scratch of a [`BvaeConv`]: the zero-bordered input,
/// allocated on the first frame and reused.
#[derive(Debug, Clone)]
struct ConvState {
    scratch: Vec<f32>,
}

impl OpState for ConvState {
    fn eval(
        &mut self,
        _ctx: &EvalContext,
        op: &dyn Op,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let op = op
            .downcast_ref::<BvaeConv>()
            .ok_or_else(|| format_err!("BvaeConv state run with another op"))?;
        let input = inputs
            .first()
            .ok_or_else(|| format_err!("BvaeConv needs an input"))?;
        Ok(tvec![op.convolve(input, &mut self.scratch)?])
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

impl TypedOp for BvaeConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let s = self.packed.shape();
        let input = inputs
            .first()
            .ok_or_else(|| format_err!("BvaeConv needs an input"))?;
        ensure!(input.rank() == 4, "BvaeConv input must be 4-D");
        let (oh, ow) = self.packed.output_hw();
        let n = input.shape[0].clone();
        Ok(tvec![f32::fact(&[n, s.oc.into(), oh.into(), ow.into()])])
    }

    as_op!();
}

/// A convolution's shape with its constant weights and bias.
type Convertible = (ConvShape, Arc<Tensor>, Arc<Tensor>);

/// The shape of a convolution node that bvae's kernel can run, its constant
/// weights and bias.
fn convertible(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Convertible>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let ps = &conv.pool_spec;
    if conv.group != 1
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || ps.data_format != DataFormat::NCHW
        || ps.kernel_shape.len() != 2
        || node.inputs.len() != 3
        || ps
            .dilations
            .as_ref()
            .is_some_and(|d| d.iter().any(|&d| d != 1))
    {
        return Ok(None);
    }
    let (before, after) = match &ps.padding {
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, false) => {
            (b.clone(), a.clone())
        }
        PaddingSpec::Valid => (tvec![0, 0], tvec![0, 0]),
        _ => return Ok(None),
    };
    if before.len() != 2 || after.len() != 2 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(dims) = input.shape.as_concrete() else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type() || dims.len() != 4 {
        return Ok(None);
    }
    let kernel = model.outlet_fact(node.inputs[1])?.konst.clone();
    let bias = model.outlet_fact(node.inputs[2])?.konst.clone();
    let (Some(kernel), Some(bias)) = (kernel, bias) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let strides = ps.strides.clone().unwrap_or_else(|| tvec![1, 1]);
    if strides.len() != 2 {
        return Ok(None);
    }
    let shape = ConvShape {
        ic: dims[1],
        ih: dims[2],
        iw: dims[3],
        oc: ps.output_channels,
        kh: ps.kernel_shape[0],
        kw: ps.kernel_shape[1],
        sh: strides[0],
        sw: strides[1],
        pads: [before[0], before[1], after[0], after[1]],
    };
    if kernel.shape() != [shape.oc, shape.ic, shape.kh, shape.kw] {
        return Ok(None);
    }
    Ok(Some((shape, kernel, bias)))
}

/// The ReLU (`max(x, 0)` with a constant zero) that is the only consumer of
/// `outlet`, if there is one.
fn following_relu(model: &TypedModel, outlet: OutletId) -> TractResult<Option<usize>> {
    if model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let succ = model.outlet_successors(outlet);
    let [inlet] = succ else {
        return Ok(None);
    };
    let node = model.node(inlet.node);
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != "Max" || node.inputs.len() != 2 {
        return Ok(None);
    }
    let other = node.inputs[1 - inlet.slot];
    let Some(zero) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    if zero.datum_type() != f32::datum_type() || zero.len() != 1 {
        return Ok(None);
    }
    let value = zero.try_as_plain_ram()?.as_slice::<f32>()?.first().copied();
    let out_shape = &model.outlet_fact(OutletId::new(node.id, 0))?.shape;
    let in_shape = &model.outlet_fact(outlet)?.shape;
    Ok((value == Some(0.0) && out_shape == in_shape).then_some(node.id))
}

/// Replaces the convolutions of `model` (decluttered, concrete shapes) that
/// bvae's kernel runs faster, with their following ReLU. Returns how many
/// were replaced; none when [`own_kernels`] is off or the CPU has no kernel.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    if !own_kernels() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some((shape, kernel, bias)) = convertible(model, node)? else {
            continue;
        };
        let out = OutletId::new(id, 0);
        let relu = following_relu(model, out)?;
        let weights = kernel.try_as_plain_ram()?;
        let weights = weights.as_slice::<f32>()?;
        let bias_values = bias.try_as_plain_ram()?;
        let bias_values = bias_values.as_slice::<f32>()?;
        let bias_full: Vec<f32> = match bias_values.len() {
            n if n == shape.oc => bias_values.to_vec(),
            1 => vec![bias_values[0]; shape.oc],
            _ => continue,
        };
        let Some(packed) = PackedConv::new(shape, weights, Some(&bias_full), relu.is_some()) else {
            continue;
        };
        let mut patch = TypedModelPatch::new("bvae convolution");
        let tap = patch.tap_model(model, node.inputs[0])?;
        let name = match relu {
            Some(r) => model.node(r).name.clone(),
            None => node.name.clone(),
        };
        let wired = patch.wire_node(
            name,
            BvaeConv {
                packed: Arc::new(packed),
            },
            &[tap],
        )?[0];
        let replaced_outlet = OutletId::new(relu.unwrap_or(id), 0);
        patch.shunt_outside(model, replaced_outlet, wired)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
