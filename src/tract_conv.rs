//! Plugs bvae's convolution ([`crate::kernels::conv`]) and fully connected
//! layer ([`crate::kernels::dense`]) into a tract plan.
//!
//! [`substitute`] walks a decluttered typed model and replaces each 2-D
//! float convolution it can run faster (group 1, no dilation, explicit
//! padding, constant weights and bias, on a CPU with a micro-kernel), and
//! the ReLU that directly follows it when there is one, by a single
//! [`BvaeConv`] node. It does the same for each fully connected layer of
//! one image (a float `EinSum` of the activations with a constant matrix,
//! then the bias `Add` and the ReLU when they follow). Everything else stays
//! with tract. Plans call it unless their runtime says otherwise
//! ([`crate::model::RuntimeOptions::kernels`]; `bvae bench --tract-conv`
//! compares the two).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{
    EvalContext, EvalOp, LaneId, Op, OpState, StaticName, TypedModelPatch, as_op, ensure,
    format_err, not_out_of_plan, op_as_typed_op,
};
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::kernels::Isa;
use crate::kernels::conv::{ConvShape, DeconvShape, PackedConv, PackedDeconv};
use crate::kernels::dense::PackedDense;

/// Fewest outputs of a dense layer that bvae's kernel takes: below that
/// the padding to a group of outputs wastes most of the work. At 10 (the
/// `mu` and `logvar` heads of a 10-latent model, each a slice of one
/// layer) the kernel still beats tract's packing and product: 1.6 against
/// 2.7 µs per head (Zen 3, AVX2).
pub const MIN_DENSE_OUTPUTS: usize = 4;

/// What a [`BvaeConv`] node computes.
#[derive(Debug, Clone, PartialEq)]
enum Kernel {
    Conv(PackedConv),
    Deconv(PackedDeconv),
    /// A fully connected layer of one image, and the shape of its output.
    Dense(PackedDense, Vec<usize>),
}

/// A convolution, transposed convolution or fully connected layer (bias and
/// optional ReLU fused) run by bvae's kernels ([`PackedConv`],
/// [`PackedDeconv`], [`PackedDense`]).
#[derive(Debug, Clone)]
pub struct BvaeConv {
    kernel: Arc<Kernel>,
}

impl PartialEq for BvaeConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.kernel, &other.kernel) || self.kernel == other.kernel
    }
}

impl Eq for BvaeConv {}

impl BvaeConv {
    /// Input `[C, H, W]` and output `[C, H, W]` of one image (of a
    /// convolution: `[k, 1, 1]` and `[n, 1, 1]` for a dense layer).
    fn dims(&self) -> ([usize; 3], [usize; 3]) {
        match &*self.kernel {
            Kernel::Dense(d, _) => ([d.inputs(), 1, 1], [d.outputs(), 1, 1]),
            Kernel::Conv(p) => {
                let s = p.shape();
                let (oh, ow) = p.output_hw();
                ([s.ic, s.ih, s.iw], [s.oc, oh, ow])
            }
            Kernel::Deconv(p) => {
                let d = p.shape();
                ([d.ic, d.ih, d.iw], [d.oc, d.oh, d.ow])
            }
        }
    }

    /// Runs the dense layer `d` on one image.
    fn dense(d: &PackedDense, shape: &[usize], input: &TValue) -> TractResult<TValue> {
        ensure!(
            input.len() == d.inputs(),
            "bvae dense layer expects {} inputs, got {:?}",
            d.inputs(),
            input.shape()
        );
        // SAFETY: every value of the output is written below.
        let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
        {
            let x = input.try_as_plain_ram()?;
            let mut o = out.try_as_plain_ram_mut()?;
            d.run(x.as_slice::<f32>()?, o.as_slice_mut::<f32>()?);
        }
        Ok(out.into_tvalue())
    }

