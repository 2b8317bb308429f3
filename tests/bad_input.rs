//! Bad input gets a clear error, exit code 1 and no panic.

mod common;

use std::path::Path;

use common::onnx::{self, node, tensor_type, weights};
use common::{bvae, data, model, s};
use prost::Message;
use tract_onnx::pb;

/// Writes a model these tests built; with `BVAE_FUZZ_SEEDS=DIR` set, a
/// copy goes to DIR too (how fuzz/seeds/onnx_load was made, see
/// fuzz/README.md).
fn save_model(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    if let Some(dir) = std::env::var_os("BVAE_FUZZ_SEEDS") {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let name = path.file_name().unwrap().to_string_lossy();
        let seed = Path::new(&dir).join(format!("{:016x}-{name}", h.finish()));
        std::fs::write(seed, bytes).unwrap();
    }
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
    let model = onnx::model(pb::GraphProto {
        name: "wrong".into(),
        node: nodes,
        input: vec![value(input)],
        output: outputs.iter().map(|o| value(o)).collect(),
        ..Default::default()
    });
    save_model(path, &model.encode_to_vec());
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
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&data("dsprites_normal")),
            "--noise-factor=-1",
        ],
    )
    .fails_with(&["--noise-factor must be 0 (no noise check) or a positive number"]);
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

// ---------------------------------------------------------------------------
// Sizes from outside the program are bounded at load, before anything is
// allocated for them: each case exits 1 with a clear message, never 101.

/// A contract model: `image` of `dims` → `mu` and `logvar` from `latent`
/// nodes (Flatten by default: Z = C·H·W), `recon` = Relu(image).
struct Contract {
    dims: Vec<i64>,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    meta: Vec<(String, String)>,
}

impl Contract {
    fn new(dims: &[i64]) -> Contract {
        Contract {
            dims: dims.to_vec(),
            nodes: vec![
                node("Flatten", &["image"], "mu"),
                node("Flatten", &["image"], "logvar"),
            ],
            initializers: vec![],
            meta: vec![],
        }
    }

    fn meta(mut self, key: &str, value: &str) -> Contract {
        self.meta.push((key.into(), value.into()));
        self
    }

    fn write(self, path: &Path) {
        let mut nodes = self.nodes;
        nodes.push(node("Relu", &["image"], "recon"));
        let out = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        let graph = pb::GraphProto {
            name: "contract".into(),
            node: nodes,
            initializer: self.initializers,
            input: vec![pb::ValueInfoProto {
                name: "image".into(),
                r#type: tensor_type(&self.dims),
                ..Default::default()
            }],
            output: vec![out("mu"), out("logvar"), out("recon")],
            ..Default::default()
        };
        let model = pb::ModelProto {
            metadata_props: self
                .meta
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..onnx::model(graph)
        };
        save_model(path, &model.encode_to_vec());
    }
}

/// `bvae info` and `bvae score` both refuse the model at `p` with `needles`.
fn info_and_score_refuse(dir: &Path, p: &Path, needles: &[&str]) {
    bvae(dir, &["info", s(p)]).fails_with(needles);
    let img = data("dsprites_normal").join("0000.png");
    bvae(dir, &["score", s(p), s(&img)]).fails_with(needles);
}

#[test]
fn the_contract_model_of_these_tests_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.onnx");
    Contract::new(&[-1, 1, 2, 2])
        .meta("bvae.latent_kl", "[0.5, 0.0, 1.0, 2.0]")
        .meta("bvae.latent_names", r#"["x", "", "scale", "shape"]"#)
        .write(&p);
    let out = bvae(dir.path(), &["info", s(&p)]).ok().to_string();
    assert!(out.contains("latents    4"), "{out}");
    // the names: in `info`, and in the explanation `score` gives
    assert!(out.contains("z0   x "), "{out}");
    assert!(out.contains("z2   scale"), "{out}");
    let json = bvae(dir.path(), &["info", s(&p), "--json"])
        .ok()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["latent_names"],
        serde_json::json!(["x", "", "scale", "shape"])
    );
    let img = data("dsprites_normal").join("0000.png");
    let run = bvae(
        dir.path(),
        &["score", s(&p), s(&img), "--json", "--top", "4"],
    );
    let line: serde_json::Value = serde_json::from_str(run.ok().lines().next().unwrap()).unwrap();
    for d in line["latents"].as_array().unwrap() {
        let name = ["x", "", "scale", "shape"][d["latent"].as_u64().unwrap() as usize];
        if name.is_empty() {
            assert!(d.get("name").is_none(), "{d}");
        } else {
            assert_eq!(d["name"], name, "{d}");
        }
    }
}

