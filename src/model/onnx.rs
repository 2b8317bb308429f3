//! The ONNX file as read, before any graph analysis: the protobuf, its
//! declared ports and metadata, and every stored tensor's declared size
//! checked against the bytes it holds (inline or in an external weight
//! file) before anything allocates them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::{MAX_INPUT_SIDE, MAX_MODEL_BYTES, MAX_TENSOR_BYTES, MAX_WEIGHT_BYTES};
use crate::error::ModelError;
use crate::meta::RawMeta;

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
pub(super) struct ParsedFile {
    pub(super) proto: pb::ModelProto,
    pub(super) sha256: String,
    pub(super) inputs: Vec<Port>,
    pub(super) outputs: Vec<Port>,
    pub(super) meta: RawMeta,
    /// Malformed metadata and tensors whose sizes are refused.
    pub(super) problems: Vec<String>,
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

/// Reads and parses the ONNX file at `path` (see [`parse_onnx`]).
pub(super) fn read_onnx(path: &Path) -> Result<ParsedFile, ModelError> {
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
pub(super) fn model_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Parses the bytes of an ONNX file read from `path`, whose external
/// weight files (if any) sit in `dir`: the protobuf, its ports and
/// metadata, and every stored tensor's declared size against the bytes
/// it holds.
pub(super) fn parse_onnx(bytes: &[u8], path: &Path, dir: &Path) -> Result<ParsedFile, ModelError> {
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
    // The file's hash (2 ms for a 3 MB model) is computed on a second
    // thread while the protobuf is parsed (4 ms): part of load to first
    // result.
    let hash = || {
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        hasher
    };
    let (proto, mut hasher) = std::thread::scope(|scope| {
        let hashing = scope.spawn(hash);
        let proto = onnx().proto_model_for_read(&mut &bytes[..]);
        // A hashing thread cannot fail but by a panic; hash here then.
        (proto, hashing.join().unwrap_or_else(|_| hash()))
    });
    let proto = proto.map_err(|e| ModelError::NotOnnx {
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