    /// Runs every image of `input` (`[N, C, H, W]`).
    fn convolve(&self, input: &TValue, state: &mut ConvState) -> TractResult<TValue> {
        if let Kernel::Dense(d, shape) = &*self.kernel {
            return Self::dense(d, shape, input);
        }
        let (din, dout) = self.dims();
        let shape = input.shape();
        ensure!(
            shape.len() == 4 && shape[1..] == din,
            "BvaeConv expects [N, {}, {}, {}], got {:?}",
            din[0],
            din[1],
            din[2],
            shape
        );
        let n = shape[0];
        let (scratch_len, phases_len) = match &*self.kernel {
            Kernel::Conv(p) => (p.scratch_len(), 0),
            Kernel::Deconv(p) => (p.scratch_len(), p.phases_len()),
            Kernel::Dense(..) => (0, 0),
        };
        // One padded input per member of the team that may take part.
        let scratch_len = scratch_len * crate::kernels::team::threads();
        let fresh = state.scratch.len() < scratch_len;
        if fresh {
            state.scratch.resize(scratch_len, 0.0);
        }
        if state.phases.len() < phases_len {
            state.phases.resize(phases_len, 0.0);
        }
        // SAFETY: every value of the output is written below.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[n, dout[0], dout[1], dout[2]])? };
        {
            let x = input.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let mut o = out.try_as_plain_ram_mut()?;
            let o = o.as_slice_mut::<f32>()?;
            let (ilen, olen) = (din.iter().product(), dout.iter().product());
            for (i, (src, dst)) in x
                .chunks_exact(ilen)
                .zip(o.chunks_exact_mut(olen))
                .enumerate()
            {
                let fresh = fresh && i == 0;
                match &*self.kernel {
                    Kernel::Conv(p) => p.run(src, &mut state.scratch, fresh, dst),
                    Kernel::Deconv(p) => {
                        p.run(src, &mut state.scratch, fresh, &mut state.phases, dst)
                    }
                    // Run by `dense` above, on the whole tensor.
                    Kernel::Dense(..) => {}
                }
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
        Ok(vec![match &*self.kernel {
            Kernel::Conv(p) => format!("{:?}, relu {}, {:?}", p.shape(), p.relu(), p.isa()),
            Kernel::Deconv(p) => format!("transposed {:?}, relu {}", p.shape(), p.relu()),
            Kernel::Dense(d, _) => {
                format!("dense {} -> {}, relu {}", d.inputs(), d.outputs(), d.relu())
            }
        }])
    }

    op_as_typed_op!();
}

impl EvalOp for BvaeConv {
    not_out_of_plan!();

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(Some(Box::new(ConvState {
            scratch: vec![],
            phases: vec![],
        })))
    }
}

/// The per-session scratch of a [`BvaeConv`]: the zero-bordered input and
/// the phases of a transposed convolution, allocated on the first frame and
/// reused.
#[derive(Debug, Clone)]
struct ConvState {
    scratch: Vec<f32>,
    phases: Vec<f32>,
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
        Ok(tvec![op.convolve(input, self)?])
    }

    fn reset_lanes(&mut self, _lanes: &[LaneId]) -> TractResult<()> {
        Ok(())
    }
}

impl TypedOp for BvaeConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs
            .first()
            .ok_or_else(|| format_err!("BvaeConv needs an input"))?;
        if let Kernel::Dense(_, shape) = &*self.kernel {
            return Ok(tvec![f32::fact(shape)]);
        }
        ensure!(input.rank() == 4, "BvaeConv input must be 4-D");
        let (_, [c, h, w]) = self.dims();
        let n = input.shape[0].clone();
        Ok(tvec![f32::fact(&[n, c.into(), h.into(), w.into()])])
    }

    as_op!();
}

/// A node bvae's kernels can run: its shape, constant weights and bias.
enum Candidate {
    Conv(ConvShape, Arc<Tensor>, Arc<Tensor>),
    Deconv(DeconvShape, Arc<Tensor>, Arc<Tensor>),
}

