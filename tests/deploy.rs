//! The files in deploy/ stay in step with the binary: the service's TOML
//! configuration is accepted by `bvae watch` (only its paths and source
//! overridden), and the unit file starts `bvae watch` with it, restarts on
//! failure and may open the cameras.

mod common;

use common::{model, root};

#[test]
fn the_deploy_config_runs_with_its_paths_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = root().join("deploy").join("watch.toml");
    let run = common::bvae(
        dir.path(),
        &[
            "watch",
            common::s(&model("dsprites.onnx")),
            "--config",
            common::s(&cfg),
            "--calibration",
            common::s(&model("dsprites.calibration.json")),
            "--source",
            "synthetic:seed=5,fps=0",
            "--max-frames",
            "20",
        ],
    );
    run.ok();
    assert!(run.stderr.contains("processed 20 frames"), "{}", run.stderr);
}

#[test]
fn the_unit_file_runs_watch_with_the_deploy_config() {
    let unit = std::fs::read_to_string(root().join("deploy").join("bvae.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "ExecStart=/usr/local/bin/bvae watch --config /etc/bvae/watch.toml",
        "Restart=on-failure",
        "SupplementaryGroups=video",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            lines.contains(&want),
            "{want:?} missing from deploy/bvae.service"
        );
    }
    // its install steps put deploy/watch.toml where ExecStart reads it
    assert!(unit.contains("deploy/watch.toml /etc/bvae/watch.toml"));
}

#[test]
fn every_commented_key_of_the_deploy_config_is_a_key_watch_accepts() {
    // `# key = value` lines are the options a user turns on by removing
    // the `#`: with all of them on, the file must still parse and resolve
    let text = std::fs::read_to_string(root().join("deploy").join("watch.toml")).unwrap();
    let mut on = String::new();
    let mut keys = vec![];
    for line in text.lines() {
        let l = line.trim_start_matches("# ");
        match l.split_once(" = ") {
            Some((k, _)) if k.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                keys.push(k.to_string());
                on.push_str(l);
                on.push('\n');
            }
            _ => {}
        }
    }
    for k in [
        "mqtt",
        "name",
        "mqtt_prefix",
        "ha_discovery",
        "mqtt_ca",
        "refresh",
    ] {
        assert!(
            keys.iter().any(|x| x == k),
            "watch.toml does not show `{k}`"
        );
    }
    // an mqtt:// URL cannot take a CA file: the example's URL becomes mqtts
    let on = on.replace("mqtt://broker.lan", "mqtts://broker.lan");
    let path = std::path::Path::new("watch.toml");
    let args = bvae::cli::watch::FileConfig::parse(on.as_bytes(), path)
        .unwrap_or_else(|e| panic!("{e:#}\n{on}"));
    let m = bvae::Model::load(model("dsprites.onnx")).unwrap();
    let profile = bvae::calibrate::Profile::load(&model("dsprites.calibration.json"), &m).unwrap();
    let settings = args.lp.resolve(&profile).unwrap();
    let mqtt = settings.mqtt.expect("mqtt settings");
    assert_eq!(mqtt.prefix, "bvae/front-door");
    assert_eq!(mqtt.discovery.as_deref(), Some("homeassistant"));
    let (addr, token) = settings.http.expect("http settings");
    assert_eq!(addr, "0.0.0.0:8080");
    assert!(token.is_some());
}