#[test]
fn a_latent_name_too_long_or_with_control_characters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("names.onnx");
    for bad in [
        r#"["x", "a\nb", "", ""]"#.to_string(),
        format!(r#"["{}", "", "", ""]"#, "n".repeat(33)),
    ] {
        Contract::new(&[-1, 1, 2, 2])
            .meta("bvae.latent_names", &bad)
            .write(&p);
        info_and_score_refuse(
            dir.path(),
            &p,
            &["`bvae.latent_names`: a name has more than 32"],
        );
    }
}

#[test]
fn a_huge_declared_input_is_refused_at_load() {
    // The known bug: a 100000×100000 input made `score` allocate 40 GB
    // and panic (exit 101), and `info` accepted the model.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.onnx");
    Contract::new(&[1, 1, 100_000, 100_000]).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &[
            "height is 100000 pixels; expected at most 4096",
            "width is 100000 pixels; expected at most 4096",
        ],
    );
    // the same size declared by metadata over a dynamic graph
    let p = dir.path().join("meta.onnx");
    Contract::new(&[-1, 1, -1, -1])
        .meta("bvae.height", "100000")
        .meta("bvae.width", "64")
        .write(&p);
    info_and_score_refuse(dir.path(), &p, &["height is 100000 pixels"]);
    // each side allowed, but 192 MiB of float32 for one RGB image
    let p = dir.path().join("bytes.onnx");
    Contract::new(&[1, 3, 4096, 4096]).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["[N, 3, 4096, 4096] is 192 MiB of float32 per image; expected at most 64 MiB"],
    );
    // a graph that fixes a batch of a million 64×64 images
    let p = dir.path().join("batch.onnx");
    Contract::new(&[1_000_000, 1, 64, 64]).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["fixes the batch at 1000000 images", "dynamic batch axis"],
    );
}

#[test]
fn too_many_latents_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // Flatten of a 40×50 gray image: Z = 2000
    let p = dir.path().join("wide.onnx");
    Contract::new(&[1, 1, 40, 50]).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["output `mu`: 2000 latents; expected 1 to 1024"],
    );
    let p = dir.path().join("meta.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.latent_dim", "100000")
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["`bvae.latent_dim` is 100000; expected 1 to 1024 latents"],
    );
}

#[test]
fn latent_metadata_arrays_must_have_one_entry_per_latent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("kl.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.latent_kl", "[1, 2, 3]")
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["`bvae.latent_kl` has 3 entries but the model has 4 latents"],
    );
    let p = dir.path().join("names.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.latent_names", r#"["a", "b", "c", "d", "e"]"#)
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["`bvae.latent_names` has 5 entries but the model has 4 latents"],
    );
    // a long array is refused while it is read, before it is allocated
    let long = format!("[{}0]", "0,".repeat(1_000_000));
    let p = dir.path().join("long.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.latent_kl", &long)
        .meta("bvae.latent_names", r#"{"not": "an array"}"#)
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &[
            "`bvae.latent_kl`: expected a JSON array of at most 1024 numbers",
            "more than 1024 entries",
            "(2000003 bytes)",
            "`bvae.latent_names`: expected a JSON array of at most 1024 strings",
        ],
    );
}

