"""Augmentations a fixed camera sees, for training batches only (``--augment``).

A camera bolted to a wall still moves by a pixel or two (vibration, a
re-mounted housing), and its exposure and gain drift with the light. Each
training image gets, independently:

- a shift by a whole number of pixels, up to ``shift`` in x and y, with the
  border pixels repeated into the uncovered edge;
- a brightness factor in ``1 ± brightness`` and a contrast factor in
  ``1 ± contrast`` (around the image's mean), drawn uniformly;
- optionally Gaussian sensor noise of standard deviation ``noise``;

then clamped to [0, 1]. The draws come from a generator seeded with
``(seed, epoch, batch)`` only, so a run (and a resumed run) sees the same
augmented batches every time. Held-out images are never augmented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

#: Largest shift that still reads as "the camera moved a little", in pixels.
MAX_SHIFT = 8


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; ``enabled`` False means none at all."""

    enabled: bool = False
    shift: int = 2
    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.0

    def validate(self) -> AugmentConfig:
        if not 0 <= self.shift <= MAX_SHIFT:
            raise UserError(f"augment shift must be 0..{MAX_SHIFT} pixels, got {self.shift}")
        for name in ("brightness", "contrast"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise UserError(f"augment {name} must be in [0, 1) (0.1 = ±10%), got {v}")
        if not 0 <= self.noise <= 0.5:
            raise UserError(
                f"augment noise must be in [0, 0.5] (std of pixel noise), got {self.noise}"
            )
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict | None) -> AugmentConfig:
        return AugmentConfig(**(d or {}))


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The generator of one training batch's augmentations."""
    s = np.random.SeedSequence([seed, epoch, batch, 0xA06]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(s))


def shift_images(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image of ``x`` by ``(dx[i], dy[i])`` pixels (|d| <= pad),
    repeating the border into the uncovered edge."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        top, left = pad - int(dy[i]), pad - int(dx[i])
        out[i] = padded[i, :, top : top + h, left : left + w]
    return out


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """A new, augmented batch ``[N, C, H, W]`` in [0, 1]; ``x`` is not changed."""
    if not cfg.enabled:
        return x
    n = x.shape[0]
    out = x
    if cfg.shift > 0:
        d = torch.randint(-cfg.shift, cfg.shift + 1, (2, n), generator=gen)
        out = shift_images(out, d[0], d[1], cfg.shift)
    shape = (n, 1, 1, 1)
    b = 1.0 + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.brightness
    c = 1.0 + (torch.rand(shape, generator=gen) * 2 - 1) * cfg.contrast
    b, c = b.to(x.device), c.to(x.device)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * c + mean) * b
    if cfg.noise > 0:
        out = out + torch.randn(out.shape, generator=gen).to(x.device) * cfg.noise
    return out.clamp(0.0, 1.0)
