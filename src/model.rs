//! Loading a contract β-VAE with tract: file checks, contract validation,
//! optimised plans with concrete shapes, and reusable sessions.
//!
//! A [`Model`] is parsed and analysed once (for a batch of one image).
//! [`Model::plan`] optimises that analysed graph for one set of outputs
//! ([`PlanKind`]) and one batch size; a [`Session`] owns one spawned state of
//! a plan and its input buffer, and is reused for every frame of a stream.
//!
//! A batch of several images runs image by image through the batch-1 plan
//! (for models whose batch axis is dynamic): tract 0.23 lowers a batched
//! convolution to an explicit im2col whose buffer outgrows the caches, which
//! costs about twice as much per image as a batch of one. [`set_threads`]
//! lets inference use more than one core.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::ModelError;
use crate::meta::{DEFAULT_BETA, DEFAULT_LIKELIHOOD, ModelSpec, Objective, RawMeta};

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
/// Most inference threads [`set_threads`] starts.
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

/// One dimension as declared in the ONNX graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named or anonymous dynamic size.
    Dynamic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(s) if s.is_empty() => f.write_str("?"),
            Dim::Dynamic(s) => f.write_str(s),
        }
    }
}

/// A graph input or output as declared in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// Tensor name.
    pub name: String,
    /// Element type as an ONNX type name (`float`, `int64`, ...).
    pub dtype: String,
    /// Declared shape, when the file declares one.
    pub shape: Option<Vec<Dim>>,
}

