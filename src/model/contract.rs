//! The ONNX contract of an encoder (DESIGN.md, "ONNX contract"): what it
//! must declare (checked on the file, before tract sees it) and what it
//! must compute (checked on the graph tract analysed for one image). Each
//! check adds every problem it finds, saying what was expected and what
//! was found, so that one error lists them all.

use tract_onnx::prelude::*;

use super::graph::{find_output, oversized_tensors};
use super::onnx::ParsedFile;
use super::{
    Dim, MAX_BATCH_INPUT_BYTES, MAX_INPUT_BYTES, MAX_INPUT_SIDE, MAX_LATENT_DIM, OUTPUT_LOGVAR,
    OUTPUT_MU, OUTPUT_RECON, Port,
};
use crate::meta::RawMeta;

/// The input `image` of an encoder as its declaration and the metadata
/// resolve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ImageInput {
    /// Channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// The batch size when the graph fixes it, `None` when it is dynamic.
    pub max_batch: Option<usize>,
}

impl ImageInput {
    /// `[n, C, H, W]`.
    pub(super) fn shape(&self, n: usize) -> [usize; 4] {
        [n, self.channels, self.height, self.width]
    }
}

/// Most ports [`describe_ports`] lists.
const MAX_PORTS_LISTED: usize = 8;

/// The ports as text for an error: name, type and shape of each.
pub(super) fn describe_ports(ports: &[Port]) -> String {
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

/// Resolves one spatial/channel dimension from the graph and the metadata.
pub(super) fn resolve_dim(
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

/// Checks the declared input `image` (float32 `[N, C, H, W]`, C, H and W
/// fixed in the graph or given by the metadata, sizes bounded before
/// anything is allocated for them) and the metadata's latent count.
/// Returns the input when it is usable.
pub(super) fn check_declared_input(
    file: &ParsedFile,
    meta: &RawMeta,
    problems: &mut Vec<String>,
) -> Option<ImageInput> {
    let input = declared_image(file, meta, problems);
    if let Some(m) = meta.latent_dim
        && !(1..=MAX_LATENT_DIM).contains(&m)
    {
        problems.push(format!(
            "metadata `bvae.latent_dim` is {m}; expected 1 to {MAX_LATENT_DIM} latents"
        ));
    }
    input
}

fn declared_image(
    file: &ParsedFile,
    meta: &RawMeta,
    problems: &mut Vec<String>,
) -> Option<ImageInput> {
    let p = match (
        file.inputs.iter().find(|p| p.name == super::INPUT_IMAGE),
        file.inputs.len(),
    ) {
        (None, _) => {
            problems.push(format!(
                "expected one input named `image` (float32 [N, C, H, W]), found {}",
                describe_ports(&file.inputs)
            ));
            return None;
        }
        (Some(_), n) if n > 1 => {
            problems.push(format!(
                "expected exactly one input, `image`; found {}",
                describe_ports(&file.inputs)
            ));
            return None;
        }
        (Some(p), _) => p,
    };
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
        return None;
    }
    let max_batch = match dims[0] {
        Dim::Fixed(n) => Some(n),
        Dim::Dynamic(_) => None,
    };
    let fields = [
        ("channels", meta.channels, "bvae.channels"),
        ("height", meta.height, "bvae.height"),
        ("width", meta.width, "bvae.width"),
    ];
    let [c, h, w] = std::array::from_fn(|i| {
        let (what, m, key) = fields[i];
        resolve_dim(what, &dims[i + 1], m, key, problems)
    });
    let c = c.filter(|&ch| {
        let ok = ch == 1 || ch == 3;
        if !ok {
            problems.push(format!(
                "input `image`: expected 1 (gray) or 3 (RGB) channels, found {ch}"
            ));
        }
        ok
    });
    // Bounded before anything is allocated for the input.
    let mut side = |what: &str, v: Option<usize>| match v {
        Some(n) if n > MAX_INPUT_SIDE => {
            problems.push(format!(
                "input `image`: {what} is {n} pixels; expected at most \
                 {MAX_INPUT_SIDE} (export the model for a smaller input)"
            ));
            None
        }
        other => other,
    };
    let (h, w) = (side("height", h), side("width", w));
    let (ch, hh, ww) = (c?, h?, w?);
    let bytes = ch * hh * ww * 4;
    if bytes > MAX_INPUT_BYTES {
        problems.push(format!(
            "input `image`: [N, {ch}, {hh}, {ww}] is {} MiB of float32 per \
             image; expected at most {} MiB (export the model for a smaller \
             input)",
            bytes >> 20,
            MAX_INPUT_BYTES >> 20
        ));
        return None;
    }
    if let Some(n) = max_batch
        && n.checked_mul(bytes)
            .is_none_or(|b| b > MAX_BATCH_INPUT_BYTES)
    {
        problems.push(format!(
            "input `image`: the graph fixes the batch at {n} images of \
             [{ch}, {hh}, {ww}], more than {} MiB of input per batch; \
             export it with a dynamic batch axis",
            MAX_BATCH_INPUT_BYTES >> 20
        ));
        return None;
    }
    Some(ImageInput {
        channels: ch,
        height: hh,
        width: ww,
        max_batch,
    })
}

/// Checks that the file declares the outputs `mu`, `logvar` and `recon`,
/// as float32 where it declares their type.
pub(super) fn check_declared_outputs(file: &ParsedFile, problems: &mut Vec<String>) {
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
}

/// Checks the outputs of the graph tract analysed for one image (`typed`)
/// against the input and the metadata: `mu` and `logvar` `[1, Z]` with Z
/// from 1 to [`MAX_LATENT_DIM`] and as the metadata says, `recon` the
/// input's shape, all float32, no intermediate value beyond
/// [`super::MAX_TENSOR_BYTES`]. Returns Z when it is known.
pub(super) fn check_analysed(
    typed: &TypedModel,
    input: &ImageInput,
    meta: &RawMeta,
    problems: &mut Vec<String>,
) -> Option<usize> {
    let (c, h, w) = (input.channels, input.height, input.width);
    let shape_of = |name: &str| -> Option<Vec<usize>> {
        let outlet = find_output(typed, name)?;
        let fact = typed.outlet_fact(outlet).ok()?;
        fact.shape.as_concrete().map(|s| s.to_vec())
    };
    let mu = shape_of(OUTPUT_MU);
    let logvar = shape_of(OUTPUT_LOGVAR);
    let recon = shape_of(OUTPUT_RECON);
    let mut z = None;
    match &mu {
        Some(s) if s.len() == 2 && s[0] == 1 && s[1] > MAX_LATENT_DIM => problems.push(format!(
            "output `mu`: {} latents; expected 1 to {MAX_LATENT_DIM}",
            s[1]
        )),
        Some(s) if s.len() == 2 && s[0] == 1 && s[1] > 0 => z = Some(s[1]),
        other => problems.push(format!(
            "output `mu`: expected [N, Z] ([1, Z] for a batch of 1), found {other:?}"
        )),
    }
    problems.extend(oversized_tensors(typed, "one image"));
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
            find_output(typed, n)
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
    z
}