#[test]
fn a_fit_the_runtime_does_not_know_is_refused_at_load() {
    // `bvae.fit` was read from untyped strings by the commands: anything
    // but "letterbox" silently became crop.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fit.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.fit", "stretch")
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["metadata `bvae.fit`: expected \"crop\" or \"letterbox\", found \"stretch\""],
    );
    let p = dir.path().join("letterbox.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.fit", "letterbox")
        .write(&p);
    bvae(dir.path(), &["info", s(&p)]).ok();
}

#[test]
fn gain_normalisation_needs_its_target_mean() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gain.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.illumination", "gain")
        .write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["`bvae.illumination` is \"gain\" but `bvae.illumination_mean`"],
    );
    let p = dir.path().join("gain_ok.onnx");
    Contract::new(&[1, 1, 2, 2])
        .meta("bvae.illumination", "gain")
        .meta("bvae.illumination_mean", "0.4")
        .write(&p);
    let run = bvae(dir.path(), &["info", s(&p)]);
    assert!(run.ok().contains("scaled to mean 0.4000"), "{}", run.stdout);
}

#[test]
fn stored_tensors_must_hold_what_they_declare() {
    let dir = tempfile::tempdir().unwrap();
    let matmul = |c: Contract, w: pb::TensorProto| Contract {
        nodes: vec![
            node("Flatten", &["image"], "flat"),
            node("MatMul", &["flat", "w"], "mu"),
            node("MatMul", &["flat", "w"], "logvar"),
        ],
        initializers: vec![w],
        ..c
    };
    // a weight that claims 10^12 floats but holds 16 bytes
    let mut w = weights("w", &[4, 4], &[0.5; 4]);
    w.dims = vec![1_000_000, 1_000_000];
    let p = dir.path().join("claims.onnx");
    matmul(Contract::new(&[1, 1, 2, 2]), w).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["initializer `w`: shape [1000000, 1000000] of float is more than 1024 MiB"],
    );
    // 16 floats declared, 4 stored
    let mut w = weights("w", &[4, 4], &[0.5; 4]);
    w.dims = vec![4, 4];
    let p = dir.path().join("short.onnx");
    matmul(Contract::new(&[1, 1, 2, 2]), w).write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["initializer `w`: shape [4, 4] of float needs 64 bytes, but it holds 16 bytes"],
    );
    // strings stored as raw bytes (tract's loader panics on them)
    let mut w = weights("w", &[4], &[0.5; 4]);
    w.data_type = 8;
    let p = dir.path().join("strings.onnx");
    matmul(Contract::new(&[1, 1, 2, 2]), w).write(&p);
    info_and_score_refuse(dir.path(), &p, &["a string tensor stored as raw bytes"]);
    // a small input whose graph computes a 16 GB value
    let mut c = Contract::new(&[1, 1, 64, 64]);
    c.nodes = vec![
        node("Tile", &["image", "reps"], "big"),
        node("ReduceMean", &["big"], "mean"),
        node("Flatten", &["mean"], "mu"),
        node("Flatten", &["mean"], "logvar"),
    ];
    c.initializers = vec![pb::TensorProto {
        name: "reps".into(),
        dims: vec![4],
        data_type: 7,
        int64_data: vec![1, 1, 1000, 1000],
        ..Default::default()
    }];
    let p = dir.path().join("tile.onnx");
    c.write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["computes a F32 tensor of [1, 1, 64000, 64000] for one image, more than 1024 MiB"],
    );
}