impl Port {
    /// The shape as text, e.g. `[batch, 1, 64, 64]`.
    pub fn shape_text(&self) -> String {
        match &self.shape {
            None => "[unknown]".to_string(),
            Some(dims) => format!(
                "[{}]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn onnx_type_name(code: i32) -> String {
    match code {
        1 => "float".into(),
        2 => "uint8".into(),
        3 => "int8".into(),
        5 => "int16".into(),
        6 => "int32".into(),
        7 => "int64".into(),
        9 => "bool".into(),
        10 => "float16".into(),
        11 => "double".into(),
        16 => "bfloat16".into(),
        other => format!("type {other}"),
    }
}

fn port_of(v: &pb::ValueInfoProto) -> Port {
    let mut dtype = "unknown".to_string();
    let mut shape = None;
    if let Some(pb::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        dtype = onnx_type_name(t.elem_type);
        shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n > 0 => {
                        // Saturates on 32-bit targets: a size that does not
                        // fit is refused by the bounds, not wrapped.
                        Dim::Fixed(usize::try_from(*n).unwrap_or(usize::MAX))
                    }
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) => {
                        Dim::Dynamic(p.clone())
                    }
                    _ => Dim::Dynamic(String::new()),
                })
                .collect()
        });
    }
    Port {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

/// What was read from an ONNX file before any graph analysis.
struct ParsedFile {
    proto: pb::ModelProto,
    sha256: String,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    meta: RawMeta,
    /// Malformed metadata and tensors whose sizes are refused.
    problems: Vec<String>,
}

/// Bytes of one element of an ONNX tensor data type; `None` for strings
/// and unknown codes.
fn elem_bytes(code: i32) -> Option<u64> {
    Some(match code {
        2 | 3 | 9 => 1,        // uint8, int8, bool
        4 | 5 | 10 | 16 => 2,  // uint16, int16, float16, bfloat16
        1 | 6 | 12 => 4,       // float, int32, uint32
        7 | 11 | 13 | 14 => 8, // int64, double, uint64, complex64
        15 => 16,              // complex128
        _ => return None,
    })
}

/// ONNX `TensorProto.DataLocation.EXTERNAL`.
const DATA_LOCATION_EXTERNAL: i32 = 1;
/// ONNX `TensorProto.DataType.STRING`.
const DATA_TYPE_STRING: i32 = 8;

/// Every tensor stored in a graph (initializers, and tensors in node
/// attributes such as `Constant`), sub-graphs included, with where it sits.
fn stored_tensors<'a>(graph: &'a pb::GraphProto, out: &mut Vec<(&'a pb::TensorProto, String)>) {
    for t in &graph.initializer {
        out.push((t, format!("initializer `{}`", t.name)));
    }
    for n in &graph.node {
        for a in &n.attribute {
            let at = || format!("attribute `{}` of node `{}`", a.name, n.name);
            if let Some(t) = &a.t {
                out.push((t, at()));
            }
            for t in &a.tensors {
                out.push((t, at()));
            }
            // prost refuses nesting deeper than its recursion limit, so
            // this recursion is bounded.
            if let Some(g) = &a.g {
                stored_tensors(g, out);
            }
            for g in &a.graphs {
                stored_tensors(g, out);
            }
        }
    }
}

fn external_key<'a>(t: &'a pb::TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// Whether `loc` names a file inside the model's folder (no absolute path,
/// no `..`), as the ONNX external data format requires.
fn is_relative_inside(loc: &str) -> bool {
    !loc.is_empty()
        && Path::new(loc).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// Checks the sizes one stored tensor declares against the bytes it holds
/// (inline, or in its external data file of `external` bytes), before
/// anything allocates them. Returns the bytes the tensor will occupy.
fn check_tensor(
    t: &pb::TensorProto,
    at: &str,
    external: &std::collections::HashMap<&str, u64>,
    problems: &mut Vec<String>,
) -> u64 {
    let dtype = onnx_type_name(t.data_type);
    if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
        problems.push(format!(
            "{at}: dimension {d} in its shape {:?}; expected sizes ≥ 0",
            t.dims
        ));
        return 0;
    }
    let elems = t
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let bytes = match (elems, elem_bytes(t.data_type)) {
        (Some(n), Some(b)) => n.checked_mul(b),
        (Some(_), None) => Some(0),
        (None, _) => None,
    };
    let Some(bytes) = bytes.filter(|&b| b <= MAX_TENSOR_BYTES as u64) else {
        problems.push(format!(
            "{at}: shape {:?} of {dtype} is more than {} MiB; expected at most that per tensor",
            t.dims,
            MAX_TENSOR_BYTES >> 20
        ));
        return 0;
    };
    let is_external = t.data_location == Some(DATA_LOCATION_EXTERNAL);
    if t.data_type == DATA_TYPE_STRING && (!t.raw_data.is_empty() || is_external) {
        problems.push(format!(
            "{at}: a string tensor stored as raw bytes; expected its strings in `string_data`"
        ));
        return 0;
    }
    if !t.raw_data.is_empty() {
        if t.raw_data.len() as u64 != bytes {
            problems.push(format!(
                "{at}: shape {:?} of {dtype} needs {bytes} bytes, but it holds {} bytes of raw data; \
                 the file is corrupt or was written by a broken exporter",
                t.dims,
                t.raw_data.len()
            ));
        }
        return bytes;
    }
    if !is_external {
        return bytes;
    }
    // Its location was checked (and the file measured) by `read_onnx`.
    let Some(loc) = external_key(t, "location") else {
        problems.push(format!(
            "{at}: its data is external but it names no `location`; expected the file name of \
             its weights (NAME.onnx.data)"
        ));
        return 0;
    };
    let Some(&file_len) = external.get(loc) else {
        return 0;
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        match external_key(t, key) {
            None => Ok(None),
            Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                format!("{at}: external data `{key}` is {v:?}; expected a byte count ≥ 0")
            }),
        }
    };
    let (offset, length) = match (number("offset"), number("length")) {
        (Ok(o), Ok(l)) => (o.unwrap_or(0), l),
        (Err(e), _) | (_, Err(e)) => {
            problems.push(e);
            return 0;
        }
    };
    let Some(rest) = file_len.checked_sub(offset) else {
        problems.push(format!(
            "{at}: its data starts at byte {offset} of {loc}, which has only {file_len} bytes; \
             expected the {loc} written together with this model"
        ));
        return 0;
    };
    let length = length.unwrap_or(rest);
    if length > rest {
        problems.push(format!(
            "{at}: its data is bytes {offset}..{} of {loc}, which has only {file_len} bytes; \
             expected the {loc} written together with this model",
            offset.saturating_add(length)
        ));
        return 0;
    }
    if length != bytes && elem_bytes(t.data_type).is_some() {
        problems.push(format!(
            "{at}: shape {:?} of {dtype} needs {bytes} bytes, but its external data in {loc} is \
             {length} bytes long",
            t.dims
        ));
    }
    bytes
}

/// Hashes `len` bytes of the file at `p` in chunks (a large weight file
/// is never held in memory whole).
fn hash_file(hasher: &mut Sha256, p: &Path, len: u64) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?.take(len);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn read_onnx(path: &Path) -> Result<ParsedFile, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_MODEL_BYTES {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: format!("{len} bytes is larger than the 2 GiB an ONNX protobuf can hold"),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    parse_onnx(&bytes, path, &model_dir(path))
}

