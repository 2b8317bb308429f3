import json

import numpy as np
import pytest

from bvae_tools.data import load_folder
from bvae_tools.errors import UserError
from bvae_tools.synth import render_frames, synth


def test_frames_are_deterministic_and_vary():
    a, fa = render_frames(6, 32, seed=4)
    b, fb = render_frames(6, 32, seed=4)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and fa == fb
    assert not np.array_equal(a[0], a[1])
    assert set(fa[0]) == {"light", "colour", "radius", "x", "y"}


def test_anomalies_add_a_dark_object():
    normal, _ = render_frames(4, 32, seed=1)
    odd, factors = render_frames(4, 32, seed=1, anomalies=True)
    assert "anomaly_x" in factors[0]

    def dark(frames):
        return (frames.reshape(4, -1, 3).max(-1) < 40).sum()

    assert dark(odd) > dark(normal)


def test_synth_writes_a_trainable_folder(tmp_path):
    out = synth(tmp_path / "frames", n=5, size=32, seed=0)
    assert len(list(out.glob("frame_*.png"))) == 5
    lines = (out / "factors.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["file"] == "frame_00000.png"
    src = load_folder(out, 32, 3)
    assert len(src) == 5
    with pytest.raises(UserError, match="already holds frames"):
        synth(out, n=2, size=32, seed=0)
    with pytest.raises(UserError, match="--n"):
        synth(tmp_path / "x", n=0, size=32, seed=0)