#[test]
fn external_weights_are_bounded_by_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let external = |name: &str, location: &str, offset: &str, length: &str| {
        let kv = |k: &str, v: &str| pb::StringStringEntryProto {
            key: k.into(),
            value: v.into(),
        };
        let mut w = weights("w", &[4, 4], &[]);
        w.data_location = Some(1);
        w.external_data = vec![kv("location", location), kv("offset", offset)];
        if !length.is_empty() {
            w.external_data.push(kv("length", length));
        }
        let p = dir.path().join(name);
        Contract {
            nodes: vec![
                node("Flatten", &["image"], "flat"),
                node("MatMul", &["flat", "w"], "mu"),
                node("MatMul", &["flat", "w"], "logvar"),
            ],
            initializers: vec![w],
            ..Contract::new(&[1, 1, 2, 2])
        }
        .write(&p);
        p
    };
    std::fs::write(dir.path().join("w.data"), [0u8; 64]).unwrap();
    // the right bytes load
    let p = external("ok.onnx", "w.data", "0", "64");
    bvae(dir.path(), &["info", s(&p)]).ok();
    let p = external("past.onnx", "w.data", "1000000", "64");
    info_and_score_refuse(
        dir.path(),
        &p,
        &["its data starts at byte 1000000 of w.data, which has only 64 bytes"],
    );
    let p = external("long.onnx", "w.data", "32", "18446744073709551615");
    info_and_score_refuse(
        dir.path(),
        &p,
        &[
            "which has only 64 bytes",
            "expected the w.data written together",
        ],
    );
    let p = external("short.onnx", "w.data", "32", "");
    info_and_score_refuse(
        dir.path(),
        &p,
        &["shape [4, 4] of float needs 64 bytes, but its external data in w.data is 32 bytes"],
    );
    let p = external("offset.onnx", "w.data", "-5", "");
    info_and_score_refuse(
        dir.path(),
        &p,
        &["external data `offset` is \"-5\"; expected a byte count"],
    );
    // outside the model's folder, or not a file (reading /dev/zero never ends)
    for loc in ["/dev/zero", "../w.data"] {
        let p = external("outside.onnx", loc, "0", "");
        info_and_score_refuse(
            dir.path(),
            &p,
            &[&format!(
                "external data location {loc:?}: expected a file name relative to the model's folder"
            )],
        );
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let p = external("dir.onnx", "sub", "0", "");
    info_and_score_refuse(dir.path(), &p, &["is not a regular file"]);
}

