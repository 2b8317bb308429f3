"""Disentanglement metrics on cases with known answers.

The "images" here are the factors themselves (standardised), so an encoder
is any function of the factors: the identity is perfectly disentangled, a
rotation mixes the factors, constants carry nothing. Sample counts are small
(1,000 training points, L = 32) so the file runs in seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from bvae_tools import dsprites
from bvae_tools import metrics as M
from bvae_tools.__main__ import main

TOOLS = Path(__file__).resolve().parents[1]
SIZES = np.array(dsprites.FACTOR_SIZES)
K = len(SIZES)
N = 1000
L = 32


def standardised(f: np.ndarray) -> np.ndarray:
    """Factor classes -> zero mean, unit variance under uniform sampling."""
    return (f - (SIZES - 1) / 2) / np.sqrt((SIZES**2 - 1) / 12)


TRUTH = M.GroundTruth(
    dsprites.FACTOR_NAMES, dsprites.FACTOR_SIZES, M.uniform_sampler(SIZES), standardised
)


def rotation(seed: int, k: int = K) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    return q * np.sign(np.diag(r))


def hadamard_mix() -> np.ndarray:
    """8 latents, each ±1/√8 of every factor: orthonormal columns, fully mixed."""
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    return h[:, :K] / np.sqrt(8)


def scores(encode, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    h = M.higgins_metric(encode, TRUTH, rng, batch_size=L, num_train=N, num_eval=N // 2)
    f = M.factorvae_metric(
        encode, TRUTH, rng, batch_size=L, num_train=N, num_eval=N // 2, num_variance=N
    )
    m = M.mig(encode, TRUTH, rng, num_points=N)
    d = M.dci_disentanglement(encode, TRUTH, rng, num_train=N, num_test=N // 2)
    return {
        "higgins": h.score,
        "factorvae": f.score,
        "mig": m.score,
        "dci": d.disentanglement,
        "completeness": d.completeness,
        "error": d.informativeness_error,
    }


def test_the_factors_themselves_score_the_maximum():
    s = scores(lambda x: x)
    assert s["higgins"] == 1.0 and s["factorvae"] == 1.0
    # 20 histogram bins cannot hold all 40 orientations or 32 positions, so
    # even a perfect code loses part of those factors' entropy: MIG ~0.9
    assert s["mig"] > 0.8
    assert s["dci"] > 0.99 and s["completeness"] > 0.99 and s["error"] < 0.05


def test_scale_and_order_of_latents_do_not_matter():
    """(Scales that keep every latent's std above FactorVAE's pruning
    threshold, 0.05: that threshold is absolute, on the prior's unit scale.)"""
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(8192, K)) * 0.3
    gain = np.array([3.0, 0.1, 1.0, 250.0, 0.5])
    perm = np.array([3, 0, 4, 1, 2])

    def noisy(x):
        return x + noise[: len(x)]

    a = scores(noisy)
    b = scores(lambda x: (noisy(x) * gain)[:, perm])
    for key, v in a.items():
        assert b[key] == pytest.approx(v, abs=0.01), key
    assert 0.3 < a["mig"] < 0.8, "noise lowers MIG, so the comparison is not trivial"


def test_a_rotation_scores_clearly_lower():
    """Random rotations: MIG and DCI drop far; Higgins and FactorVAE less
    (a linear classifier on |Δz| undoes much of a rotation, the weakness
    Kim & Mnih 2018 point out), but below the factors' perfect score."""
    rotated = []
    for seed in (1, 2, 3):
        r = rotation(seed)
        rotated.append(scores(lambda x, r=r: x @ r.T))
    for s in rotated:
        assert s["mig"] < 0.4 and s["dci"] < 0.4
        assert s["higgins"] < 0.97 and s["factorvae"] < 0.95
    assert np.mean([s["higgins"] for s in rotated]) < 0.95
    assert np.mean([s["factorvae"] for s in rotated]) < 0.9
    # informativeness does not care: a rotation loses no information
    assert all(s["error"] < 0.05 for s in rotated)


def test_a_fully_mixing_rotation_scores_near_chance():
    mix = hadamard_mix()
    s = scores(lambda x: x @ mix.T)
    assert s["higgins"] < 0.4 and s["factorvae"] < 0.4  # chance: 1/5
    assert s["mig"] < 0.05 and s["dci"] < 0.3


def test_constant_latents_score_chance():
    s = scores(lambda x: np.zeros((len(x), 6)))
    assert 0.12 < s["higgins"] < 0.3 and 0.12 < s["factorvae"] < 0.3
    assert s["mig"] == 0.0 and s["dci"] == 0.0 and s["completeness"] == 0.0
    assert s["error"] == pytest.approx(1.0, abs=0.05)


def test_factorvae_prunes_collapsed_latents():
    def encode(x):
        return np.concatenate([x, np.full((len(x), 2), 0.3), 1e-3 * x[:, :1]], axis=1)

    r = M.factorvae_metric(
        encode, TRUTH, np.random.default_rng(0), batch_size=L, num_train=200, num_eval=100
    )
    assert r.num_active == K and r.score == 1.0
    assert r.classifier == [0, 1, 2, 3, 4, -1, -1, -1]


