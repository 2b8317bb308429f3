//! The CLI run as a user runs it: each subcommand on the shipped models.

mod common;

use bvae::imageio::{encode_png, load_image};
use common::{bvae, data, model, s};
use serde_json::Value;

#[test]
fn info_describes_both_shipped_models() {
    let dir = tempfile::tempdir().unwrap();
    let text = bvae(dir.path(), &["info", s(&model("dsprites.onnx"))]);
    let out = text.ok();
    for needle in [
        "input      image float [N, 1, 64, 64]",
        "latents    10",
        "bernoulli",
        "active",
        "load time",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let j: Value = serde_json::from_str(
        bvae(dir.path(), &["info", s(&model("tiny_rgb.onnx")), "--json"]).ok(),
    )
    .unwrap();
    assert_eq!(j["latent_dim"], 6);
    assert_eq!(j["channels"], 3);
    assert_eq!(j["height"], 32);
    assert_eq!(j["likelihood"], "gaussian");
    assert_eq!(j["objective"], "capacity");
    assert_eq!(j["latent_kl"].as_array().unwrap().len(), 6);
}

#[test]
fn encode_writes_json_lines_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let imgs: Vec<String> = (0..3)
        .map(|i| s(&data("dsprites_normal").join(format!("{i:04}.png"))).to_string())
        .collect();
    let m = model("dsprites.onnx");
    let mut args = vec!["encode", s(&m)];
    args.extend(imgs.iter().map(String::as_str));
    let run = bvae(dir.path(), &args);
    let lines: Vec<Value> = run
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["mu"].as_array().unwrap().len(), 10);
        assert_eq!(l["logvar"].as_array().unwrap().len(), 10);
        assert!(
            l["kl"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k.as_f64().unwrap() >= 0.0)
        );
    }
    args.push("--csv");
    let csv = bvae(dir.path(), &args);
    let rows: Vec<&str> = csv.ok().lines().collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].split(',').count(), 1 + 30);
    assert_eq!(rows[1].split(',').count(), 1 + 30);
    // an RGB model on gray images: channels are converted
    let rgb = bvae(
        dir.path(),
        &["encode", s(&model("tiny_rgb.onnx")), &imgs[0]],
    );
    let l: Value = serde_json::from_str(rgb.ok().trim()).unwrap();
    assert_eq!(l["mu"].as_array().unwrap().len(), 6);
}

/// Calibrates on the first half of the shipped normal images and checks the
/// false-positive rate of every score's threshold on the other half.
#[test]
fn calibration_threshold_holds_on_held_out_normal_images() {
    let dir = tempfile::tempdir().unwrap();
    let (fit, held) = (dir.path().join("fit"), dir.path().join("held"));
    std::fs::create_dir_all(&fit).unwrap();
    std::fs::create_dir_all(&held).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(data("dsprites_normal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, f) in files.iter().enumerate() {
        let to = if i % 2 == 0 { &fit } else { &held };
        std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
    }
    let fpr = 0.05;
    let profile = dir.path().join("p.json");
    let cal = bvae(
        dir.path(),
        &[
            "calibrate",
            s(&model("dsprites.onnx")),
            s(&fit),
            "--fpr",
            "0.05",
            "-o",
            s(&profile),
        ],
    );
    let out = cal.ok();
    assert!(out.contains("default score"), "{out}");
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(p["frames"], 300);
    let n_held = files.len() / 2;
    // Sampling error: the count of false positives among n held-out frames
    // has sd √(n p (1−p)) ≈ 3.8, and the threshold itself is a quantile of
    // 300 frames (sd of its true FPR ≈ √(p(1−p)/300) ≈ 0.0126, i.e. 3.8
    // frames). 4 combined sd ≈ 21 frames around the expected 15.
    let expected = fpr * n_held as f64;
    let tolerance = 4.0 * (2.0 * n_held as f64 * fpr * (1.0 - fpr)).sqrt();
    for method in ["recon", "kl", "elbo", "latent", "knn", "combined"] {
        let run = bvae(
            dir.path(),
            &[
                "score",
                s(&model("dsprites.onnx")),
                s(&held),
                "-c",
                s(&profile),
                "--method",
                method,
                "--json",
            ],
        );
        let flagged = run
            .ok()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["decision"]["anomalous"].as_bool().unwrap())
            .count();
        eprintln!(
            "{method}: {flagged} of {n_held} held-out normal images above the fpr {fpr} threshold"
        );
        assert!(
            (flagged as f64 - expected).abs() <= tolerance,
            "{method}: {flagged} false positives of {n_held}, expected {expected} ± {tolerance:.1}"
        );
    }
    // Anomalous images (two sprites, an occluding block) are flagged far
    // more often than normal ones by the default score.
    let run = bvae(
        dir.path(),
        &[
            "score",
            s(&model("dsprites.onnx")),
            s(&data("dsprites_anomalous")),
            "-c",
            s(&profile),
            "--json",
        ],
    );
    let lines: Vec<Value> = run
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let flagged = lines
        .iter()
        .filter(|v| v["decision"]["anomalous"].as_bool().unwrap())
        .count();
    eprintln!(
        "default score flags {flagged} of {} anomalous images",
        lines.len()
    );
    assert!(
        flagged as f64 >= 0.5 * lines.len() as f64,
        "only {flagged} of {} anomalies flagged",
        lines.len()
    );
    assert_eq!(lines[0]["latents"].as_array().unwrap().len(), 3);
    assert!(lines[0]["latents"][0]["z"].is_number());
}

