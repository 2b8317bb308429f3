//! Sessions: one stream's reusable state of a plan, its input buffer and
//! its outputs.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::graph::tract_err;
use super::{OUTPUT_LOGVAR, OUTPUT_MU, OUTPUT_RECON, Plan, PlanKind};
use crate::error::ModelError;

/// The time one operator of a plan took ([`Session::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The node's name in the plan.
    pub name: String,
    /// The operator's name (`BvaeConv` for bvae's kernels).
    pub op: String,
    /// What the operator says of itself (shapes, fused ReLU, variant).
    pub info: String,
    /// Median time over the runs.
    pub median: std::time::Duration,
}

/// One stream's reusable inference state.
#[derive(Debug)]
pub struct Session {
    plan: Plan,
    state: TypedSimpleState,
    input: Arc<Tensor>,
    outputs: TVec<TValue>,
    /// Outputs of a batch run image by image (`mu`, `logvar`, `recon`),
    /// empty when the plan runs the whole batch at once.
    gathered: Vec<Vec<f32>>,
    /// The one-image input of a batch run image by image.
    single: Arc<Tensor>,
    ran: bool,
}

impl Session {
    /// One reusable state and input buffer of `plan` for a stream.
    pub(super) fn new(plan: &Plan) -> Result<Session, ModelError> {
        let state = TypedSimpleState::new(&plan.runnable)
            .map_err(tract_err("cannot start a tract session"))?;
        let s = &plan.spec;
        let input = Tensor::zero::<f32>(&[plan.batch, s.channels, s.height, s.width])
            .map_err(tract_err("cannot allocate the input tensor"))?;
        let (z, image) = (s.latent_dim, s.image_len());
        let gathered = if plan.run_batch == plan.batch {
            vec![]
        } else {
            let mut g = vec![vec![0.0; plan.batch * z], vec![0.0; plan.batch * z]];
            if plan.kind == PlanKind::Full {
                g.push(vec![0.0; plan.batch * image]);
            }
            g
        };
        Ok(Session {
            plan: plan.clone(),
            state,
            input: Arc::new(input),
            outputs: tvec![],
            gathered,
            single: Arc::new(
                Tensor::zero::<f32>(&[1, s.channels, s.height, s.width])
                    .map_err(tract_err("cannot allocate the input tensor"))?,
            ),
            ran: false,
        })
    }

    /// The plan this session runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The input buffer, `[batch, C, H, W]` in row-major order, values in
    /// [0, 1]. Fill it, then call [`Session::run`].
    pub fn input_mut(&mut self) -> Result<&mut [f32], ModelError> {
        self.outputs.clear();
        self.ran = false;
        if Arc::get_mut(&mut self.input).is_none() {
            // tract kept a reference to the last input: start a new buffer
            // rather than write into one it may still read.
            let shape = self.input.shape().to_vec();
            self.input = Arc::new(
                Tensor::zero::<f32>(&shape)
                    .map_err(tract_err("cannot allocate the input tensor"))?,
            );
        }
        let t = Arc::get_mut(&mut self.input).ok_or_else(|| {
            ModelError::Usage("the input tensor is still shared with tract".into())
        })?;
        t.to_plain_array_view_mut::<f32>()
            .map_err(tract_err("input tensor is not float32"))?
            .into_slice()
            .ok_or_else(|| ModelError::Usage("input tensor is not contiguous".into()))
    }