/// The shipped dsprites profile with `edit` applied, written to `dir`.
fn edited_profile(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text = std::fs::read_to_string(model("dsprites.calibration.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
    s(&p).to_string()
}

#[test]
fn profile_arrays_must_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let img = data("dsprites_normal").join("0000.png");
    let score = |profile: &str| {
        bvae(
            dir.path(),
            &["score", s(&model("dsprites.onnx")), s(&img), "-c", profile],
        )
    };
    let p = edited_profile(dir.path(), "p01.json", |v| {
        v["latent"]["p01"].as_array_mut().unwrap().pop();
    });
    score(&p).fails_with(&[
        "p01.json",
        "`latent.p01` has 9 entries, expected 10",
        "run `bvae calibrate` again",
    ]);
    let p = edited_profile(dir.path(), "cov.json", |v| {
        let cov = v["latent"]["gaussian"]["cov"].as_array_mut().unwrap();
        cov.extend(std::iter::repeat_n(serde_json::json!(0.0), 10_000));
    });
    score(&p).fails_with(&["`latent.gaussian.cov` has 10100 entries, expected 100"]);
    let p = edited_profile(dir.path(), "quantiles.json", |v| {
        v["scores"]["recon"]["normal"]["quantiles"] = serde_json::json!(vec![[0.5, 1.0]; 1000]);
    });
    score(&p).fails_with(&["score recon has 1000 quantiles: expected at most 64"]);
    let p = edited_profile(dir.path(), "bank_row.json", |v| {
        v["knn"]["bank"][3].as_array_mut().unwrap().pop();
    });
    score(&p).fails_with(&["knn bank row 3 has 9 values, expected 10"]);
    let p = edited_profile(dir.path(), "bank_k.json", |v| {
        v["knn"]["k"] = serde_json::json!(100_000);
    });
    score(&p).fails_with(&["knn needs 1 to 600 neighbours"]);
    let p = edited_profile(dir.path(), "no_bank.json", |v| {
        v.as_object_mut().unwrap().remove("knn");
    });
    score(&p).fails_with(&["score knn has a threshold but the profile lacks what it needs"]);
    let p = edited_profile(dir.path(), "part_std.json", |v| {
        v["combined"][0]["std"] = serde_json::json!(0.0);
    });
    score(&p).fails_with(&["combined part latent", "std > 0"]);
    let p = edited_profile(dir.path(), "pixel_len.json", |v| {
        v["pixel"]["mean"].as_array_mut().unwrap().pop();
    });
    score(&p).fails_with(&[
        "pixel statistics are not for this model's 4096 input values: 4095 means and 4096 stds",
    ]);
    let p = edited_profile(dir.path(), "pixel_std.json", |v| {
        v["pixel"]["std"][7] = serde_json::json!(-1.0);
    });
    score(&p).fails_with(&["pixel statistics must be finite numbers, with every std ≥ 0"]);
    let p = edited_profile(dir.path(), "no_pixel.json", |v| {
        v.as_object_mut().unwrap().remove("pixel");
    });
    score(&p).fails_with(&["score pixel has a threshold but the profile lacks what it needs"]);
    // a profile file larger than any real one is refused before it is parsed
    let big = dir.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(65 << 20).unwrap();
    score(s(&big)).fails_with(&["big.json", "more than 64 MiB"]);
}

#[test]
fn loop_options_out_of_range() {
    // 1e300 seconds made Duration::from_secs_f64 panic (exit 101).
    let dir = tempfile::tempdir().unwrap();
    let (onnx, profile) = (model("dsprites.onnx"), model("dsprites.calibration.json"));
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "watch",
            s(&onnx),
            "-c",
            s(&profile),
            "--source",
            "synthetic",
            "--headless",
            "--max-frames",
            "1",
        ];
        args.extend_from_slice(extra);
        bvae(dir.path(), &args)
    };
    watch(&["--stall-timeout", "1e300"])
        .fails_with(&["--stall-timeout must be a number of seconds from 0 to 1e9, found 1e300"]);
    watch(&["--threads", "100000"]).fails_with(&["100000 inference threads: expected 1 to 256"]);
    for (line, needle) in [
        (
            "stats_interval = 1e300",
            "`stats_interval` must be a number of seconds",
        ),
        ("threads = 0", "`threads` is 0: expected 1 to 256"),
        ("threads = 100000000000", "`threads` is 100000000000"),
        (
            "snapshot_budget_mb = -1.0",
            "`snapshot_budget_mb` must be a number of MB > 0",
        ),
        ("source = \"teapot:1\"", "`source` is \"teapot:1\""),
        ("headless = \"yes\"", "invalid configuration"),
    ] {
        let cfg = dir.path().join("watch.toml");
        std::fs::write(&cfg, line).unwrap();
        watch(&["--config", s(&cfg)]).fails_with(&["invalid configuration", "watch.toml", needle]);
    }
}

#[test]
fn an_output_that_nothing_computes() {
    // Found by fuzzing (onnx_load): tract's parser indexed its graph by
    // the output's name and panicked ("no entry found for key").
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ghost.onnx");
    let mut c = Contract::new(&[1, 1, 2, 2]);
    c.nodes = vec![node("Flatten", &["image"], "logvar")];
    c.write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &["output `mu` is computed by no node and is neither an input nor an initializer"],
    );
}

