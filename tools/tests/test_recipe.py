"""The training recipe: early stopping, learning-rate schedules, augmentation."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from bvae_tools import train as train_module
from bvae_tools.augment import AugmentConfig, augment_batch, batch_generator
from bvae_tools.checkpoint import load_checkpoint
from bvae_tools.data import DataConfig, open_source, split_indices
from bvae_tools.errors import UserError
from bvae_tools.schedule import (
    COSINE_FLOOR,
    PLATEAU_FLOOR,
    EarlyStopping,
    lr_factor,
    warmup_cosine,
)
from bvae_tools.train import describe_outcome, train


def read_rows(run):
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


# An epoch must beat the best by 90% to count: every epoch after the first is
# "no better", so these runs stop at a known epoch whatever the data.
STRICT = {"min_delta": 0.9}


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path, make_config):
    data = DataConfig("dsprites")
    cfg = make_config(data, epochs=10, epoch_size=32, patience=2, **STRICT)
    s = train(cfg, tmp_path / "run", progress=False)
    out = s["outcome"]
    assert (out["stopped_epoch"], out["reason"], out["best_epoch"]) == (3, "early_stop", 1)
    assert len(read_rows(tmp_path / "run")) == 3
    assert "stopped at epoch 3" in describe_outcome(out) and "best epoch 1" in describe_outcome(out)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["outcome"]
    assert recorded["best_epoch"] == 1 and recorded["stopped_epoch"] == 3
    assert recorded["best_heldout_loss"] == pytest.approx(
        float(read_rows(tmp_path / "run")[0]["heldout_loss"]), rel=1e-5
    )

    # the exported weights (checkpoint "model") are epoch 1's: the same as a 1-epoch run
    one = make_config(data, epochs=1, epoch_size=32)
    train(one, tmp_path / "one", progress=False)
    best, _, state = load_checkpoint(tmp_path / "run")
    first, _, _ = load_checkpoint(tmp_path / "one")
    assert_same_weights(best.state_dict(), first.state_dict())
    assert state["best"]["step"] == 2 and state["step"] == 6
    last = state["last_model"]
    assert any(not torch.equal(last[k], state["model"][k]) for k in last)


def test_without_patience_all_epochs_run_and_the_last_is_kept(tmp_path, make_config):
    cfg = make_config(DataConfig("dsprites"), epochs=3, epoch_size=32, patience=0, **STRICT)
    s = train(cfg, tmp_path / "run", progress=False)
    assert s["outcome"]["reason"] == "max_epochs" and s["outcome"]["stopped_epoch"] == 3
    _, _, state = load_checkpoint(tmp_path / "run")
    assert_same_weights(state["model"], state["last_model"])


def test_resume_continues_early_stopping_exactly(tmp_path, make_config):
    data = DataConfig("dsprites")
    kw = dict(epoch_size=32, patience=2, lr_schedule="plateau", warmup_epochs=1.0, **STRICT)
    train(make_config(data, epochs=10, **kw), tmp_path / "long", progress=False)
    train(make_config(data, epochs=2, **kw), tmp_path / "split", progress=False)
    s = train(make_config(data, epochs=10, **kw), tmp_path / "split", resume=True, progress=False)
    assert s["outcome"]["stopped_epoch"] == 3 and s["outcome"]["best_epoch"] == 1
    _, _, a = load_checkpoint(tmp_path / "long")
    _, _, b = load_checkpoint(tmp_path / "split")
    assert a["early_stopping"] == b["early_stopping"]
    assert a["best"] == b["best"]
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["last_model"], b["last_model"])
    assert [r["lr"] for r in read_rows(tmp_path / "long")] == [
        r["lr"] for r in read_rows(tmp_path / "split")
    ]


def test_resume_after_a_stop(tmp_path, make_config):
    data = DataConfig("dsprites")
    cfg = make_config(data, epochs=10, epoch_size=32, patience=1, **STRICT)
    train(cfg, tmp_path / "run", progress=False)
    assert len(read_rows(tmp_path / "run")) == 2
    again = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert "loss" not in again and again["outcome"]["reason"] == "early_stop"
    assert len(read_rows(tmp_path / "run")) == 2  # nothing trained
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["outcome"]["reason"] == "early_stop"
    more = make_config(data, epochs=4, epoch_size=32, patience=0, **STRICT)
    s = train(more, tmp_path / "run", resume=True, progress=False)
    assert s["epoch"] == 4 and s["outcome"]["reason"] == "max_epochs"
    assert s["outcome"]["best_epoch"] == 4  # without patience the last epoch is kept
    other = make_config(data, epochs=4, epoch_size=32, lr_schedule="cosine")
    with pytest.raises(UserError, match="different lr_schedule"):
        train(other, tmp_path / "run", resume=True, progress=False)


def test_schedule_values():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(COSINE_FLOOR + (1 - COSINE_FLOOR) / 2)
    assert warmup_cosine(100, 100, 10) == pytest.approx(COSINE_FLOOR)
    assert warmup_cosine(500, 100, 10) == pytest.approx(COSINE_FLOOR)
    assert lr_factor("constant", 0, 100, 10) == 1.0
    assert lr_factor("plateau", 4, 100, 10, plateau=0.25) == pytest.approx(0.5)
    assert lr_factor("plateau", 50, 100, 10, plateau=0.25) == 0.25
    values = [warmup_cosine(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_plateau_halves_after_two_bad_epochs():
    es = EarlyStopping(patience=5, min_delta=0.01)
    assert es.update(1, 100.0)
    assert not es.update(2, 99.5)  # less than 1% better
    assert es.plateau == 1.0
    assert not es.update(3, 100.0)
    assert es.plateau == 0.5 and es.bad_epochs == 2
    assert es.update(4, 90.0) and es.bad_epochs == 0 and es.plateau == 0.5
    for e in range(5, 40):
        es.update(e, 95.0)
    assert es.plateau == PLATEAU_FLOOR and es.should_stop()
    assert not EarlyStopping(patience=0, min_delta=0).should_stop()
    assert not EarlyStopping(3, 0.0).update(1, math.nan)


def test_cosine_rates_are_logged(tmp_path, make_config):
    cfg = make_config(
        DataConfig("dsprites"), epochs=4, epoch_size=32, lr_schedule="cosine", warmup_epochs=1.0
    )
    train(cfg, tmp_path / "run", progress=False)
    lrs = [float(r["lr"]) for r in read_rows(tmp_path / "run")]
    # 2 steps per epoch, 8 in all: warm-up ends after step 2, the last step is 7 of 8
    assert lrs[0] == pytest.approx(cfg.lr)
    assert lrs[-1] == pytest.approx(cfg.lr * warmup_cosine(7, 8, 2), rel=1e-4)
    assert lrs[1] > lrs[2] > lrs[3]


def test_augment_is_deterministic_and_small():
    x = torch.rand(6, 3, 16, 16)
    cfg = AugmentConfig(enabled=True, noise=0.01)
    a = augment_batch(x, cfg, batch_generator(0, 1, 2))
    b = augment_batch(x, cfg, batch_generator(0, 1, 2))
    c = augment_batch(x, cfg, batch_generator(1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, augment_batch(x, cfg, batch_generator(0, 2, 2)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(augment_batch(x, AugmentConfig(), batch_generator(0, 1, 2)), x)

    # a single bright pixel moves by at most 2 in x and y, and only brightness changes
    dot = torch.zeros(32, 1, 16, 16)
    dot[:, 0, 8, 8] = 0.5
    moved = augment_batch(dot, AugmentConfig(True, 2, 0.1, 0.0), batch_generator(0, 0, 0))
    for img in moved:
        y, xx = np.unravel_index(int(img[0].argmax()), (16, 16))
        assert abs(y - 8) <= 2 and abs(xx - 8) <= 2
        assert 0.45 - 1e-6 <= float(img.max()) <= 0.55 + 1e-6
    shifts = {np.unravel_index(int(img[0].argmax()), (16, 16)) for img in moved}
    assert len(shifts) > 5


def test_bad_augment_settings(make_config):
    for kw in ({"shift": -1}, {"shift": 20}, {"brightness": 1.5}, {"noise": -0.1}):
        with pytest.raises(UserError):
            make_config(DataConfig("dsprites"), augment=AugmentConfig(True, **kw))


def test_augment_touches_training_batches_only(tmp_path, image_folder, make_config, monkeypatch):
    data = DataConfig("folder", str(image_folder))
    aug = AugmentConfig(enabled=True)
    cfg = make_config(data, channels=3, epochs=2, epoch_size=0, batch_size=8, augment=aug)
    seen = []

    def spy(x, cfg_, gen):
        seen.append(x.clone())
        return augment_batch(x, cfg_, gen)

    monkeypatch.setattr(train_module, "augment_batch", spy)
    train(cfg, tmp_path / "a", progress=False)
    source = open_source(data, 32, 3)
    train_idx, hold_idx = split_indices(len(source), cfg.holdout, cfg.seed)
    assert sum(len(x) for x in seen) == 2 * len(train_idx)
    held = source.batch(hold_idx)
    for x in seen:
        for img in x:
            assert not any(torch.equal(img, h) for h in held)

    # the held-out loss of epoch 1 only depends on the weights, and those on
    # the augmented batches: the same seed gives the same run
    monkeypatch.undo()
    train(cfg, tmp_path / "b", progress=False)
    plain = make_config(data, channels=3, epochs=2, epoch_size=0, batch_size=8)
    train(plain, tmp_path / "c", progress=False)
    ra, rb, rc = (read_rows(tmp_path / n) for n in "abc")
    assert [r["heldout_loss"] for r in ra] == [r["heldout_loss"] for r in rb]
    assert [r["loss"] for r in ra] != [r["loss"] for r in rc]