#[test]
fn score_without_calibration_reports_every_score_but_latent() {
    let dir = tempfile::tempdir().unwrap();
    let img = data("dsprites_normal").join("0000.png");
    let run = bvae(
        dir.path(),
        &["score", s(&model("dsprites.onnx")), s(&img), "--json"],
    );
    let v: Value = serde_json::from_str(run.ok().trim()).unwrap();
    assert!(v["scores"]["recon"].as_f64().unwrap() > 0.0);
    assert!(v["scores"]["elbo"].as_f64().unwrap() > 0.0);
    assert!(v["scores"]["kl"].as_f64().unwrap() >= 0.0);
    assert!(v["scores"]["latent"].is_null());
    assert!(v["decision"].is_null());
}

/// `bvae score` applies the profile's sensor-noise check to the image as
/// it was read: a normal sprite passes it, the same sprite under heavy
/// noise is anomalous by it, with the noise in the decision.
#[test]
fn score_applies_the_noise_check_of_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let clean = load_image(&data("dsprites_normal").join("0000.png")).unwrap();
    let mut noisy = clean.clone();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for v in noisy.data.iter_mut() {
        // ±48 gray levels, uniform (σ ≈ 28, 11% of full scale)
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = (*v as i32 + (state % 97) as i32 - 48).clamp(0, 255) as u8;
    }
    let png = encode_png(
        noisy.width as u32,
        noisy.height as u32,
        noisy.format,
        &noisy.data,
    )
    .unwrap();
    let noisy_path = dir.path().join("noisy.png");
    std::fs::write(&noisy_path, png).unwrap();
    let decide = |img: &std::path::Path| -> Value {
        let run = bvae(
            dir.path(),
            &[
                "score",
                s(&model("dsprites.onnx")),
                s(img),
                "-c",
                s(&model("dsprites.calibration.json")),
                "--json",
            ],
        );
        let v: Value = serde_json::from_str(run.ok().trim()).unwrap();
        v["decision"].clone()
    };
    let calm = decide(&data("dsprites_normal").join("0000.png"));
    let loud = decide(&noisy_path);
    let sigma = |d: &Value| d["noise"]["sigma"].as_f64().unwrap();
    let limit = calm["noise"]["threshold"].as_f64().unwrap();
    assert!(sigma(&calm) < limit, "{calm}");
    assert!(sigma(&loud) > limit && loud["anomalous"] == true, "{loud}");
}

