"""The β-VAE objectives, per batch, with per-latent KL kept apart.

All sums are over pixels and latents of one image; the batch is averaged.

- Bernoulli likelihood: ``recon = sum BCE(logits, x)`` (binary cross-entropy
  on logits; x may be gray levels in [0, 1]).
- Gaussian likelihood: ``recon = sum (sigmoid(logits) - x)^2``, the squared
  error (a Gaussian NLL with fixed variance 1/2, constants dropped).
- ``KL_j = 0.5 * (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` nats, per latent.
- β objective (Higgins et al. 2017): ``recon + beta * KL``.
- capacity objective (Burgess et al. 2018): ``recon + gamma * |KL - C|`` with
  ``C = C_max * min(1, step / capacity_steps)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .errors import UserError

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("beta", "capacity")


@dataclass(frozen=True)
class LossConfig:
    """Objective and likelihood hyperparameters."""

    likelihood: str = "bernoulli"
    objective: str = "beta"
    beta: float = 4.0
    gamma: float = 1000.0
    capacity_max: float = 25.0
    capacity_steps: int = 100_000

    def validate(self) -> LossConfig:
        if self.likelihood not in LIKELIHOODS:
            raise UserError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not self.beta >= 0:
            raise UserError(f"beta must be >= 0 (4 is the usual β-VAE value), got {self.beta}")
        if not self.gamma >= 0:
            raise UserError(f"gamma must be >= 0 (1000 is usual), got {self.gamma}")
        if not self.capacity_max >= 0:
            raise UserError(f"capacity max must be >= 0 nats, got {self.capacity_max}")
        if self.capacity_steps < 1:
            raise UserError(f"capacity steps must be >= 1, got {self.capacity_steps}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LossTerms:
    """One batch's objective: ``loss`` (what is minimised), ``recon`` and ``kl``
    (batch means of per-image sums), ``kl_per_latent`` ``[Z]`` and ``capacity``."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    kl_per_latent: torch.Tensor
    capacity: float


def recon_nll(logits: torch.Tensor, x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Per-image reconstruction NLL ``[N]`` (summed over pixels)."""
    if likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif likelihood == "gaussian":
        per_pixel = (torch.sigmoid(logits) - x) ** 2
    else:
        raise UserError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
    return per_pixel.flatten(1).sum(1)


def kl_per_latent(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image and latent, ``[N, Z]`` nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def capacity_at(step: int, capacity_max: float, capacity_steps: int) -> float:
    """Capacity C (nats) at a training step: linear from 0 to ``capacity_max``."""
    return capacity_max * min(1.0, step / capacity_steps)


def vae_loss(
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    cfg: LossConfig,
    step: int,
) -> LossTerms:
    """The training objective for one batch at global ``step``."""
    recon = recon_nll(logits, x, cfg.likelihood).mean()
    klz = kl_per_latent(mu, logvar).mean(0)
    kl = klz.sum()
    capacity = 0.0
    if cfg.objective == "beta":
        loss = recon + cfg.beta * kl
    else:
        capacity = capacity_at(step, cfg.capacity_max, cfg.capacity_steps)
        loss = recon + cfg.gamma * (kl - capacity).abs()
    return LossTerms(loss=loss, recon=recon, kl=kl, kl_per_latent=klz, capacity=capacity)