/// Every input under tests/data/fuzz that once crashed a fuzz target
/// (fuzz/README.md), run through the command that reads such a file: each
/// fails cleanly (exit 1, a message, no panic) or succeeds.
#[test]
fn inputs_that_crashed_the_fuzzers() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(data("fuzz"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let run = if name.ends_with(".onnx") {
            bvae(dir.path(), &["info", s(f)])
        } else {
            panic!("{name}: no command reads this kind of file");
        };
        assert!(
            run.code == 0 || run.code == 1,
            "{name}: exit {}\n{}",
            run.code,
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{name}:\n{}", run.stderr);
    }
}

#[test]
fn convolution_windows_out_of_range() {
    // Found by fuzzing (onnx_load): a ConvTranspose whose kernel is 0
    // overflowed tract's shape arithmetic (padding.rs, "attempt to
    // subtract with overflow").
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights("w", &[1, 1, 0, 0], &[]);
    w.raw_data.clear();
    let mut c = Contract::new(&[1, 1, 4, 4]);
    c.nodes = vec![
        node("ConvTranspose", &["image", "w"], "up"),
        node("Flatten", &["up"], "mu"),
        node("Flatten", &["up"], "logvar"),
    ];
    c.initializers = vec![w];
    let p = dir.path().join("deconv.onnx");
    c.write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &[
            "ConvTranspose node `ConvTranspose_up`: the kernel of weights `w` is [0, 0]; expected each from 1 to 4096",
        ],
    );
    let mut pool = node("MaxPool", &["image"], "pooled");
    pool.attribute = vec![pb::AttributeProto {
        name: "kernel_shape".into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![0, 1_000_000_000_000],
        ..Default::default()
    }];
    let mut c = Contract::new(&[1, 1, 4, 4]);
    c.nodes = vec![
        pool,
        node("Flatten", &["pooled"], "mu"),
        node("Flatten", &["pooled"], "logvar"),
    ];
    let p = dir.path().join("pool.onnx");
    c.write(&p);
    info_and_score_refuse(
        dir.path(),
        &p,
        &[
            "MaxPool node `MaxPool_pooled`: kernel_shape [0, 1000000000000]; expected each from 1 to 4096",
        ],
    );
}

/// `BVAE_KERNELS` forces a kernel variant: an unknown name, or a variant
/// this CPU cannot run, is refused by name; each variant it runs is named
/// by `bvae info`, and scores are the same whichever runs.
#[test]
fn kernel_variants_are_forced_by_name_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model("dsprites.onnx");
    let run = |kernels: &str, args: &[&str]| {
        let r = common::bvae_with_env(dir.path(), &[("BVAE_KERNELS", kernels)], args);
        (r.code, r.stdout, r.stderr)
    };
    let (code, _, err) = run("sse9", &["info", s(&m)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("BVAE_KERNELS=\"sse9\": expected one of"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Every command refuses it, not only those that build their own
    // runtime.
    let (code, _, err) = run("sse9", &["score", s(&m), s(&data("dsprites_anomalous"))]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("expected one of"), "{err}");
    let available = bvae::kernels::Isa::available();
    for isa in bvae::kernels::Isa::ALL {
        let (code, out, err) = run(isa.name(), &["info", s(&m)]);
        if available.contains(&isa) {
            assert_eq!(code, 0, "{isa}: {err}");
            assert!(out.contains(&format!("kernels    {isa} ")), "{isa}: {out}");
        } else {
            assert_eq!(code, 1, "{isa}: {out}");
            assert!(err.contains("this CPU cannot run it"), "{isa}: {err}");
        }
    }
    // A few images: under qemu (ARM in .ci/run) each pass is slow.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let mut all: Vec<_> = std::fs::read_dir(data("dsprites_anomalous"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    for p in all.iter().step_by(8) {
        std::fs::copy(p, images.join(p.file_name().unwrap())).unwrap();
    }
    let scores = |kernels: &str| {
        let (code, out, err) = run(kernels, &["score", s(&m), s(&images), "--json"]);
        assert_eq!(code, 0, "{kernels}: {err}");
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["scores"]["kl"].as_f64().unwrap()
            })
            .collect::<Vec<_>>()
    };
    let tract = scores("tract");
    assert!(!tract.is_empty());
    for isa in available {
        let own = scores(isa.name());
        assert_eq!(own.len(), tract.len());
        for (a, b) in own.iter().zip(&tract) {
            assert!(
                (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                "{isa}: {a} vs tract {b}"
            );
        }
    }
}
