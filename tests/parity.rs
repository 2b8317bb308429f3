//! Golden parity: every shipped model reproduces the PyTorch outputs its
//! exporter recorded, within tract's "approximate" tolerance (atol 1e-4,
//! rtol 5e-4), with full and encoder-only plans, batch 1 and batch N, once
//! per kernel variant this CPU runs (and with tract's operators).

use std::path::{Path, PathBuf};

use bvae::kernels::{Isa, Kernels};
use bvae::model::{Runtime, RuntimeOptions};
use bvae::{Decoder, Model, PlanKind};
use ndarray::{ArrayD, IxDyn};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 5e-4;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Every `NAME.golden/` folder shipped in models/.
fn fixtures() -> Vec<(String, PathBuf)> {
    let mut out = vec![];
    for e in std::fs::read_dir(models_dir()).unwrap() {
        let p = e.unwrap().path();
        if let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".golden"))
        {
            out.push((name.to_string(), p.clone()));
        }
    }
    out.sort();
    assert!(
        out.len() >= 2,
        "expected the shipped golden fixtures in models/, found {out:?}"
    );
    out
}

fn npy(dir: &Path, name: &str) -> ArrayD<f32> {
    let path = dir.join(format!("{name}.npy"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (shape, values) =
        read_npy_f32(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ArrayD::from_shape_vec(IxDyn(&shape), values).unwrap()
}

/// The shape and values of a NumPy `.npy` file of little-endian float32 in
/// C order (what the exporter writes: `np.save` of a float32 array).
fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let rest = bytes
        .strip_prefix(b"\x93NUMPY")
        .ok_or("not a .npy file (no magic)")?;
    let (major, rest) = rest.split_at_checked(2).ok_or("truncated")?;
    let (len, rest) = match major[0] {
        1 => {
            let (n, r) = rest.split_at_checked(2).ok_or("truncated")?;
            (u16::from_le_bytes([n[0], n[1]]) as usize, r)
        }
        2 | 3 => {
            let (n, r) = rest.split_at_checked(4).ok_or("truncated")?;
            (u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize, r)
        }
        v => return Err(format!("format version {v}")),
    };
    let (header, data) = rest.split_at_checked(len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|e| e.to_string())?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") || !compact.contains("'fortran_order':False") {
        return Err(format!(
            "expected little-endian float32 in C order, found {header}"
        ));
    }
    let dims = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .ok_or_else(|| format!("no shape in {header}"))?;
    let shape = dims
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|e| format!("shape {dims}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(format!("{} data bytes for shape {shape:?}", data.len()));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((shape, values))
}

/// Largest |got − want| − rtol·|want| over all elements; ≤ atol passes.
fn check(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    let mut worst_at = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - RTOL * w.abs();
        if excess > worst {
            worst = excess;
            worst_at = i;
        }
    }
    assert!(
        worst <= ATOL,
        "{what}: element {worst_at} differs: got {} want {} (excess {worst} > atol {ATOL})",
        got[worst_at],
        want[worst_at]
    );
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

/// Every kernel choice this CPU runs: each of bvae's variants, then
/// tract's operators.
fn every_kernels() -> Vec<Kernels> {
    let mut all: Vec<Kernels> = Isa::available().into_iter().map(Kernels::Own).collect();
    all.push(Kernels::Tract);
    all
}

/// A shipped model loaded to run with `kernels` on `threads` threads.
fn load(name: &str, kernels: Kernels, threads: usize) -> Model {
    let runtime = Runtime::new(RuntimeOptions { threads, kernels }).unwrap();
    Model::load(models_dir().join(format!("{name}.onnx")))
        .unwrap()
        .with_runtime(runtime)
}

fn row(a: &ArrayD<f32>, i: usize) -> Vec<f32> {
    a.index_axis(ndarray::Axis(0), i).iter().copied().collect()
}

#[test]
fn encoder_matches_pytorch_batch_1_and_n() {
    for (kernels, (name, dir)) in every_kernels()
        .into_iter()
        .flat_map(|k| fixtures().into_iter().map(move |f| (k, f)))
    {
        let model = load(&name, kernels, 1);
        let name = format!("{name} ({kernels})");
        let image = npy(&dir, "image");
        let (mu, logvar, recon) = (npy(&dir, "mu"), npy(&dir, "logvar"), npy(&dir, "recon"));
        let n = image.shape()[0];
        let mut max_err = 0f32;
        for kind in [PlanKind::Full, PlanKind::EncoderOnly] {
            // batch 1, image by image
            let mut s = model.plan(kind, 1).unwrap().session().unwrap();
            for i in 0..n {
                s.run_on(&row(&image, i)).unwrap();
                max_err = max_err.max(check(
                    &format!("{name} {kind:?} b1 mu[{i}]"),
                    s.mu().unwrap(),
                    &row(&mu, i),
                ));
                max_err = max_err.max(check(
                    &format!("{name} {kind:?} b1 logvar[{i}]"),
                    s.logvar().unwrap(),
                    &row(&logvar, i),
                ));
                match (kind, s.recon().unwrap()) {
                    (PlanKind::Full, Some(r)) => {
                        max_err =
                            max_err.max(check(&format!("{name} b1 recon[{i}]"), r, &row(&recon, i)))
                    }
                    (PlanKind::EncoderOnly, None) => {}
                    other => panic!("unexpected recon presence {:?}", other.0),
                }
            }
            // batch N in one call
            let mut s = model.plan(kind, n).unwrap().session().unwrap();
            s.run_on(image.as_slice().unwrap()).unwrap();
            max_err = max_err.max(check(
                &format!("{name} {kind:?} bN mu"),
                s.mu().unwrap(),
                mu.as_slice().unwrap(),
            ));
            max_err = max_err.max(check(
                &format!("{name} {kind:?} bN logvar"),
                s.logvar().unwrap(),
                logvar.as_slice().unwrap(),
            ));
            if let Some(r) = s.recon().unwrap() {
                max_err = max_err.max(check(
                    &format!("{name} bN recon"),
                    r,
                    recon.as_slice().unwrap(),
                ));
            }
        }
        println!("{name}: encoder max abs error {max_err:.3e}");
    }
}

#[test]
fn two_threads_compute_the_same_outputs_bit_for_bit() {
    // Each output value is computed by one member of the team with the same
    // kernel and order of sums as on one thread.
    for (isa, (name, dir)) in Isa::available()
        .into_iter()
        .flat_map(|i| fixtures().into_iter().map(move |f| (i, f)))
    {
        let image = npy(&dir, "image");
        let recon = npy(&dir, "recon");
        let mut outputs = vec![];
        let name = format!("{name} ({isa})");
        for threads in [1, 2, 1] {
            let model = load(name.split(' ').next().unwrap(), Kernels::Own(isa), threads);
            let mut s = model.plan(PlanKind::Full, 1).unwrap().session().unwrap();
            let mut got = vec![];
            for i in 0..image.shape()[0] {
                s.run_on(&row(&image, i)).unwrap();
                got.extend_from_slice(s.mu().unwrap());
                got.extend_from_slice(s.logvar().unwrap());
                let r = s.recon().unwrap().unwrap();
                check(
                    &format!("{name} {threads} threads recon[{i}]"),
                    r,
                    &row(&recon, i),
                );
                got.extend_from_slice(r);
            }
            outputs.push(got);
        }
        assert!(outputs[0] == outputs[1], "{name}: 2 threads differ from 1");
        assert!(
            outputs[0] == outputs[2],
            "{name}: not the same after going back to 1"
        );
    }
}

#[test]
fn decoder_matches_pytorch() {
    for (kernels, (name, dir)) in every_kernels()
        .into_iter()
        .flat_map(|k| fixtures().into_iter().map(move |f| (k, f)))
    {
        let model = load(&name, kernels, 1);
        let z = npy(&dir, "z");
        let want = npy(&dir, "decoder_recon");
        let n = z.shape()[0];
        let mut dec =
            Decoder::load(models_dir().join(format!("{name}.decoder.onnx")), &model, n).unwrap();
        let mut out = vec![0.0; want.len()];
        dec.decode(z.as_slice().unwrap(), &mut out).unwrap();
        let err = check(
            &format!("{name} ({kernels}) decoder"),
            &out,
            want.as_slice().unwrap(),
        );
        println!("{name} ({kernels}): decoder max abs error {err:.3e}");
    }
}
