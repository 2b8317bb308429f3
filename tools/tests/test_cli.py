"""The command line: help, clear errors without tracebacks, and report output."""

import subprocess
import sys
from pathlib import Path

import pytest

from bvae_tools.__main__ import main

TOOLS = Path(__file__).resolve().parents[1]


def run_main(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_shows_defaults(capsys):
    for cmd in ("train", "export", "report", "synth"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "--threads" in out and "(default: None)" not in out
        if cmd == "train":
            assert "(default: 1.0)" in out and "--seed" in out and "--resume" in out
            assert "--no-augment" in out and "(default: cosine)" in out


def test_module_entry_point_and_clean_error():
    """Runs the real `python -m bvae_tools`: an error is one line, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "bvae_tools", "train", "--images", "/no/such/dir", "--threads", "1"],
        cwd=TOOLS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "error: data folder /no/such/dir does not exist" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--images", "{tmp}/missing"], "does not exist"),
        (["--images", "{tmp}/empty"], "has no images"),
        (["--images", "{tmp}/bad"], "cannot read image"),
        (["--dsprites", "--beta", "-1"], "beta must be >= 0"),
        (["--dsprites", "--size", "40"], "multiple of 16"),
        (["--dsprites", "--latent-dim", "0"], "latent dimension"),
        (["--dsprites", "--capacity-steps", "0"], "capacity steps"),
        (["--dsprites", "--lr", "-0.1"], "learning rate"),
        (["--dsprites", "--holdout", "1.5"], "held-out fraction"),
        (["--dsprites", "--classes", "1"], "only apply to --idx"),
        (["--idx", "{tmp}/nothing.gz"], "IDX file"),
    ],
)
def test_train_errors_are_clear(capsys, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "frame.jpg").write_text("not really a JPEG")
    argv = [
        "train",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--epochs",
        "1",
        "--epoch-size",
        "16",
    ] + [a.format(tmp=tmp_path) for a in args]
    rc, _, err = run_main(capsys, *argv)
    assert rc == 2
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dsprites", "--likelihood", "poisson"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train"])  # no data source
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--dsprites", "--threads", "-1"])
    assert e.value.code == 2
    capsys.readouterr()


def test_train_export_report_end_to_end(capsys, tmp_path, image_folder):
    run = tmp_path / "run"
    rc, out, err = run_main(
        capsys,
        "train",
        "--images",
        str(image_folder),
        "--out",
        str(run),
        "--size",
        "32",
        "--latent-dim",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--no-progress",
        "--threads",
        "1",
    )
    assert rc == 0, err
    assert "KL per latent" in out
    rc, out, err = run_main(
        capsys,
        "export",
        str(run),
        "--out",
        str(tmp_path / "m" / "cam.onnx"),
        "--kl-samples",
        "64",
        "--parity-samples",
        "4",
    )
    assert rc == 0, err
    assert (tmp_path / "m" / "cam.decoder.onnx").is_file()
    assert (tmp_path / "m" / "cam.golden" / "manifest.json").is_file()
    rc, out, err = run_main(capsys, "report", str(run), "--samples", "64")
    assert rc == 0, err
    for name in ("loss_curves", "latent_kl", "reconstructions", "traversals"):
        png = run / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, err = run_main(
        capsys,
        "train",
        "--images",
        str(image_folder),
        "--out",
        str(run),
        "--size",
        "32",
        "--latent-dim",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--no-progress",
        "--resume",
    )
    assert rc == 0 and "nothing to do" in out


def test_report_without_run(capsys, tmp_path):
    rc, _, err = run_main(capsys, "report", str(tmp_path))
    assert rc == 2 and "checkpoint" in err
