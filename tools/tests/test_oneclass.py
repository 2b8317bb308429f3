import numpy as np
import pytest

from bvae_tools.data import read_idx
from bvae_tools.errors import UserError
from bvae_tools.oneclass import auroc, parse_classes, table, write_idx


def test_auroc_known_answers():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    # ties count half
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    # one of four pairs ordered wrongly
    assert auroc(np.array([0.0, 2.5]), np.array([2.0, 3.0])) == 0.75


def test_auroc_matches_the_pair_count_on_random_scores():
    rng = np.random.default_rng(3)
    n, a = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (a[:, None] > n[None, :]).mean() + 0.5 * (a[:, None] == n[None, :]).mean()
    assert abs(auroc(n, a) - pairs) < 1e-12


def test_classes_parse():
    assert parse_classes("0-9") == list(range(10))
    assert parse_classes("2,6") == [2, 6]
    assert parse_classes("1-2,5") == [1, 2, 5]
    with pytest.raises(UserError):
        parse_classes(",")


def test_idx_round_trip(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", imgs)
    assert np.array_equal(read_idx(tmp_path / "x.idx"), imgs)


def test_table_has_every_score_and_geotrans_on_test():
    results = [
        {"class": c, "default": "combined", "auroc": {"default": 90.0 + c, "recon": 70.0}}
        for c in range(10)
    ]
    text = table(results, "test")
    assert "| default | 90.0 | 91.0 |" in text
    assert "| 94.5 | 90.0 |" in text  # mean and min of the default
    assert "| GeoTrans | 99.4 |" in text and "| 93.6 | 83.3 |" in text
    assert "GeoTrans" not in table(results, "val")


def test_active_latents_have_one_definition():
    # The report's grey bars and the runtime's `bvae info`, window and
    # events use the same threshold.
    import re
    from pathlib import Path

    from bvae_tools.report import ACTIVE_KL

    meta = (Path(__file__).resolve().parents[2] / "src" / "meta.rs").read_text()
    rust = float(re.search(r"pub const ACTIVE_KL_NATS: f32 = ([0-9.eE-]+);", meta).group(1))
    assert ACTIVE_KL == rust
