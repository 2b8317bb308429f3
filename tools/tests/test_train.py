import csv

import numpy as np
import pytest
import torch

from bvae_tools.checkpoint import load_checkpoint
from bvae_tools.data import DataConfig
from bvae_tools.errors import UserError
from bvae_tools.train import train


def read_rows(run):
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_tiny_run_lowers_the_loss(tmp_path, image_folder, make_config):
    cfg = make_config(
        DataConfig("folder", str(image_folder)), channels=3, epochs=12, epoch_size=0, batch_size=8
    )
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 12 and summary["step"] == 12 * 2
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert float(rows[-1]["heldout_loss"]) < float(rows[0]["heldout_loss"])
    assert list(rows[0]) == (
        [
            "epoch",
            "step",
            "loss",
            "recon",
            "kl",
            "kl_0",
            "kl_1",
            "kl_2",
            "capacity",
            "heldout_loss",
            "heldout_recon",
            "heldout_kl",
            "seconds",
            "lr",
        ]
    )
    kl = sum(float(rows[-1][f"kl_{j}"]) for j in range(3))
    assert kl == pytest.approx(float(rows[-1]["kl"]), rel=1e-3)


def test_runs_are_reproducible(tmp_path, make_config):
    cfg = make_config(DataConfig("dsprites"), epochs=1, epoch_size=32)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    a, _, _ = load_checkpoint(tmp_path / "a")
    b, _, _ = load_checkpoint(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert read_rows(tmp_path / "a")[0]["loss"] == read_rows(tmp_path / "b")[0]["loss"]


def test_resume_equals_one_long_run(tmp_path, make_config):
    long = make_config(DataConfig("dsprites"), epochs=2, epoch_size=32)
    train(long, tmp_path / "long", progress=False)
    train(
        make_config(DataConfig("dsprites"), epochs=1, epoch_size=32),
        tmp_path / "split",
        progress=False,
    )
    s = train(long, tmp_path / "split", resume=True, progress=False)
    assert s["epoch"] == 2 and s["step"] == 4
    assert len(read_rows(tmp_path / "split")) == 2
    a, _, _ = load_checkpoint(tmp_path / "long")
    b, _, _ = load_checkpoint(tmp_path / "split")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb)


def test_steps_limit_and_capacity_column(tmp_path, make_config):
    cfg = make_config(
        DataConfig("dsprites"),
        epochs=50,
        steps=3,
        epoch_size=32,
        loss={"objective": "capacity", "capacity_max": 4.0, "capacity_steps": 4},
    )
    s = train(cfg, tmp_path / "run", progress=False)
    rows = read_rows(tmp_path / "run")
    assert s["step"] == 3 and [r["step"] for r in rows] == ["2", "3"]
    assert float(rows[-1]["capacity"]) == pytest.approx(2.0)  # C at the last step taken (2 of 4)


def test_existing_run_needs_resume_and_matching_settings(tmp_path, make_config):
    cfg = make_config(DataConfig("dsprites"), epochs=1, epoch_size=16)
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)
    other = make_config(DataConfig("dsprites"), epochs=2, epoch_size=16, latent_dim=4)
    with pytest.raises(UserError, match="different model"):
        train(other, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        train(cfg, tmp_path / "fresh", resume=True, progress=False)


def test_bad_training_settings(make_config):
    for kw in ({"lr": 0.0}, {"batch_size": 0}, {"epochs": 0}, {"holdout": 1.0}, {"steps": -1}):
        with pytest.raises(UserError):
            make_config(DataConfig("dsprites"), **kw)
    assert np.isfinite(make_config(DataConfig("dsprites")).lr)