/// The folder of a model file, where its external weight files sit.
fn model_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Parses the bytes of an ONNX file read from `path`, whose external
/// weight files (if any) sit in `dir`: the protobuf, its ports and
/// metadata, and every stored tensor's declared size against the bytes
/// it holds.
fn parse_onnx(bytes: &[u8], path: &Path, dir: &Path) -> Result<ParsedFile, ModelError> {
    if bytes.is_empty() {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: "the file is empty".into(),
        });
    }
    if bytes.len() as u64 > MAX_MODEL_BYTES {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: format!(
                "{} bytes is larger than the 2 GiB an ONNX protobuf can hold",
                bytes.len()
            ),
        });
    }
    let proto = onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: format!("{e:#}"),
        })?;
    let Some(graph) = proto.graph.as_ref() else {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: "it contains no graph".into(),
        });
    };
    if graph.node.is_empty() {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            detail: "its graph has no nodes".into(),
        });
    }
    let mut problems = vec![];
    check_graph_names(graph, &mut problems);
    let mut tensors = vec![];
    stored_tensors(graph, &mut tensors);

    let mut hasher = Sha256::new();
    hasher.update(bytes);
    // Weights stored next to the model (torch's dynamo exporter with
    // external data) are part of the model's identity too.
    let mut external: Vec<&str> = tensors
        .iter()
        .filter_map(|(t, _)| external_key(t, "location"))
        .collect();
    external.sort();
    external.dedup();
    let mut external_len = std::collections::HashMap::new();
    for loc in external {
        if !is_relative_inside(loc) {
            problems.push(format!(
                "external data location {loc:?}: expected a file name relative to the model's \
                 folder (no absolute path, no `..`)"
            ));
            continue;
        }
        let p = dir.join(loc);
        let missing = |source| ModelError::MissingWeights {
            model: path.to_path_buf(),
            data: p.clone(),
            source,
        };
        let meta = std::fs::metadata(&p).map_err(missing)?;
        if !meta.is_file() {
            problems.push(format!(
                "external data location {loc:?}: {} is not a regular file; expected the weight \
                 file written together with this model",
                p.display()
            ));
            continue;
        }
        hasher.update(loc.as_bytes());
        hash_file(&mut hasher, &p, meta.len()).map_err(missing)?;
        external_len.insert(loc, meta.len());
    }
    let sha256 = hex(&hasher.finalize());

    let mut total = 0u64;
    for (t, at) in &tensors {
        total = total.saturating_add(check_tensor(t, at, &external_len, &mut problems));
    }
    if total > MAX_WEIGHT_BYTES {
        problems.push(format!(
            "the stored tensors add up to {} MiB; expected at most {} MiB of weights",
            total >> 20,
            MAX_WEIGHT_BYTES >> 20
        ));
    }

    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(port_of)
        .collect();
    let outputs = graph.output.iter().map(port_of).collect();
    let meta = RawMeta::from_pairs(
        proto
            .metadata_props
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str())),
        &mut problems,
    );
    Ok(ParsedFile {
        proto,
        sha256,
        inputs,
        outputs,
        meta,
        problems,
    })
}

/// Lower-case hexadecimal of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn runtime<E: Into<anyhow::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> ModelError {
    let what = what.into();
    move |e| ModelError::Runtime {
        what,
        cause: e.into(),
    }
}

/// Runs one tract step (parsing, analysis, optimisation) and turns a panic
/// inside it, on a malformed graph tract does not check, into an error
/// rather than a crash of the whole process.
fn guarded<T>(
    what: impl Into<String>,
    step: impl FnOnce() -> TractResult<T>,
) -> Result<T, ModelError> {
    let what = what.into();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(r) => r.map_err(runtime(what)),
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

/// Checks that every output of `graph` (and of its sub-graphs) names a
/// value: a graph input, an initializer, or a node's input or output
/// (tract indexes its graph by these names without checking).
fn check_graph_names(graph: &pb::GraphProto, problems: &mut Vec<String>) {
    let mut known: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    for n in &graph.node {
        known.extend(n.input.iter().chain(&n.output).map(String::as_str));
    }
    for o in &graph.output {
        if !known.contains(o.name.as_str()) {
            problems.push(format!(
                "graph `{}`: output `{}` is computed by no node and is neither an input nor an \
                 initializer; expected every output to name a value of the graph",
                graph.name, o.name
            ));
        }
    }
    let weights: std::collections::HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for n in &graph.node {
        check_window(n, &weights, problems);
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                check_graph_names(g, problems);
            }
        }
    }
}