/// Input dimensions, strides, pads, kernel and bias (see [`common`]).
type Common = ([usize; 4], [usize; 2], [usize; 4], Arc<Tensor>, Arc<Tensor>);

/// The concrete input dimensions, strides, pads (top, left, bottom, right),
/// kernel and bias of a float 2-D NCHW convolution or transposed
/// convolution with group 1, no dilation and constant weights and bias.
fn common(
    model: &TypedModel,
    node: &TypedNode,
    ps: &PoolSpec,
    group: usize,
    kernel_fmt: &KernelFormat,
) -> TractResult<Option<Common>> {
    if group != 1
        || *kernel_fmt != KernelFormat::OIHW
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
    let strides = ps.strides.clone().unwrap_or_else(|| tvec![1, 1]);
    if before.len() != 2 || after.len() != 2 || strides.len() != 2 {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let Some(&[n, c, h, w]) = input.shape.as_concrete() else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type() {
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
    Ok(Some((
        [n, c, h, w],
        [strides[0], strides[1]],
        [before[0], before[1], after[0], after[1]],
        kernel,
        bias,
    )))
}

/// What bvae's kernels can run of `node`, if anything.
fn convertible(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Candidate>> {
    if let Some(conv) = node.op_as::<Conv>() {
        if conv.q_params.is_some() {
            return Ok(None);
        }
        let ps = &conv.pool_spec;
        let Some(([_, ic, ih, iw], [sh, sw], pads, kernel, bias)) =
            common(model, node, ps, conv.group, &conv.kernel_fmt)?
        else {
            return Ok(None);
        };
        let shape = ConvShape {
            ic,
            ih,
            iw,
            oc: ps.output_channels,
            kh: ps.kernel_shape[0],
            kw: ps.kernel_shape[1],
            sh,
            sw,
            pads,
        };
        if kernel.shape() != [shape.oc, shape.ic, shape.kh, shape.kw] {
            return Ok(None);
        }
        return Ok(Some(Candidate::Conv(shape, kernel, bias)));
    }
    if let Some(deconv) = node.op_as::<Deconv>() {
        let ps = &deconv.pool_spec;
        let Some(([_, ic, ih, iw], [sh, sw], pads, kernel, bias)) =
            common(model, node, ps, deconv.group, &deconv.kernel_format)?
        else {
            return Ok(None);
        };
        let out = model.outlet_fact(OutletId::new(node.id, 0))?;
        let Some(&[_, oc, oh, ow]) = out.shape.as_concrete() else {
            return Ok(None);
        };
        let shape = DeconvShape {
            ic,
            ih,
            iw,
            oc,
            kh: ps.kernel_shape[0],
            kw: ps.kernel_shape[1],
            sh,
            sw,
            pads: [pads[0], pads[1]],
            oh,
            ow,
        };
        if kernel.shape() != [oc, ic, shape.kh, shape.kw] {
            return Ok(None);
        }
        return Ok(Some(Candidate::Deconv(shape, kernel, bias)));
    }
    Ok(None)
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

/// The weights of a fully connected layer as they sit in its constant:
/// output `o`'s weight for input `j` (`j` in the order of the activations'
/// values) is `values[at[j] + o·step]`.
struct DenseWeights {
    /// The constant.
    tensor: Arc<Tensor>,
    /// Offset of each input's weight for output 0.
    at: Vec<usize>,
    /// Distance between the weights of neighbouring outputs.
    step: usize,
}

/// The inputs `k`, outputs `n` and weights of an `EinSum` that is a fully
/// connected layer of one image: a float product of the activations with a
/// constant, where every axis of the activations is summed over or of size
/// 1 and the constant keeps one axis (the outputs).
fn dense_candidate(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(usize, usize, DenseWeights)>> {
    let Some(op) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let facts = [
        model.outlet_fact(node.inputs[0])?,
        model.outlet_fact(node.inputs[1])?,
    ];
    let (xi, wi) = match (&facts[0].konst, &facts[1].konst) {
        (None, Some(_)) => (0, 1),
        (Some(_), None) => (1, 0),
        _ => return Ok(None),
    };
    let (Some(xs), Some(w)) = (facts[xi].shape.as_concrete(), facts[wi].konst.clone()) else {
        return Ok(None);
    };
    if facts[xi].datum_type != f32::datum_type() || w.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let ws = w.shape();
    // For each axis of the constant: the activations' axis it is summed
    // with, if any.
    let mut from_x: Vec<Option<usize>> = vec![None; ws.len()];
    let mut n_axis = None;
    for axis in op.axes.iter_all_axes() {
        let (x, k, out) = (&axis.inputs[xi], &axis.inputs[wi], &axis.outputs[0]);
        if x.len() > 1 || k.len() > 1 || out.len() > 1 {
            return Ok(None);
        }
        match (x.first(), k.first(), out.first()) {
            (Some(&px), Some(&pw), None) if xs[px] == ws[pw] => from_x[pw] = Some(px),
            (None, Some(&pw), Some(_)) if ws[pw] > 1 && n_axis.is_none() => n_axis = Some(pw),
            (Some(&px), _, _) if xs[px] == 1 && k.first().is_none_or(|&pw| ws[pw] == 1) => {}
            (None, Some(&pw), _) if ws[pw] == 1 => {}
            (None, None, _) => {}
            _ => return Ok(None),
        }
    }
    let n = n_axis.map_or(1, |a| ws[a]);
    let k: usize = xs.iter().product();
    let out = model.outlet_fact(OutletId::new(node.id, 0))?;
    if out.shape.as_concrete().map(|s| s.iter().product::<usize>()) != Some(n) {
        return Ok(None);
    }
    let strides: Vec<usize> = (0..ws.len())
        .map(|a| ws[a + 1..].iter().product())
        .collect();
    let mut at = Vec::with_capacity(k);
    let mut coords = vec![0usize; xs.len()];
    for j in 0..k {
        // `coords`: the activations' index of value `j` (row-major).
        let mut rest = j;
        for (a, c) in coords.iter_mut().enumerate().rev() {
            *c = rest % xs[a];
            rest /= xs[a];
        }
        at.push(
            (0..ws.len())
                .map(|a| from_x[a].map_or(0, |px| coords[px]) * strides[a])
                .sum(),
        );
    }
    let step = n_axis.map_or(0, |a| strides[a]);
    Ok(Some((
        k,
        n,
        DenseWeights {
            tensor: w,
            at,
            step,
        },
    )))
}

/// The bias `Add` (a constant of `n` values, or one) that is the only
/// consumer of `outlet` and keeps its `n` values: its node and the bias.
fn following_bias(
    model: &TypedModel,
    outlet: OutletId,
    n: usize,
) -> TractResult<Option<(usize, Vec<f32>)>> {
    if model.output_outlets()?.contains(&outlet) {
        return Ok(None);
    }
    let [inlet] = model.outlet_successors(outlet) else {
        return Ok(None);
    };
    let node = model.node(inlet.node);
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != "Add" || node.inputs.len() != 2 {
        return Ok(None);
    }
    let Some(bias) = model
        .outlet_fact(node.inputs[1 - inlet.slot])?
        .konst
        .clone()
    else {
        return Ok(None);
    };
    let out = model.outlet_fact(OutletId::new(node.id, 0))?;
    if bias.datum_type() != f32::datum_type()
        || out.shape.as_concrete().map(|s| s.iter().product::<usize>()) != Some(n)
    {
        return Ok(None);
    }
    let values = bias.try_as_plain_ram()?;
    let values = values.as_slice::<f32>()?;
    Ok(match values.len() {
        l if l == n => Some((node.id, values.to_vec())),
        1 => Some((node.id, vec![values[0]; n])),
        _ => None,
    })
}

/// Replaces the fully connected layer at `id` (with the bias and ReLU that
/// follow it) by a [`BvaeConv`] node; whether it did.
fn substitute_dense(model: &mut TypedModel, id: usize, isa: Isa) -> TractResult<bool> {
    let node = model.node(id);
    let Some((k, n, weights)) = dense_candidate(model, node)? else {
        return Ok(false);
    };
    if n < MIN_DENSE_OUTPUTS {
        return Ok(false);
    }
    let x = node.inputs[if model.outlet_fact(node.inputs[0])?.konst.is_none() {
        0
    } else {
        1
    }];
    let mut last = id;
    let bias = match following_bias(model, OutletId::new(id, 0), n)? {
        Some((add, b)) => {
            last = add;
            b
        }
        None => vec![0.0; n],
    };
    let relu = following_relu(model, OutletId::new(last, 0))?;
    let last = relu.unwrap_or(last);
    let Some(shape) = model
        .outlet_fact(OutletId::new(last, 0))?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
    else {
        return Ok(false);
    };
    let values = weights.tensor.try_as_plain_ram()?;
    let values = values.as_slice::<f32>()?;
    let DenseWeights { at, step, .. } = &weights;
    // Packed straight from the constant (a transposed copy first cost 2 ms
    // of the plan for a 1024×256 layer).
    let weight = |o: usize, j: usize| values[at[j] + o * step];
    let Some(dense) = PackedDense::from_fn(isa, k, n, weight, &bias, relu.is_some()) else {
        return Ok(false);
    };
    let mut patch = TypedModelPatch::new("bvae dense layer");
    let tap = patch.tap_model(model, x)?;
    let op = BvaeConv {
        kernel: Arc::new(Kernel::Dense(dense, shape)),
    };
    let wired = patch.wire_node(model.node(last).name.clone(), op, &[tap])?[0];
    patch.shunt_outside(model, OutletId::new(last, 0), wired)?;
    patch.apply(model)?;
    Ok(true)
}

/// Replaces the convolutions and fully connected layers of `model`
/// (decluttered, concrete shapes) that bvae's kernels run faster, with their
/// following bias and ReLU, with the kernels of variant `isa`. Returns how
/// many were replaced; none when this CPU cannot run `isa`.
pub fn substitute(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        if substitute_dense(model, id, isa)? {
            replaced += 1;
            continue;
        }
        let node = model.node(id);
        let Some(candidate) = convertible(model, node)? else {
            continue;
        };
        let relu = following_relu(model, OutletId::new(id, 0))?;
        let (oc, weights, bias) = match &candidate {
            Candidate::Conv(s, w, b) => (s.oc, w, b),
            Candidate::Deconv(s, w, b) => (s.oc, w, b),
        };
        let weights = weights.try_as_plain_ram()?;
        let weights = weights.as_slice::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let bias: Vec<f32> = match bias.len() {
            n if n == oc => bias.to_vec(),
            1 => vec![bias[0]; oc],
            _ => continue,
        };
        let kernel = match candidate {
            Candidate::Conv(s, ..) => {
                PackedConv::with_isa(isa, s, weights, Some(&bias), relu.is_some()).map(Kernel::Conv)
            }
            Candidate::Deconv(s, ..) => {
                PackedDeconv::with_isa(isa, s, weights, &bias, relu.is_some()).map(Kernel::Deconv)
            }
        };
        let Some(kernel) = kernel else {
            continue;
        };
        let mut patch = TypedModelPatch::new("bvae convolution");
        let tap = patch.tap_model(model, node.inputs[0])?;
        let name = match relu {
            Some(r) => model.node(r).name.clone(),
            None => node.name.clone(),
        };
        let op = BvaeConv {
            kernel: Arc::new(kernel),
        };
        let wired = patch.wire_node(name, op, &[tap])?[0];
        patch.shunt_outside(model, OutletId::new(relu.unwrap_or(id), 0), wired)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}
