import math

import pytest
import torch

from bvae_tools.errors import UserError
from bvae_tools.losses import LossConfig, capacity_at, kl_per_latent, recon_nll, vae_loss

# A tiny case: two images of 1×1×2 pixels, two latents.
LOGITS = torch.tensor([[[[0.0, 2.0]]], [[[-1.0, 0.5]]]])
X = torch.tensor([[[[1.0, 0.0]]], [[[0.25, 1.0]]]])
MU = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
LOGVAR = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]])


def bce(logit, x):
    return math.log(1 + math.exp(logit)) - x * logit


def sig(v):
    return 1 / (1 + math.exp(-v))


BERNOULLI = [bce(0.0, 1.0) + bce(2.0, 0.0), bce(-1.0, 0.25) + bce(0.5, 1.0)]
GAUSSIAN = [(sig(0.0) - 1) ** 2 + sig(2.0) ** 2, (sig(-1.0) - 0.25) ** 2 + (sig(0.5) - 1) ** 2]
# KL_j = 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)
KL = [
    [0.5 * (1 + 1 - 1 - 0), 0.5 * (0 + 2 - 1 - math.log(2))],
    [0.5 * (0 + 0.5 - 1 - math.log(0.5)), 0.5 * (4 + 1 - 1 - 0)],
]
KL_Z = [(KL[0][0] + KL[1][0]) / 2, (KL[0][1] + KL[1][1]) / 2]
KL_TOTAL = sum(KL_Z)


def test_recon_nll_by_hand():
    assert recon_nll(LOGITS, X, "bernoulli").tolist() == pytest.approx(BERNOULLI, rel=1e-6)
    assert recon_nll(LOGITS, X, "gaussian").tolist() == pytest.approx(GAUSSIAN, rel=1e-6)


def test_kl_by_hand():
    assert kl_per_latent(MU, LOGVAR).tolist() == [pytest.approx(r, rel=1e-6) for r in KL]


@pytest.mark.parametrize("likelihood,recon", [("bernoulli", BERNOULLI), ("gaussian", GAUSSIAN)])
def test_beta_objective_by_hand(likelihood, recon):
    cfg = LossConfig(likelihood=likelihood, objective="beta", beta=4.0)
    t = vae_loss(LOGITS, X, MU, LOGVAR, cfg, step=123)
    mean_recon = sum(recon) / 2
    assert t.recon.item() == pytest.approx(mean_recon, rel=1e-6)
    assert t.kl.item() == pytest.approx(KL_TOTAL, rel=1e-6)
    assert t.kl_per_latent.tolist() == pytest.approx(KL_Z, rel=1e-6)
    assert t.loss.item() == pytest.approx(mean_recon + 4.0 * KL_TOTAL, rel=1e-6)


@pytest.mark.parametrize("likelihood,recon", [("bernoulli", BERNOULLI), ("gaussian", GAUSSIAN)])
def test_capacity_objective_by_hand(likelihood, recon):
    cfg = LossConfig(
        likelihood=likelihood,
        objective="capacity",
        gamma=100.0,
        capacity_max=5.0,
        capacity_steps=1000,
    )
    mean_recon = sum(recon) / 2
    # step 250 of 1000: C = 1.25 nats, below the KL; step 2000: C = C_max, above it
    for step, c in ((250, 1.25), (2000, 5.0)):
        t = vae_loss(LOGITS, X, MU, LOGVAR, cfg, step=step)
        assert t.capacity == pytest.approx(c)
        want = mean_recon + 100.0 * abs(KL_TOTAL - c)
        assert t.loss.item() == pytest.approx(want, rel=1e-6)


def test_capacity_schedule_is_linear_then_flat():
    assert capacity_at(0, 25.0, 100) == 0.0
    assert capacity_at(50, 25.0, 100) == pytest.approx(12.5)
    assert capacity_at(100, 25.0, 100) == 25.0
    assert capacity_at(10_000, 25.0, 100) == 25.0


@pytest.mark.parametrize(
    "kw",
    [
        {"beta": -1.0},
        {"gamma": -0.5},
        {"capacity_max": -1.0},
        {"capacity_steps": 0},
        {"likelihood": "poisson"},
        {"objective": "elbo"},
        {"beta": float("nan")},
    ],
)
def test_bad_hyperparameters(kw):
    with pytest.raises(UserError):
        LossConfig(**kw).validate()