/// Checks the window sizes of a convolution or pooling node (kernel,
/// strides, dilations, pads, and a convolution's weight shape): tract's
/// shape arithmetic overflows on a kernel of 0 or a size beyond any image.
fn check_window(
    n: &pb::NodeProto,
    weights: &std::collections::HashMap<&str, &pb::TensorProto>,
    problems: &mut Vec<String>,
) {
    let conv = matches!(n.op_type.as_str(), "Conv" | "ConvTranspose");
    if !conv && !n.op_type.ends_with("Pool") {
        return;
    }
    let max = MAX_INPUT_SIDE as i64;
    let mut bad = |what: &str, v: &[i64], low: i64| {
        if v.iter().any(|&x| x < low || x > max) {
            problems.push(format!(
                "{} node `{}`: {what} {v:?}; expected each from {low} to {max}",
                n.op_type, n.name
            ));
        }
    };
    for a in &n.attribute {
        match a.name.as_str() {
            "kernel_shape" | "strides" | "dilations" => bad(&a.name, &a.ints, 1),
            "pads" | "output_padding" | "output_shape" => bad(&a.name, &a.ints, 0),
            _ => {}
        }
    }
    if conv && let Some(w) = n.input.get(1).and_then(|i| weights.get(i.as_str())) {
        if w.dims.len() < 3 {
            problems.push(format!(
                "{} node `{}`: weights `{}` of shape {:?}; expected [out, in, kernel…] (rank 3 or more)",
                n.op_type, n.name, w.name, w.dims
            ));
        } else {
            bad(
                &format!("the kernel of weights `{}` is", w.name),
                &w.dims[2..],
                1,
            );
        }
    }
}

/// Resolves one spatial/channel dimension from the graph and the metadata.
fn resolve_dim(
    what: &str,
    graph: &Dim,
    meta: Option<usize>,
    meta_key: &str,
    problems: &mut Vec<String>,
) -> Option<usize> {
    match (graph, meta) {
        (Dim::Fixed(g), Some(m)) if *g != m => {
            problems.push(format!(
                "input `image`: {what} is {g} in the graph but metadata `{meta_key}` says {m}"
            ));
            None
        }
        (Dim::Fixed(g), _) => Some(*g),
        (_, Some(m)) if m > 0 => Some(m),
        _ => {
            problems.push(format!(
                "input `image`: {what} is dynamic in the graph and metadata `{meta_key}` is absent; \
                 export with a fixed {what} or add `{meta_key}`"
            ));
            None
        }
    }
}

/// A loaded β-VAE encoder model (`NAME.onnx`) that follows the contract.
#[derive(Debug, Clone)]
pub struct Model {
    path: PathBuf,
    sha256: String,
    spec: ModelSpec,
    meta: RawMeta,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    inference: InferenceModel,
    /// The graph analysed for a batch of one image: every plan starts here,
    /// so planning does not analyse the graph again.
    typed1: TypedModel,
    load_time: Duration,
}

impl Model {
    /// Loads and validates an encoder model. Every contract violation found
    /// is listed in the error, each saying what was expected and found.
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