    /// The input buffer as last filled.
    pub fn input(&self) -> Result<&[f32], ModelError> {
        self.input
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err("input tensor is not float32"))
    }

    /// Runs the plan on the current input buffer.
    pub fn run(&mut self) -> Result<(), ModelError> {
        self.outputs.clear();
        self.ran = false;
        if self.gathered.is_empty() {
            let (state, input) = (&mut self.state, self.input.clone());
            let runtime = &self.plan.runtime;
            self.outputs = runtime
                .run(move || state.run(tvec![TValue::from_const(input)]))
                .map_err(tract_err("inference failed"))?;
        } else {
            self.plan
                .runtime
                .clone()
                .run(|| self.run_image_by_image())?;
        }
        self.ran = true;
        Ok(())
    }

    /// Runs the batch-1 plan on each image of the batch and gathers the outputs.
    fn run_image_by_image(&mut self) -> Result<(), ModelError> {
        let s = &self.plan.spec;
        let image = s.image_len();
        let shape = [1, s.channels, s.height, s.width];
        let all = self
            .input
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err("input tensor is not float32"))?;
        for (i, src) in all.chunks_exact(image).enumerate() {
            if Arc::get_mut(&mut self.single).is_none() {
                self.single = Arc::new(
                    Tensor::zero::<f32>(&shape)
                        .map_err(tract_err("cannot allocate the input tensor"))?,
                );
            }
            Arc::get_mut(&mut self.single)
                .ok_or_else(|| ModelError::Usage("the input tensor is still shared".into()))?
                .to_plain_array_view_mut::<f32>()
                .map_err(tract_err("input tensor is not float32"))?
                .into_slice()
                .ok_or_else(|| ModelError::Usage("input tensor is not contiguous".into()))?
                .copy_from_slice(src);
            let out = self
                .state
                .run(tvec![TValue::from_const(self.single.clone())])
                .map_err(tract_err("inference failed"))?;
            for (k, dst) in self.gathered.iter_mut().enumerate() {
                let v = out
                    .get(k)
                    .ok_or_else(|| ModelError::Usage("the plan produced too few outputs".into()))?
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>())
                    .map_err(tract_err("an output is not float32"))?;
                let n = v.len();
                dst[i * n..(i + 1) * n].copy_from_slice(v);
            }
        }
        Ok(())
    }

    /// Copies `images` (length `batch·C·H·W`) into the input and runs.
    pub fn run_on(&mut self, images: &[f32]) -> Result<(), ModelError> {
        let input = self.input_mut()?;
        if images.len() != input.len() {
            return Err(ModelError::Usage(format!(
                "expected {} input values ({} images of {}), found {}",
                input.len(),
                self.plan.batch,
                self.plan.spec.image_len(),
                images.len()
            )));
        }
        input.copy_from_slice(images);
        self.run()
    }

    fn output(&self, ix: usize, name: &str) -> Result<&[f32], ModelError> {
        if !self.gathered.is_empty() {
            return match self.gathered.get(ix) {
                Some(v) if self.ran => Ok(v),
                _ => Err(ModelError::Usage(format!(
                    "no `{name}` output: run the session first"
                ))),
            };
        }
        let t = self.outputs.get(ix).ok_or_else(|| {
            ModelError::Usage(format!("no `{name}` output: run the session first"))
        })?;
        t.try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err(format!("output `{name}` is not float32")))
    }

    /// Runs the plan `runs` times on the current input (batch-1 plans) and
    /// times each of its operators: the median per operator, in the plan's
    /// order. For `bvae bench --layers`. Ends with one plain run, so the
    /// outputs are those of the current input, as after [`Session::run`].
    pub fn profile(&mut self, runs: usize) -> Result<Vec<OpTime>, ModelError> {
        if !self.gathered.is_empty() {
            return Err(ModelError::Usage(
                "operator timings are for batch-1 plans".into(),
            ));
        }
        self.outputs.clear();
        self.ran = false;
        let nodes = self.plan.runnable.model().nodes().len();
        let mut times = vec![Vec::with_capacity(runs); nodes];
        for _ in 0..runs.max(1) {
            let (state, input) = (&mut self.state, self.input.clone());
            let times = &mut times;
            self.plan
                .runtime
                .run(move || {
                    state.run_plan_with_eval(
                        tvec![TValue::from_const(input)],
                        |ctx, op_state, node, inputs| {
                            let start = std::time::Instant::now();
                            let out =
                                tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                            times[node.id].push(start.elapsed());
                            out
                        },
                    )
                })
                .map_err(tract_err("inference failed"))?;
        }
        let model = self.plan.runnable.model();
        let mut out = vec![];
        for &id in self.plan.runnable.order_without_consts() {
            let t = &mut times[id];
            if t.is_empty() {
                continue;
            }
            t.sort();
            let node = model.node(id);
            out.push(OpTime {
                name: node.name.clone(),
                op: node.op.name().to_string(),
                info: node.op.info().unwrap_or_default().join(" "),
                median: t[t.len() / 2],
            });
        }
        self.run()?;
        Ok(out)
    }

    /// Latent means of the last run, `[batch, Z]` row-major.
    pub fn mu(&self) -> Result<&[f32], ModelError> {
        self.output(0, OUTPUT_MU)
    }

    /// Latent log-variances of the last run, `[batch, Z]`.
    pub fn logvar(&self) -> Result<&[f32], ModelError> {
        self.output(1, OUTPUT_LOGVAR)
    }

    /// Reconstructions of the last run, `[batch, C, H, W]`; `None` for an
    /// encoder-only plan.
    pub fn recon(&self) -> Result<Option<&[f32]>, ModelError> {
        match self.plan.kind {
            PlanKind::EncoderOnly => Ok(None),
            PlanKind::Full => self.output(2, OUTPUT_RECON).map(Some),
        }
    }
}
