//! What a plan is made of: with each of bvae's kernel variants this CPU
//! runs, every convolution, transposed convolution and dense layer of the
//! shipped models is handed to bvae's kernel (with the ReLU after it fused in), the plan computes
//! what tract's own plan computes, and a layer the kernels do not run
//! stays with tract.

mod common;

use std::collections::BTreeMap;

use bvae::kernels::{Isa, Kernels};
use bvae::model::{Runtime, RuntimeOptions};
use bvae::{Decoder, Model, PlanKind};
use common::onnx::{node, tensor_type, weights};
use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// The name bvae's op has in a tract plan.
const BVAE_OP: &str = "BvaeConv";

fn runtime(kernels: Kernels) -> Runtime {
    Runtime::new(RuntimeOptions {
        threads: 1,
        kernels,
    })
    .unwrap()
}

/// What a file's graph holds: its ops by type, how many of its layers
/// (`Conv`, `ConvTranspose`, `Gemm`) feed a `Relu` directly, and how many
/// of its `Gemm` layers have fewer outputs than bvae's dense kernel takes
/// ([`bvae::tract_conv::MIN_DENSE_OUTPUTS`]).
fn onnx_ops(path: &std::path::Path) -> (BTreeMap<String, usize>, usize, usize) {
    let bytes = std::fs::read(path).unwrap();
    let model = pb::ModelProto::decode(&bytes[..]).unwrap();
    let graph = model.graph.unwrap();
    let mut ops = BTreeMap::new();
    for n in &graph.node {
        *ops.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    let small_dense = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Gemm")
        .filter(|n| {
            let trans_b = n.attribute.iter().any(|a| a.name == "transB" && a.i == 1);
            let w = graph.initializer.iter().find(|t| t.name == n.input[1]);
            let dims = &w.expect("Gemm weights are an initializer").dims;
            let outputs = if trans_b { dims[0] } else { dims[1] };
            (outputs as usize) < bvae::tract_conv::MIN_DENSE_OUTPUTS
        })
        .count();
    let relu_inputs: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Relu")
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let layers_into_relu = graph
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Conv" | "ConvTranspose" | "Gemm"))
        .filter(|n| n.output.iter().any(|o| relu_inputs.contains(&o.as_str())))
        .count();
    (ops, layers_into_relu, small_dense)
}

/// Nodes of a plan that bvae's kernels run, with their descriptions.
fn bvae_nodes(plan: &TypedRunnableModel) -> Vec<String> {
    plan.model()
        .nodes()
        .iter()
        .filter(|n| n.op.name() == BVAE_OP)
        .map(|n| n.op.info().unwrap().join(" "))
        .collect()
}

fn max_rel_error(want: &[f32], got: &[f32]) -> f32 {
    assert_eq!(want.len(), got.len());
    want.iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs() / (1.0 + a.abs()))
        .fold(0.0, f32::max)
}

/// Test images in [0, 1] for a model's input.
fn images(len: usize, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|k| {
            (0..len)
                .map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 999.0)
                .collect()
        })
        .collect()
}