    fn from_parsed(file: ParsedFile, path: &Path, start: Instant) -> Result<Model, ModelError> {
        let mut problems = file.problems.clone();
        let meta = file.meta.clone();

        // --- input `image` [N, C, H, W] float32
        let image = file.inputs.iter().find(|p| p.name == INPUT_IMAGE);
        let (mut c, mut h, mut w, mut max_batch) = (None, None, None, None);
        match (image, file.inputs.len()) {
            (None, _) => problems.push(format!(
                "expected one input named `image` (float32 [N, C, H, W]), found {}",
                describe_ports(&file.inputs)
            )),
            (Some(_), n) if n > 1 => problems.push(format!(
                "expected exactly one input, `image`; found {}",
                describe_ports(&file.inputs)
            )),
            (Some(p), _) => {
                if p.dtype != "float" {
                    problems.push(format!(
                        "input `image`: expected float32, found {}",
                        p.dtype
                    ));
                }
                let dims = p
                    .shape
                    .clone()
                    .unwrap_or_else(|| vec![Dim::Dynamic(String::new()); 4]);
                if dims.len() != 4 {
                    problems.push(format!(
                        "input `image`: expected rank 4 [N, C, H, W], found {}",
                        p.shape_text()
                    ));
                } else {
                    if let Dim::Fixed(n) = dims[0] {
                        max_batch = Some(n);
                    }
                    let fields = [
                        ("channels", meta.channels, "bvae.channels"),
                        ("height", meta.height, "bvae.height"),
                        ("width", meta.width, "bvae.width"),
                    ];
                    [c, h, w] = std::array::from_fn(|i| {
                        let (what, m, key) = fields[i];
                        resolve_dim(what, &dims[i + 1], m, key, &mut problems)
                    });
                    if let Some(ch) = c
                        && ch != 1
                        && ch != 3
                    {
                        problems.push(format!(
                            "input `image`: expected 1 (gray) or 3 (RGB) channels, found {ch}"
                        ));
                        c = None;
                    }
                    // Bounded before anything is allocated for the input.
                    let side = |what: &str, v: Option<usize>, problems: &mut Vec<String>| match v {
                        Some(n) if n > MAX_INPUT_SIDE => {
                            problems.push(format!(
                                "input `image`: {what} is {n} pixels; expected at most \
                                 {MAX_INPUT_SIDE} (export the model for a smaller input)"
                            ));
                            None
                        }
                        other => other,
                    };
                    h = side("height", h, &mut problems);
                    w = side("width", w, &mut problems);
                    if let (Some(ch), Some(hh), Some(ww)) = (c, h, w) {
                        let bytes = ch * hh * ww * 4;
                        if bytes > MAX_INPUT_BYTES {
                            problems.push(format!(
                                "input `image`: [N, {ch}, {hh}, {ww}] is {} MiB of float32 per \
                                 image; expected at most {} MiB (export the model for a smaller \
                                 input)",
                                bytes >> 20,
                                MAX_INPUT_BYTES >> 20
                            ));
                            c = None;
                        } else if let Some(n) = max_batch
                            && n.checked_mul(bytes)
                                .is_none_or(|b| b > MAX_BATCH_INPUT_BYTES)
                        {
                            problems.push(format!(
                                "input `image`: the graph fixes the batch at {n} images of \
                                 [{ch}, {hh}, {ww}], more than {} MiB of input per batch; \
                                 export it with a dynamic batch axis",
                                MAX_BATCH_INPUT_BYTES >> 20
                            ));
                            c = None;
                        }
                    }
                }
            }
        }
        if let Some(m) = meta.latent_dim
            && !(1..=MAX_LATENT_DIM).contains(&m)
        {
            problems.push(format!(
                "metadata `bvae.latent_dim` is {m}; expected 1 to {MAX_LATENT_DIM} latents"
            ));
        }
        // --- outputs by name
        for name in [OUTPUT_MU, OUTPUT_LOGVAR, OUTPUT_RECON] {
            if !file.outputs.iter().any(|p| p.name == name) {
                problems.push(format!(
                    "expected an output named `{name}`; the outputs are {}",
                    describe_ports(&file.outputs)
                ));
            }
        }
        for p in &file.outputs {
            if [OUTPUT_MU, OUTPUT_LOGVAR, OUTPUT_RECON].contains(&p.name.as_str())
                && p.dtype != "float"
                && p.dtype != "unknown"
            {
                problems.push(format!(
                    "output `{}`: expected float32, found {}",
                    p.name, p.dtype
                ));
            }
        }
        let fail = |problems: Vec<String>| ModelError::Contract {
            path: path.to_path_buf(),
            problems,
        };
        let (Some(c), Some(h), Some(w)) = (c, h, w) else {
            return Err(fail(problems));
        };
        if !problems.is_empty() {
            return Err(fail(problems));
        }

        // --- let tract analyse the graph with a concrete shape
        let dir = path
            .parent()
            .and_then(|d| d.to_str())
            .map(|d| if d.is_empty() { "." } else { d });
        let parsed = guarded(
            format!("cannot translate {} into a tract graph", path.display()),
            || onnx_parser().parse(&file.proto, dir),
        )?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(fail(vec![format!(
                "the graph reads tensors that nothing defines: {:?}",
                parsed.unresolved_inputs
            )]));
        }
        let inference = parsed.model;
        let typed = guarded(
            format!("cannot analyse the graph of {}", path.display()),
            || typed_for(&inference, 1, c, h, w),
        )?;
        let shape_of = |name: &str| -> Option<Vec<usize>> {
            let outlet = find_output(&typed, name)?;
            let fact = typed.outlet_fact(outlet).ok()?;
            fact.shape.as_concrete().map(|s| s.to_vec())
        };
        let mu = shape_of(OUTPUT_MU);
        let logvar = shape_of(OUTPUT_LOGVAR);
        let recon = shape_of(OUTPUT_RECON);
        let mut z = None;
        match &mu {
            Some(s) if s.len() == 2 && s[0] == 1 && s[1] > MAX_LATENT_DIM => {
                problems.push(format!(
                    "output `mu`: {} latents; expected 1 to {MAX_LATENT_DIM}",
                    s[1]
                ))
            }
            Some(s) if s.len() == 2 && s[0] == 1 && s[1] > 0 => z = Some(s[1]),
            other => problems.push(format!(
                "output `mu`: expected [N, Z] ([1, Z] for a batch of 1), found {other:?}"
            )),
        }
        problems.extend(oversized_tensors(&typed, "one image"));
        if let Some(z) = z {
            if logvar.as_deref() != Some(&[1, z][..]) {
                problems.push(format!(
                    "output `logvar`: expected [1, {z}] like `mu` for a batch of 1, found {logvar:?}"
                ));
            }
            if let Some(m) = meta.latent_dim
                && m != z
            {
                problems.push(format!(
                    "output `mu` has {z} latents but metadata `bvae.latent_dim` says {m}"
                ));
            }
            if let Some(kl) = &meta.latent_kl
                && kl.len() != z
            {
                problems.push(format!(
                    "metadata `bvae.latent_kl` has {} entries but the model has {z} latents",
                    kl.len()
                ));
            }
            if let Some(names) = &meta.latent_names
                && names.len() != z
            {
                problems.push(format!(
                    "metadata `bvae.latent_names` has {} entries but the model has {z} latents; \
                     expected one name per latent (\"\" where none)",
                    names.len()
                ));
            }
        }
        if recon.as_deref() != Some(&[1, c, h, w][..]) {
            problems.push(format!(
                "output `recon`: expected the input's shape [1, {c}, {h}, {w}] for a batch of 1, found {recon:?}"
            ));
        }
        for (name, fact) in [OUTPUT_MU, OUTPUT_LOGVAR, OUTPUT_RECON]
            .iter()
            .filter_map(|n| {
                find_output(&typed, n)
                    .and_then(|o| typed.outlet_fact(o).ok())
                    .map(|f| (n, f))
            })
        {
            if fact.datum_type != f32::datum_type() {
                problems.push(format!(
                    "output `{name}`: expected float32, found {:?}",
                    fact.datum_type
                ));
            }
        }
        let Some(z) = z else {
            return Err(fail(problems));
        };
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let objective = meta.objective.unwrap_or(Objective::Beta);
        let beta = match objective {
            Objective::Beta => meta.beta.unwrap_or(DEFAULT_BETA),
            Objective::Capacity => DEFAULT_BETA,
        };
        let spec = ModelSpec {
            channels: c,
            height: h,
            width: w,
            latent_dim: z,
            likelihood: meta.likelihood.unwrap_or(DEFAULT_LIKELIHOOD),
            objective,
            beta,
            latent_kl: meta.latent_kl.clone(),
            max_batch,
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
        if let Some(max) = self.spec.max_batch
            && batch != max
        {
            return Err(ModelError::Usage(format!(
                "{} has a fixed batch size of {max} in its graph, so it cannot run {batch} images at once; \
                 export it with a dynamic batch axis",
                self.path.display()
            )));
        }
        let s = &self.spec;
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
                self.path.display()
            )
        };
        // Images per run of the tract plan.
        let run_batch = if s.max_batch.is_some() { batch } else { 1 };
        let mut typed = if run_batch == 1 {
            self.typed1.clone()
        } else {
            let typed = guarded(what(), || {
                typed_for(&self.inference, batch, s.channels, s.height, s.width)
            })?;
            let big = oversized_tensors(&typed, &format!("a batch of {batch}"));
            if !big.is_empty() {
                return Err(ModelError::Contract {
                    path: self.path.clone(),
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
            .map_err(runtime(what()))?;
        let runnable = guarded(what(), || optimize(typed))?;
        Ok(Plan {
            runnable,
            kind,
            batch,
            run_batch,
            spec: self.spec.clone(),
        })
    }
}

/// Declutters `typed`, hands the convolutions bvae runs faster to its own
/// kernel ([`crate::tract_conv`]), optimises the rest with tract and makes
/// it runnable.
fn optimize(typed: TypedModel) -> TractResult<Arc<TypedRunnableModel>> {
    let mut typed = typed.into_decluttered()?;
    crate::tract_conv::substitute(&mut typed)?;
    typed.into_optimized()?.into_runnable()
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

/// Most ports [`describe_ports`] lists.
const MAX_PORTS_LISTED: usize = 8;

fn describe_ports(ports: &[Port]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    let mut text = ports
        .iter()
        .take(MAX_PORTS_LISTED)
        .map(|p| format!("`{}` {} {}", p.name, p.dtype, p.shape_text()))
        .collect::<Vec<_>>()
        .join(", ");
    if ports.len() > MAX_PORTS_LISTED {
        text.push_str(&format!(" and {} more", ports.len() - MAX_PORTS_LISTED));
    }
    text
}

/// Most oversized tensors [`oversized_tensors`] reports.
const MAX_OVERSIZED_LISTED: usize = 5;

/// The values of an analysed graph (for `what`, e.g. one image) larger
/// than [`MAX_TENSOR_BYTES`]: refused before a plan allocates them.
fn oversized_tensors(model: &TypedModel, what: &str) -> Vec<String> {
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

fn find_output(model: &TypedModel, name: &str) -> Option<OutletId> {
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

fn typed_for(
    inference: &InferenceModel,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
) -> TractResult<TypedModel> {
    let mut m = inference.clone();
    m.set_input_fact(
        0,
        InferenceFact::dt_shape(f32::datum_type(), tvec![n, c, h, w]),
    )?;
    m.into_typed()
}

/// An optimised plan for one batch size and one set of outputs.
#[derive(Debug, Clone)]
pub struct Plan {
    runnable: Arc<TypedRunnableModel>,
    kind: PlanKind,
    batch: usize,
    /// Images per run of `runnable`: `batch`, or 1 when a batch runs image
    /// by image.
    run_batch: usize,
    spec: ModelSpec,
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

    /// Spawns a session: one reusable state and input buffer for a stream.
    pub fn session(&self) -> Result<Session, ModelError> {
        let state = TypedSimpleState::new(&self.runnable)
            .map_err(runtime("cannot start a tract session"))?;
        let s = &self.spec;
        let input = Tensor::zero::<f32>(&[self.batch, s.channels, s.height, s.width])
            .map_err(runtime("cannot allocate the input tensor"))?;
        let (z, image) = (s.latent_dim, s.image_len());
        let gathered = if self.run_batch == self.batch {
            vec![]
        } else {
            let mut g = vec![vec![0.0; self.batch * z], vec![0.0; self.batch * z]];
            if self.kind == PlanKind::Full {
                g.push(vec![0.0; self.batch * image]);
            }
            g
        };
        Ok(Session {
            plan: self.clone(),
            state,
            input: Arc::new(input),
            outputs: tvec![],
            gathered,
            single: Arc::new(
                Tensor::zero::<f32>(&[1, s.channels, s.height, s.width])
                    .map_err(runtime("cannot allocate the input tensor"))?,
            ),
            ran: false,
        })
    }
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
                Tensor::zero::<f32>(&shape).map_err(runtime("cannot allocate the input tensor"))?,
            );
        }
        let t = Arc::get_mut(&mut self.input).ok_or_else(|| {
            ModelError::Usage("the input tensor is still shared with tract".into())
        })?;
        t.to_plain_array_view_mut::<f32>()
            .map_err(runtime("input tensor is not float32"))?
            .into_slice()
            .ok_or_else(|| ModelError::Usage("input tensor is not contiguous".into()))
    }

    /// The input buffer as last filled.
    pub fn input(&self) -> Result<&[f32], ModelError> {
        self.input
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(runtime("input tensor is not float32"))
    }

    /// Runs the plan on the current input buffer.
    pub fn run(&mut self) -> Result<(), ModelError> {
        self.outputs.clear();
        self.ran = false;
        if self.gathered.is_empty() {
            let (state, input) = (&mut self.state, self.input.clone());
            self.outputs = in_pool(move || state.run(tvec![TValue::from_const(input)]))
                .map_err(runtime("inference failed"))?;
        } else {
            in_pool(|| self.run_image_by_image())?;
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
            .map_err(runtime("input tensor is not float32"))?;
        for (i, src) in all.chunks_exact(image).enumerate() {
            if Arc::get_mut(&mut self.single).is_none() {
                self.single = Arc::new(
                    Tensor::zero::<f32>(&shape)
                        .map_err(runtime("cannot allocate the input tensor"))?,
                );
            }
            Arc::get_mut(&mut self.single)
                .ok_or_else(|| ModelError::Usage("the input tensor is still shared".into()))?
                .to_plain_array_view_mut::<f32>()
                .map_err(runtime("input tensor is not float32"))?
                .into_slice()
                .ok_or_else(|| ModelError::Usage("input tensor is not contiguous".into()))?
                .copy_from_slice(src);
            let out = self
                .state
                .run(tvec![TValue::from_const(self.single.clone())])
                .map_err(runtime("inference failed"))?;
            for (k, dst) in self.gathered.iter_mut().enumerate() {
                let v = out
                    .get(k)
                    .ok_or_else(|| ModelError::Usage("the plan produced too few outputs".into()))?
                    .try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>())
                    .map_err(runtime("an output is not float32"))?;
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
            .map_err(runtime(format!("output `{name}` is not float32")))
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
}

impl Decoder {
    /// Loads a decoder for `spec`'s latent size and image shape, planned for
    /// `batch` latent vectors at a time.
    pub fn load(
        path: impl AsRef<Path>,
        spec: &ModelSpec,
        batch: usize,
    ) -> Result<Decoder, ModelError> {
        let path = path.as_ref();
        let file = read_onnx(path)?;
        let mut problems = file.problems.clone();
        let fail = |problems: Vec<String>| ModelError::Contract {
            path: path.to_path_buf(),
            problems,
        };
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
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let dir = path
            .parent()
            .and_then(|d| d.to_str())
            .map(|d| if d.is_empty() { "." } else { d });
        let what = || format!("cannot build a plan for decoder {}", path.display());
        let parsed = guarded(what(), || onnx_parser().parse(&file.proto, dir))?;
        let mut m = parsed.model;
        m.set_input_fact(
            0,
            InferenceFact::dt_shape(f32::datum_type(), tvec![batch, z]),
        )
        .map_err(runtime(what()))?;
        let mut typed = guarded(what(), || m.into_typed())?;
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
            .map_err(runtime(what()))?;
        let runnable = guarded(what(), || optimize(typed))?;
        let state = TypedSimpleState::new(&runnable).map_err(runtime(what()))?;
        Ok(Decoder {
            path: path.to_path_buf(),
            runnable,
            state,
            batch,
            latent_dim: z,
            image_len: spec.image_len(),
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
            .map_err(runtime("decoder input"))?;
        let state = &mut self.state;
        let res = in_pool(move || state.run(tvec![input.into_tvalue()]))
            .map_err(runtime("decoding failed"))?;
        let r = res
            .first()
            .ok_or_else(|| ModelError::Usage("decoder produced no output".into()))?
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(runtime("decoder output is not float32"))?;
        out.copy_from_slice(r);
        Ok(())
    }

    /// The optimised plan (for benchmarks).
    pub fn runnable(&self) -> &Arc<TypedRunnableModel> {
        &self.runnable
    }
}

/// How inference uses more than one core (see [`set_threads`]).
#[derive(Clone)]
enum Threads {
    /// bvae's convolutions split across a spinning team; tract's own
    /// operators (small here) run on the frame's thread.
    Team(Arc<crate::team::Team>),
    /// No bvae kernel on this CPU: tract's matrix products use a pool.
    Pool(Arc<rayon::ThreadPool>),
}

/// Held while a frame runs in the pool of [`Threads::Pool`].
static POOL_FRAME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The threads of [`set_threads`], when more than one is set.
static THREADS: std::sync::Mutex<Option<Threads>> = std::sync::Mutex::new(None);

/// Lets inference use `threads` cores (1 = the calling thread only, the
/// default). Where bvae's convolution kernels run (see
/// [`crate::tract_conv`]), each frame's convolutions are split across a
/// team of threads that spin while the frame runs and sleep between frames
/// ([`crate::team`]); elsewhere tract's matrix products use a thread pool.
/// Applies to every plan of the process.
pub fn set_threads(threads: usize) -> Result<(), ModelError> {
    use tract_linalg::multithread::{Executor, set_default_executor};
    let cannot = |e: &dyn std::fmt::Display| {
        ModelError::Usage(format!("cannot start {threads} threads: {e}"))
    };
    if threads > MAX_THREADS {
        return Err(ModelError::Usage(format!(
            "{threads} inference threads: expected 1 to {MAX_THREADS} (at most one per core \
             helps)"
        )));
    }
    let chosen = if threads <= 1 {
        None
    } else if crate::tract_conv::own_kernels() && crate::conv::Isa::detect().is_some() {
        let team = crate::team::Team::new(threads).map_err(|e| cannot(&e))?;
        Some(Threads::Team(Arc::new(team)))
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("bvae-infer-{i}"))
            .build()
            .map_err(|e| cannot(&e))?;
        Some(Threads::Pool(Arc::new(pool)))
    };
    set_default_executor(match &chosen {
        Some(Threads::Pool(p)) => Executor::MultiThread(p.clone()),
        _ => Executor::SingleThread,
    });
    if let Ok(mut slot) = THREADS.lock() {
        *slot = chosen;
    }
    Ok(())
}

/// Runs `f`, one frame's inference, with the threads of [`set_threads`]
/// (on this thread alone when there are none).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let threads = THREADS.lock().ok().and_then(|t| t.clone());
    match threads {
        Some(Threads::Team(team)) => crate::team::frame(Some(&team), f),
        Some(Threads::Pool(pool)) => {
            // One frame in the pool at a time: a worker waiting inside one
            // frame's matrix product may otherwise pick up another frame
            // and re-enter tract's per-thread scratch (a panic, seen on
            // armv7 with sessions on two threads).
            let _one = POOL_FRAME.lock().unwrap_or_else(|e| e.into_inner());
            pool.install(f)
        }
        None => f(),
    }
}