#[test]
fn traverse_writes_a_grid_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grid.png");
    let run = bvae(
        dir.path(),
        &[
            "traverse",
            s(&model("dsprites.onnx")),
            "-o",
            s(&out),
            "--steps",
            "7",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(run.ok().trim()).unwrap();
    assert_eq!(v["rows"], 10);
    let img = bvae::imageio::load_image(&out).unwrap();
    assert_eq!(
        (img.width as u64, img.height as u64),
        (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
    );
    // rows: 10 cells of 64 px plus gaps
    assert_eq!(img.height, 10 * (64 + 2) + 2);
    // the RGB model, upscaled ×2, through its external-data decoder
    let out2 = dir.path().join("rgb.png");
    bvae(
        dir.path(),
        &["traverse", s(&model("tiny_rgb.onnx")), "-o", s(&out2)],
    )
    .ok();
    assert_eq!(
        bvae::imageio::load_image(&out2).unwrap().height,
        6 * (64 + 2) + 2
    );
}

#[test]
fn bench_prints_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let run = bvae(
        dir.path(),
        &[
            "bench",
            s(&model("dsprites.onnx")),
            "-n",
            "5",
            "--warmup",
            "1",
            "--batch",
            "4",
            "--layers",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(run.ok().trim()).unwrap();
    // --layers times every operator of the full pass, and the stages after
    // it (score, end to end) still run on the session it profiled.
    let layers = v["layers"].as_array().unwrap();
    assert!(layers.len() >= 8, "{layers:?}");
    assert!(
        layers
            .iter()
            .all(|l| l["median_ms"].as_f64().unwrap() >= 0.0),
        "{layers:?}"
    );
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for want in [
        "preprocess",
        "encode",
        "full pass",
        "batch 4",
        "decode",
        "score",
        "end to end",
    ] {
        assert!(
            stages.iter().any(|s| s.contains(want)),
            "no {want} stage in {stages:?}"
        );
    }
    assert!(v["stages"][1]["median_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn help_is_there_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["info", "encode", "score", "calibrate", "traverse", "bench"] {
        let run = bvae(dir.path(), &[cmd, "--help"]);
        assert!(run.ok().contains("Usage: bvae"), "{cmd}");
    }
}

#[test]
fn cameras_says_clearly_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let run = bvae(dir.path(), &["cameras"]);
    if cfg!(feature = "camera") {
        // this machine has no camera: a clear message, not an error
        assert!(
            run.ok().contains("no camera found") || run.stdout.contains("camera:"),
            "{}",
            run.stdout
        );
    } else {
        run.fails_with(&[
            "camera sources need the `camera` feature",
            "--features camera",
        ]);
    }
}

#[test]
fn a_profile_of_an_older_version_still_scores() {
    // Profiles written before the knn, pixel and combined scores have
    // neither their bank, statistics nor parts (nor probes per kind): they
    // load, and score with what they have.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(model("dsprites.calibration.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    for key in ["knn", "combined", "pixel", "probes"] {
        o.remove(key);
    }
    o.insert("method".into(), "recon".into());
    let threshold = o["scores"]["recon"]["threshold"].clone();
    o.insert("threshold".into(), threshold);
    let scores = o["scores"].as_object_mut().unwrap();
    for key in ["knn", "combined", "pixel"] {
        scores.remove(key);
    }
    for s in scores.values_mut() {
        s.as_object_mut().unwrap().remove("held_out_fpr");
    }
    let old = dir.path().join("old.json");
    std::fs::write(&old, serde_json::to_string(&v).unwrap()).unwrap();
    let img = data("dsprites_normal").join("0000.png");
    let run = bvae(
        dir.path(),
        &[
            "score",
            s(&model("dsprites.onnx")),
            s(&img),
            "-c",
            s(&old),
            "--json",
        ],
    );
    let out: Value = serde_json::from_str(run.ok().trim()).unwrap();
    assert_eq!(out["decision"]["method"], "recon");
    assert!(out["scores"]["latent"].as_f64().is_some());
    for key in ["knn", "pixel", "combined"] {
        assert!(out["scores"][key].is_null(), "{key}");
    }
}
