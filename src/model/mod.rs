//! Loading a contract β-VAE with tract: file checks, contract validation,
//! optimised plans with concrete shapes, and reusable sessions.
//!
//! The steps, one file each:
//! - `onnx.rs`: the ONNX file as read, before any graph analysis: the
//!   protobuf, its ports and metadata, and every stored tensor's declared
//!   size against the bytes it holds;
//! - `contract.rs`: what an encoder must declare and compute (the ONNX
//!   contract of DESIGN.md), each problem said with what was expected;
//! - `graph.rs`: the tract steps shared by the encoder and the
//!   decoder: translating the file into a tract graph, analysing it for a
//!   concrete shape, optimising it with bvae's kernels substituted;
//! - [`Model`] (`encoder.rs`), [`Plan`] (`plan.rs`), [`Session`]
//!   (`session.rs`) and [`Decoder`] (`decoder.rs`);
//! - [`Runtime`] (`runtime.rs`): the threads and kernels plans run with.
//!
//! A [`Model`] is parsed and analysed once (for a batch of one image).
//! [`Model::plan`] optimises that analysed graph for one set of outputs
//! ([`PlanKind`]) and one batch size; a [`Session`] owns one spawned state of
//! a plan and its input buffer, and is reused for every frame of a stream.
//! Every plan runs with the [`Runtime`] of the model it was built from
//! ([`Model::with_runtime`]); nothing about threads or kernels is global, so
//! two models in one process can run with different settings.
//!
//! A batch of several images runs image by image through the batch-1 plan
//! (for models whose batch axis is dynamic): tract 0.23 lowers a batched
//! convolution to an explicit im2col whose buffer outgrows the caches, which
//! costs about twice as much per image as a batch of one.

mod contract;
mod decoder;
mod encoder;
mod graph;
mod onnx;
mod plan;
mod runtime;
mod session;

pub use decoder::Decoder;
pub use encoder::Model;
pub use onnx::{Dim, Port, hex};
pub use plan::Plan;
pub use runtime::{Runtime, RuntimeOptions};
pub use session::{OpTime, Session};

/// Name of the encoder's input tensor.
pub const INPUT_IMAGE: &str = "image";
/// Name of the latent mean output.
pub const OUTPUT_MU: &str = "mu";
/// Name of the latent log-variance output.
pub const OUTPUT_LOGVAR: &str = "logvar";
/// Name of the reconstruction output (of the encoder model and the decoder).
pub const OUTPUT_RECON: &str = "recon";
/// Name of the decoder's input tensor.
pub const INPUT_Z: &str = "z";

/// Largest model file accepted (protobuf itself cannot exceed 2 GiB).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Largest input height or width accepted, in pixels.
pub const MAX_INPUT_SIDE: usize = 4096;
/// Largest input image accepted: C·H·W float32 values, in bytes (64 MiB:
/// a 4096×4096 gray or a 2048×2048 RGB input).
pub const MAX_INPUT_BYTES: usize = 64 << 20;
/// Largest batch input a plan allocates (batch · C·H·W float32), in bytes.
pub const MAX_BATCH_INPUT_BYTES: usize = 1 << 30;
/// Largest single tensor accepted: a weight stored in the file, or an
/// intermediate value the graph computes for one image, in bytes.
pub const MAX_TENSOR_BYTES: usize = 1 << 30;
/// Largest sum of the weights (initializers and constants) of one file, in bytes.
pub const MAX_WEIGHT_BYTES: u64 = 2 << 30;
/// Most inference threads a [`Runtime`] starts.
pub const MAX_THREADS: usize = 256;
pub use crate::meta::MAX_LATENT_DIM;

/// Which outputs a plan computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// `mu`, `logvar` and `recon`: everything the model outputs.
    Full,
    /// `mu` and `logvar` only: the decoder is pruned from the plan, so
    /// scores that need no reconstruction cost about half.
    EncoderOnly,
}

impl PlanKind {
    /// The plan a consumer needs: [`PlanKind::Full`] when it needs the
    /// reconstruction (a score such as `recon`, the pixel map, the live
    /// window), else the cheaper [`PlanKind::EncoderOnly`].
    pub fn needed(recon: bool) -> PlanKind {
        if recon {
            PlanKind::Full
        } else {
            PlanKind::EncoderOnly
        }
    }
}