#[test]
fn shipped_models_run_every_layer_on_bvae_kernels_and_match_tract() {
    for (isa, name) in Isa::available()
        .into_iter()
        .flat_map(|i| ["dsprites", "synthetic", "tiny_rgb"].map(move |n| (i, n)))
    {
        let path = common::model(&format!("{name}.onnx"));
        let (ops, into_relu, small_dense) = onnx_ops(&path);
        let layers = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
            .iter()
            .map(|op| ops.get(*op).copied().unwrap_or(0))
            .sum::<usize>();
        assert!(layers > 0, "{name}: no layer in {ops:?}");
        let own = Model::load(&path)
            .unwrap()
            .with_runtime(runtime(Kernels::Own(isa)));
        let tract = own.clone().with_runtime(runtime(Kernels::Tract));
        let name = format!("{name} ({isa})");
        let full = own.plan(PlanKind::Full, 1).unwrap();
        let nodes = bvae_nodes(full.runnable());
        let fused = nodes.iter().filter(|d| d.contains("relu true")).count();
        println!(
            "{name}: {layers} layers in the file ({ops:?}); {} on bvae's kernels, {fused} with the ReLU fused",
            nodes.len()
        );
        for d in &nodes {
            println!("  {d}");
        }
        // A dense layer whose output is sliced (the `mu` and `logvar` heads
        // of one Gemm) becomes one node per slice.
        let convs = nodes.iter().filter(|d| !d.starts_with("dense")).count();
        let dense = nodes.len() - convs;
        let file_convs =
            ops.get("Conv").copied().unwrap_or(0) + ops.get("ConvTranspose").copied().unwrap_or(0);
        assert_eq!(convs, file_convs, "{name}: every convolution is bvae's");
        assert!(
            dense >= layers - file_convs - small_dense,
            "{name}: every dense layer but the {small_dense} small ones is bvae's"
        );
        assert_eq!(fused, into_relu, "{name}: each ReLU after a layer is fused");
        let reference = tract.plan(PlanKind::Full, 1).unwrap();
        assert!(
            bvae_nodes(reference.runnable()).is_empty(),
            "{name}: tract's kernels chosen, still substituted"
        );
        // The encoder-only plan keeps the encoder's layers only.
        let enc = bvae_nodes(own.plan(PlanKind::EncoderOnly, 1).unwrap().runnable());
        assert!(enc.len() < nodes.len(), "{name}: {enc:?}");

        let (mut a, mut b) = (full.session().unwrap(), reference.session().unwrap());
        let mut worst = 0.0f32;
        for img in images(own.spec().image_len(), 3) {
            a.run_on(&img).unwrap();
            b.run_on(&img).unwrap();
            worst = worst.max(max_rel_error(b.mu().unwrap(), a.mu().unwrap()));
            worst = worst.max(max_rel_error(b.logvar().unwrap(), a.logvar().unwrap()));
            let (ra, rb) = (a.recon().unwrap().unwrap(), b.recon().unwrap().unwrap());
            worst = worst.max(max_rel_error(rb, ra));
        }
        println!("{name}: largest difference to tract's plan {worst:.2e}");
        assert!(worst < 1e-4, "{name}: {worst}");

        // The decoder's plan too.
        let dec_path = path.with_file_name(format!(
            "{}.decoder.onnx",
            name.split(' ').next().unwrap_or_default()
        ));
        let dec = Decoder::load(&dec_path, &own, 1).unwrap();
        let dec_nodes = bvae_nodes(dec.runnable());
        assert!(!dec_nodes.is_empty(), "{name} decoder: {dec_nodes:?}");
        let tract_dec = Decoder::load(&dec_path, &tract, 1).unwrap();
        assert!(bvae_nodes(tract_dec.runnable()).is_empty());
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

/// A contract model of an RGB 8×8 input: `conv` (weights `w` of `w_dims`,
/// a bias, 3×3, padded by 1, with `extra` attributes) then ReLU, flattened
/// into `mu` and `logvar`; `recon` is the input.
fn one_conv_model(w_dims: &[i64], extra: Vec<pb::AttributeProto>) -> Vec<u8> {
    let count = w_dims.iter().product::<i64>() as usize;
    let w: Vec<f32> = (0..count).map(|i| ((i % 17) as f32 - 8.0) / 40.0).collect();
    let oc = w_dims[0];
    let b: Vec<f32> = (0..oc).map(|i| i as f32 / 10.0 - 0.3).collect();
    let node = |op: &str, inputs: &[&str], output: &str, attribute| pb::NodeProto {
        attribute,
        ..node(op, inputs, output)
    };
    let mut attrs = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])];
    attrs.extend(extra);
    let out = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    };
    common::onnx::model(pb::GraphProto {
        name: "one conv".into(),
        node: vec![
            node("Conv", &["image", "w", "b"], "conv", attrs),
            node("Relu", &["conv"], "act", vec![]),
            node("Flatten", &["act"], "mu", vec![]),
            node("Flatten", &["act"], "logvar", vec![]),
            node("Identity", &["image"], "recon", vec![]),
        ],
        initializer: vec![weights("w", w_dims, &w), weights("b", &[oc], &b)],
        input: vec![pb::ValueInfoProto {
            name: "image".into(),
            r#type: tensor_type(&[1, 3, 8, 8]),
            ..Default::default()
        }],
        output: vec![out("mu"), out("logvar"), out("recon")],
        ..Default::default()
    })
    .encode_to_vec()
}

#[test]
fn layers_the_kernels_do_not_run_stay_with_tract() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("plain", vec![16, 3, 3, 3], vec![], 1),
        (
            "dilated",
            vec![16, 3, 3, 3],
            vec![ints("dilations", &[2, 2])],
            0,
        ),
        ("grouped", vec![15, 1, 3, 3], vec![int("group", 3)], 0),
    ];
    for (what, w_dims, extra, replaced) in cases {
        let path = dir.path().join(format!("{what}.onnx"));
        let bytes = one_conv_model(&w_dims, extra);
        let own = Model::load_bytes(&bytes, &path)
            .unwrap()
            .with_runtime(runtime(Kernels::Own(Isa::Scalar)));
        let tract = own.clone().with_runtime(runtime(Kernels::Tract));
        let plan = own.plan(PlanKind::Full, 1).unwrap();
        let nodes = bvae_nodes(plan.runnable());
        println!("{what}: {nodes:?}");
        assert_eq!(nodes.len(), replaced, "{what}: {nodes:?}");
        let (mut a, mut b) = (
            plan.session().unwrap(),
            tract.plan(PlanKind::Full, 1).unwrap().session().unwrap(),
        );
        for img in images(own.spec().image_len(), 2) {
            a.run_on(&img).unwrap();
            b.run_on(&img).unwrap();
            let err = max_rel_error(b.mu().unwrap(), a.mu().unwrap());
            assert!(err < 1e-5, "{what}: {err}");
        }
    }
}

#[test]
fn tract_plans_on_a_thread_pool_compute_what_one_thread_does() {
    // Where bvae has no kernel (or they are off), `--threads N` gives
    // tract's matrix products a pool of its own runtime.
    let path = common::model("dsprites.onnx");
    let one = Model::load(&path)
        .unwrap()
        .with_runtime(runtime(Kernels::Tract));
    let pool = one.clone().with_runtime(
        Runtime::new(RuntimeOptions {
            threads: 2,
            kernels: Kernels::Tract,
        })
        .unwrap(),
    );
    let (mut a, mut b) = (
        one.plan(PlanKind::Full, 1).unwrap().session().unwrap(),
        pool.plan(PlanKind::Full, 1).unwrap().session().unwrap(),
    );
    for img in images(one.spec().image_len(), 3) {
        a.run_on(&img).unwrap();
        b.run_on(&img).unwrap();
        assert!(max_rel_error(a.mu().unwrap(), b.mu().unwrap()) < 1e-5);
        let (ra, rb) = (a.recon().unwrap().unwrap(), b.recon().unwrap().unwrap());
        assert!(max_rel_error(ra, rb) < 1e-5);
    }
}
