"""Gain normalisation of the illumination (``train --illumination gain``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import write_scene_images
from PIL import Image

from bvae_tools.data import MAX_GAIN, DataConfig, GainNormalised, normalise_gain, open_source
from bvae_tools.export import export
from bvae_tools.train import train


def test_normalise_gain_is_the_runtime_formula():
    # the same cases as src/preprocess.rs's test
    x = torch.tensor([0.9, 0.1]).reshape(1, 1, 1, 2)
    assert torch.allclose(normalise_gain(x, 0.25).flatten(), torch.tensor([0.45, 0.05]))
    assert normalise_gain(torch.tensor([0.1, 0.9]).reshape(1, 1, 1, 2), 1.0).flatten()[1] == 1.0
    black = torch.zeros(1, 3, 4, 4)
    assert torch.equal(normalise_gain(black, 0.5), black)
    # the factor is bounded: a very dark image is brightened at most MAX_GAIN times
    dark = torch.full((1, 1, 2, 2), 0.01)
    assert torch.allclose(normalise_gain(dark, 0.5), dark * MAX_GAIN)
    # each image of a batch is scaled by its own mean
    two = torch.stack([torch.full((1, 2, 2), 0.2), torch.full((1, 2, 2), 0.4)])
    assert torch.allclose(normalise_gain(two, 0.3), torch.full((2, 1, 2, 2), 0.3))


def dim_copies(folder: Path, factor: float) -> Path:
    """Each image of ``folder`` with its light scaled by ``factor``."""
    out = folder.parent / f"{folder.name}_x{factor}"
    out.mkdir()
    for p in sorted(folder.glob("*.png")):
        a = np.asarray(Image.open(p), dtype=np.float32) * factor
        Image.fromarray(a.round().clip(0, 255).astype(np.uint8)).save(out / p.name)
    return out


def test_a_gain_normalised_source_ignores_the_light(tmp_path):
    bright = tmp_path / "bright"
    write_scene_images(bright, 8)
    dim = dim_copies(bright, 0.6)
    cfg = lambda p: DataConfig("folder", str(p), illumination="gain")  # noqa: E731
    a, b = open_source(cfg(bright), 32, 3), open_source(cfg(dim), 32, 3)
    assert isinstance(a, GainNormalised)
    xa, xb = a.batch(range(8)), b.batch(range(8))
    # the target is each data set's own mean: the dim set's is lower
    assert b.target < a.target
    # (an image whose bright square clips at 1 ends a little below the target)
    # scaled to one target, the two sets are the same images (up to rounding)
    assert (normalise_gain(xa, 0.3) - normalise_gain(xb, 0.3)).abs().max() < 0.02
    assert torch.allclose(xa.mean(dim=(1, 2, 3)), torch.full((8,), a.target), atol=2e-3)
    plain = open_source(DataConfig("folder", str(bright)), 32, 3)
    assert not isinstance(plain, GainNormalised)
    with pytest.raises(Exception, match="unknown illumination"):
        open_source(DataConfig("folder", str(bright), illumination="auto"), 32, 3)


def bvae_binary() -> str | None:
    given = os.environ.get("BVAE_BIN")
    if given:
        return given
    # the most recently built of the debug and release binaries (CI builds
    # the debug one in the same run; an older release build may be stale)
    root = Path(__file__).resolve().parents[2]
    dirs = [d for d in (os.environ.get("CARGO_TARGET_DIR"), root / "target") if d]
    built = [Path(d) / p / "bvae" for d in dirs for p in ("debug", "release")]
    built = [b for b in built if b.is_file()]
    if built:
        return str(max(built, key=lambda b: b.stat().st_mtime))
    return shutil.which("bvae")


def test_trained_and_scored_the_same_way(tmp_path, make_config):
    frames = tmp_path / "frames"
    write_scene_images(frames, 24, size=(64, 48))
    run = tmp_path / "run"
    data = DataConfig("folder", str(frames), illumination="gain")
    train(make_config(data, channels=3), run, progress=False)
    model = tmp_path / "gain.onnx"
    export(run, model, kl_samples=16, parity_samples=8)
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert meta["bvae.illumination"] == "gain"
    target = float(meta["bvae.illumination_mean"])
    assert 0.0 < target <= 1.0
    assert abs(target - open_source(data, 32, 3).target) < 1e-9
    bvae = bvae_binary()
    if bvae is None:
        pytest.skip("skipped: no bvae binary (cargo build --release) to score with")
    # the runtime normalises as training did: a frame and the same frame with
    # the light at 60% encode to nearly the same latents
    dim = dim_copies(frames, 0.6)
    first = sorted(frames.glob("*.png"))[:4]
    out = subprocess.run(
        [bvae, "encode", str(model), *map(str, first), *(str(dim / p.name) for p in first)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mus = np.array([json.loads(line)["mu"] for line in out.splitlines() if line.strip()])
    assert mus.shape[0] == 8
    gap = np.abs(mus[:4] - mus[4:]).max()
    spread = np.abs(mus[:4] - mus[:4].mean(0)).max()
    assert gap < 0.1 * max(spread, 1e-3) + 0.02, (gap, spread)
