"""Shared fixtures: small image folders and one tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bvae_tools.checkpoint import TrainConfig
from bvae_tools.data import DataConfig
from bvae_tools.losses import LossConfig
from bvae_tools.model import ModelConfig
from bvae_tools.train import train

# Tests stay on one thread unless told otherwise (CI machines are small).
torch.set_num_threads(int(os.environ.get("BVAE_TEST_THREADS", "1")))


def write_scene_images(
    folder: Path, n: int, size: tuple[int, int] = (48, 40), seed: int = 0, fmt: str = "png"
) -> list[Path]:
    """Write ``n`` RGB images of a bright square on a dark background."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    for i in range(n):
        img = np.full((h, w, 3), 20, dtype=np.uint8)
        x, y = rng.integers(0, w - 12), rng.integers(0, h - 12)
        img[y : y + 12, x : x + 12] = rng.integers(120, 255, size=3)
        p = folder / f"img_{i:03d}.{fmt}"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    write_scene_images(folder, 12)
    write_scene_images(folder / "nested", 4, seed=1, fmt="jpg")
    return folder


def tiny_config(data: DataConfig, **kw) -> TrainConfig:
    base = dict(
        model=ModelConfig(
            channels=kw.pop("channels", 1),
            size=kw.pop("size", 32),
            latent_dim=kw.pop("latent_dim", 3),
        ),
        loss=LossConfig(**kw.pop("loss", {})),
        data=data,
        lr=1e-3,
        batch_size=16,
        epochs=2,
        epoch_size=64,
        holdout=0.1,
        eval_size=32,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base).validate()


@pytest.fixture
def make_config():
    """The :func:`tiny_config` factory, for tests that train their own runs."""
    return tiny_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A tiny dSprites run (32×32 gray, Z=3), shared by export and report tests."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    train(tiny_config(DataConfig("dsprites")), out, progress=False)
    return out


@pytest.fixture(scope="session")
def trained_rgb_run(tmp_path_factory) -> Path:
    """A tiny coloured dSprites run (RGB 32×32, Z=2, Gaussian, capacity)."""
    out = tmp_path_factory.mktemp("run") / "tiny_rgb"
    cfg = tiny_config(
        DataConfig("dsprites"),
        channels=3,
        latent_dim=2,
        loss={
            "likelihood": "gaussian",
            "objective": "capacity",
            "gamma": 10.0,
            "capacity_max": 5.0,
            "capacity_steps": 8,
        },
    )
    train(cfg, out, progress=False)
    return out
