"""Stride-2 transposed convolutions rewritten as sub-pixel convolutions.

A ``ConvTranspose2d(k=4, stride=2, padding=1)`` maps an ``H×W`` map to
``2H×2W``. Output pixel ``(2m + a, 2n + b)`` (phase ``a, b`` in {0, 1}) only
sees input rows ``m - 1 + a, m + a`` and columns ``n - 1 + b, n + b`` through
kernel taps ``ky = 3 - a - 2·ty``, ``kx = 3 - b - 2·tx`` (``ty, tx`` in {0, 1}).
So the layer equals: pad the input by 1, one 2×2 convolution to ``4·C_out``
channels (one group of ``C_out`` per phase) on the ``(H+1)×(W+1)`` grid, take
phase ``(a, b)`` from the window starting at ``(a, b)``, and interleave the
four phases with a depth-to-space (``pixel_shuffle``). Same multiply-adds as
the transposed convolution (plus the one-pixel border), but as an ordinary
convolution, which tract runs much faster than its ``ConvTranspose``.

Only layers with at least :data:`MIN_OUT_CHANNELS` outputs and an input of
at least :data:`MIN_SIDE` × :data:`MIN_SIDE` are rewritten: with fewer
channels the 4·C_out-row matrix product underfills tract's kernels, and on
smaller maps the border and the slicing cost more than they save (measured
with tract 0.23.9 on the 32×32 and 64×64 models of ``models/``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

#: Layers with fewer output channels stay ``ConvTranspose2d`` (see above).
MIN_OUT_CHANNELS = 8
#: Layers whose input map is smaller than this (either side) stay too.
MIN_SIDE = 8


def rewritable(m: nn.Module) -> bool:
    """Whether ``m`` is a transposed convolution this module can rewrite."""
    return (
        isinstance(m, nn.ConvTranspose2d)
        and tuple(m.kernel_size) == (4, 4)
        and tuple(m.stride) == (2, 2)
        and tuple(m.padding) == (1, 1)
        and tuple(m.output_padding) == (0, 0)
        and tuple(m.dilation) == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
    )


class SubPixelConvTranspose2d(nn.Module):
    """Computes what a ``ConvTranspose2d(C_in, C_out, 4, 2, 1)`` computes (see the module doc)."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        if not rewritable(deconv):
            raise ValueError(f"not a ConvTranspose2d(k=4, s=2, p=1): {deconv}")
        w = deconv.weight.detach()  # [C_in, C_out, 4, 4]
        c_in, c_out = w.shape[0], w.shape[1]
        self.out_channels = c_out
        k = torch.zeros(2, 2, c_out, c_in, 2, 2, dtype=w.dtype)
        for a in range(2):
            for b in range(2):
                for ty in range(2):
                    for tx in range(2):
                        k[a, b, :, :, ty, tx] = w[:, :, 3 - a - 2 * ty, 3 - b - 2 * tx].T
        self.conv = nn.Conv2d(c_in, 4 * c_out, 2, 1, 1, bias=deconv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(k.reshape(4 * c_out, c_in, 2, 2))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.detach().repeat(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        y = self.conv(x)  # [N, (a, b, C_out), H+1, W+1]
        c = self.out_channels
        phases = [
            y[:, (2 * a + b) * c : (2 * a + b + 1) * c, a : a + h, b : b + w]
            for a in range(2)
            for b in range(2)
        ]
        # [N, C_out, 4, H, W]: channel order (c, a, b), what pixel_shuffle expects
        s = torch.stack(phases, 2)
        return F.pixel_shuffle(s.reshape(s.shape[0], 4 * c, h, w), 2)


def subpixel_decoder(
    vae: nn.Module, min_out_channels: int = MIN_OUT_CHANNELS, min_side: int = MIN_SIDE
) -> nn.Module:
    """A copy of the β-VAE ``vae`` (a :class:`~bvae_tools.model.BetaVAE`) whose
    rewritable decoder layers are sub-pixel convolutions."""
    fast = copy.deepcopy(vae).eval()
    # the input size of each layer, from one decode
    sides: dict[nn.Module, int] = {}

    def record(mod: nn.Module, args: tuple) -> None:
        sides[mod] = min(args[0].shape[2:])

    hooks = [m.register_forward_pre_hook(record) for m in fast.modules() if rewritable(m)]
    with torch.no_grad():
        fast.decode(torch.zeros(1, fast.config.latent_dim))
    for h in hooks:
        h.remove()
    for m in list(fast.modules()):
        for child_name, child in list(m.named_children()):
            if (
                rewritable(child)
                and child.out_channels >= min_out_channels
                and sides.get(child, 0) >= min_side
            ):
                setattr(m, child_name, SubPixelConvTranspose2d(child))
    return fast