def test_mutual_information_and_entropy():
    a = np.arange(1200) % 4
    assert M.entropy(a) == pytest.approx(np.log(4))
    assert M.mutual_info(a, a) == pytest.approx(np.log(4))
    assert M.mutual_info(a, a * 10 + 7) == pytest.approx(np.log(4))  # only the partition counts
    assert M.mutual_info(a, np.arange(1200) // 300) == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_info(a, np.zeros(1200)) == 0.0
    z = np.linspace(0.0, 1.0, 1000)[:, None]
    assert set(M.discretise(z).ravel()) == set(range(1, 21))
    assert len(set(M.discretise(np.zeros((5, 1))).ravel())) == 1


def test_dci_scores_of_known_importance_matrices():
    assert M.dci_scores(np.eye(4)) == pytest.approx((1.0, 1.0))
    assert M.dci_scores(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert M.dci_scores(np.zeros((3, 2))) == (0.0, 0.0)
    # two latents that both carry only factor 0: disentangled, not complete
    d, c = M.dci_scores(np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert d == pytest.approx(1.0) and c == pytest.approx(0.0, abs=1e-9)
    # an unused latent does not count against disentanglement
    d, _ = M.dci_scores(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert d == pytest.approx(1.0)


def test_linear_models():
    x = np.repeat(np.arange(3.0), 50)[:, None] * 7 + 100
    y = np.repeat(np.array([5, 9, 2]), 50)
    assert M.fit_softmax(x, y, l2=1e-3).accuracy(x, y) == 1.0
    flat = M.fit_softmax(np.ones((10, 2)), np.array([1] * 6 + [0] * 4))
    assert flat.predict(np.array([[3.0, -1.0]])).tolist() == [1]  # the majority
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(500, 6))
    w = M.lasso(xs, xs @ np.array([0.0, 2.0, 0.0, -1.0, 0.0, 0.0]), alpha=0.01)
    assert w == pytest.approx([0.0, 1.99, 0.0, -0.99, 0.0, 0.0], abs=0.01)
    assert not M.lasso(xs, xs[:, 0], alpha=10.0).any()


def test_latent_table_and_names():
    names = ("shape", "scale", "pos_x")
    h = [np.log(3), np.log(6), np.log(32)]
    mi = np.array(
        [
            [0.02, 0.05, 2.8],  # pos_x: 0.81 of its entropy, runner-up 0.03
            [0.40, 0.60, 0.10],  # shape 0.36, scale 0.33: too close to call
            [0.00, 0.00, 0.00],  # nothing
            [0.01, 1.20, 0.05],  # scale, but inactive
        ]
    )
    rows = M.latent_table(mi, h, names)
    assert [r.factor for r in rows[:2]] == ["pos_x", "shape"]
    assert rows[0].mi == pytest.approx(2.8)
    assert rows[0].mi_normalised == pytest.approx(2.8 / np.log(32))
    assert rows[0].second == "scale" and rows[0].gap > 0.7
    assert rows[1].gap < M.NAME_MIN_GAP
    assert M.name_latents(rows, [True, True, True, False]) == ["pos_x", "", "", ""]
    assert M.name_latents(rows, [True] * 4) == ["pos_x", "", "", "scale"]
    with pytest.raises(ValueError):
        M.name_latents(rows, [True])


def _run_cli(capsys, *argv):
    rc = main(["metrics", *map(str, argv), "--points", "16", "--batch", "4", "--threads", "1"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_command_on_an_exported_model(tmp_path, capsys):
    model = TOOLS.parent / "models" / "dsprites.onnx"
    if not model.is_file():
        pytest.skip(f"{model} is not in this checkout")
    rc, out, _ = _run_cli(capsys, model, "--dsprites", "--out", tmp_path)
    assert rc == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert set(data["metrics"]) == {"higgins", "factorvae", "mig", "dci"}
    assert data["metrics"]["higgins"]["batch_size"] == 4
    assert data["points"] == 16 and data["eval_points"] == 8 and data["kind"] == "onnx"
    assert len(data["latents"]) == 10 and len(data["latent_names"]) == 10
    assert {"factor", "mi", "mi_normalised", "gap", "kl", "active", "name"} <= set(
        data["latents"][0]
    )
    assert (tmp_path / "metrics.png").stat().st_size > 0
    assert "best factor" in out and "MIG" in out


def test_command_on_a_run_directory(trained_run, tmp_path, capsys):
    rc, out, _ = _run_cli(capsys, trained_run, "--dsprites", "--out", tmp_path)
    assert rc == 0
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["kind"] == "checkpoint" and len(data["latents"]) == 3


def test_command_errors(tmp_path, capsys):
    rc, _, err = _run_cli(capsys, tmp_path / "none.onnx", "--dsprites")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _run_cli(capsys, tmp_path / "none.onnx")
    assert rc == 2 and "--dsprites" in err
    rc, _, err = _run_cli(capsys, tmp_path, "--dsprites")
    assert rc == 2 and "checkpoint" in err
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    rc, _, err = _run_cli(capsys, tmp_path / "junk.onnx", "--dsprites")
    assert rc == 2 and "not an encoder model" in err
    decoder = TOOLS.parent / "models" / "dsprites.decoder.onnx"
    if decoder.is_file():
        rc, _, err = _run_cli(capsys, decoder, "--dsprites")
        assert rc == 2 and "not NAME.decoder.onnx" in err
