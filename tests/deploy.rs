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
