//! Bad input gets a clear error, exit code 1 and no panic.

mod common;

use std::path::Path;

use common::{bvae, data, model, s};
use prost::Message;
use tract_onnx::pb;

fn tensor_type(dims: &[i64]) -> Option<pb::TypeProto> {
    Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: 1,
            shape: Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|&d| pb::tensor_shape_proto::Dimension {
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    })
}

/// A valid ONNX model: `input` [shape] → Relu → each of `outputs`.
fn write_model(path: &Path, input: &str, shape: &[i64], outputs: &[&str]) {
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: tensor_type(shape),
        ..Default::default()
    };
    let nodes = outputs
        .iter()
        .map(|o| pb::NodeProto {
            input: vec![input.into()],
            output: vec![o.to_string()],
            name: format!("relu_{o}"),
            op_type: "Relu".into(),
            ..Default::default()
        })
        .collect();
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "wrong".into(),
            node: nodes,
            input: vec![value(input)],
            output: outputs.iter().map(|o| value(o)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    bvae(dir.path(), &["info", "nope.onnx"]).fails_with(&["nope.onnx", "No such file"]);
}

#[test]
fn truncated_and_random_onnx_files() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model("dsprites.onnx")).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    bvae(dir.path(), &["info", s(&cut)]).fails_with(&["cut.onnx", "not a readable ONNX model"]);
    let mut state = 0x1234_5678u32;
    let random: Vec<u8> = (0..5000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let rnd = dir.path().join("random.onnx");
    std::fs::write(&rnd, random).unwrap();
    bvae(
        dir.path(),
        &[
            "score",
            s(&rnd),
            s(&data("dsprites_normal").join("0000.png")),
        ],
    )
    .fails_with(&["random.onnx", "ONNX"]);
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    bvae(dir.path(), &["info", s(&empty)]).fails_with(&["empty"]);
}

#[test]
fn valid_onnx_that_breaks_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // a classifier-like graph: wrong input name and rank, no β-VAE outputs
    let p = dir.path().join("mlp.onnx");
    write_model(&p, "input", &[1, 784], &["logits"]);
    bvae(dir.path(), &["info", s(&p)]).fails_with(&[
        "breaks the bvae model contract",
        "expected one input named `image`",
        "`input` float [1, 784]",
        "expected an output named `mu`",
        "expected an output named `recon`",
    ]);
    // right input, outputs named right but shapes wrong (mu is an image)
    let p = dir.path().join("shapes.onnx");
    write_model(&p, "image", &[1, 1, 8, 8], &["mu", "logvar", "recon"]);
    bvae(dir.path(), &["info", s(&p)]).fails_with(&["output `mu`: expected [N, Z]"]);
    // five channels
    let p = dir.path().join("five.onnx");
    write_model(&p, "image", &[1, 5, 8, 8], &["mu", "logvar", "recon"]);
    bvae(dir.path(), &["info", s(&p)])
        .fails_with(&["expected 1 (gray) or 3 (RGB) channels, found 5"]);
}

#[test]
fn files_that_are_not_images() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("notes.png");
    std::fs::write(&txt, "these are my notes, not a picture").unwrap();
    let good = data("dsprites_normal").join("0000.png");
    let run = bvae(
        dir.path(),
        &["score", s(&model("dsprites.onnx")), s(&good), s(&txt)],
    );
    run.fails_with(&[
        "notes.png",
        "not a readable PNG or JPEG image",
        "1 of 2 images could not be read",
    ]);
    // the readable image was still scored
    assert!(run.stdout.contains("0000.png"));
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn huge_declared_image_size() {
    // A PNG whose header claims 100000×100000 pixels (30 GB as RGB).
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png.extend_from_slice(&0u32.to_be_bytes());
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.png");
    std::fs::write(&p, png).unwrap();
    bvae(dir.path(), &["encode", s(&model("dsprites.onnx")), s(&p)])
        .fails_with(&["bomb.png", "too large"]);
}

#[test]
fn profile_for_another_model_and_corrupt_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let normal = dir.path().join("normal");
    std::fs::create_dir(&normal).unwrap();
    for i in 0..30 {
        let f = format!("{i:04}.png");
        std::fs::copy(data("dsprites_normal").join(&f), normal.join(&f)).unwrap();
    }
    let prof = dir.path().join("tiny.json");
    bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("tiny_rgb.onnx")),
            s(&normal),
            "--fpr",
            "0.1",
            "-o",
            s(&prof),
        ],
    )
    .ok();
    let img = normal.join("0000.png");
    bvae(
        dir.path(),
        &["score", s(&model("dsprites.onnx")), s(&img), "-c", s(&prof)],
    )
    .fails_with(&["was made for another model", "bvae calibrate"]);
    let broken = dir.path().join("broken.json");
    let text = std::fs::read_to_string(&prof).unwrap();
    std::fs::write(&broken, &text[..text.len() / 2]).unwrap();
    bvae(
        dir.path(),
        &[
            "score",
            s(&model("tiny_rgb.onnx")),
            s(&img),
            "-c",
            s(&broken),
        ],
    )
    .fails_with(&["broken.json", "not a bvae profile"]);
    bvae(
        dir.path(),
        &[
            "score",
            s(&model("tiny_rgb.onnx")),
            s(&img),
            "-c",
            "missing.json",
        ],
    )
    .fails_with(&["missing.json"]);
}

#[test]
fn empty_and_missing_folders() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "no images here").unwrap();
    bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&empty),
            "-o",
            "p.json",
        ],
    )
    .fails_with(&["holds no images"]);
    assert!(
        !dir.path().join("p.json").exists(),
        "no profile may be written on failure"
    );
    bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            "nowhere",
            "-o",
            "p.json",
        ],
    )
    .fails_with(&["nowhere", "is not a folder"]);
    bvae(
        dir.path(),
        &["encode", s(&model("dsprites.onnx")), s(&empty)],
    )
    .fails_with(&["holds no images"]);
}

#[test]
fn bad_options() {
    let dir = tempfile::tempdir().unwrap();
    bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&data("dsprites_normal")),
            "--fpr",
            "2",
        ],
    )
    .fails_with(&["--fpr must be in (0, 0.5]"]);
    bvae(
        dir.path(),
        &["traverse", s(&model("dsprites.onnx")), "--steps", "1"],
    )
    .fails_with(&["--steps"]);
    bvae(
        dir.path(),
        &[
            "traverse",
            s(&model("dsprites.onnx")),
            "--decoder",
            s(&model("tiny_rgb.decoder.onnx")),
        ],
    )
    .fails_with(&["tiny_rgb.decoder.onnx", "10"]);
}

#[test]
fn external_weights_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny_rgb.onnx");
    std::fs::copy(model("tiny_rgb.onnx"), &p).unwrap();
    bvae(dir.path(), &["info", s(&p)]).fails_with(&["tiny_rgb.onnx.data", "keeps its weights in"]);
}
