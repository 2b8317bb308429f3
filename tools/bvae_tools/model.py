"""The convolutional β-VAE of Higgins et al. 2017 / Burgess et al. 2018.

Encoder: 4 conv layers (kernel 4, stride 2, padding 1; 32-32-64-64 channels,
ReLU), then a fully connected layer of 256 units and a linear layer giving
``mu`` and ``logvar`` (``2 * Z`` outputs). The decoder mirrors it: linear 256,
linear back to the ``64 x H/16 x W/16`` feature map, then 4 transposed
convolutions (64-32-32-C). The decoder returns logits; ``sigmoid`` turns them
into pixel values in [0, 1] (the Bernoulli mean, or the Gaussian mean for the
Gaussian likelihood).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import UserError

#: Channels of the four encoder convolutions.
CONV_CHANNELS = (32, 32, 64, 64)
#: Units of the hidden fully connected layer.
HIDDEN_UNITS = 256
#: Each conv halves the side, so the input side must be a multiple of this.
SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a β-VAE: channels (1 gray, 3 RGB), square input side, latent size."""

    channels: int = 1
    size: int = 64
    latent_dim: int = 10

    def validate(self) -> ModelConfig:
        if self.channels not in (1, 3):
            raise UserError(f"channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        if self.size < SIZE_MULTIPLE or self.size % SIZE_MULTIPLE != 0:
            raise UserError(
                f"image size must be a positive multiple of {SIZE_MULTIPLE} "
                f"(the encoder halves it four times), got {self.size}; try "
                f"{max(SIZE_MULTIPLE, round(self.size / SIZE_MULTIPLE) * SIZE_MULTIPLE)}"
            )
        if self.latent_dim < 1:
            raise UserError(f"latent dimension must be at least 1, got {self.latent_dim}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class BetaVAE(nn.Module):
    """β-VAE with ``encode``, ``reparameterize`` and ``decode`` (logits)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c, z = config.channels, config.latent_dim
        self.feat = config.size // SIZE_MULTIPLE
        c1, c2, c3, c4 = CONV_CHANNELS
        flat = c4 * self.feat * self.feat
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c3, c4, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(1),
            nn.Linear(flat, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, 2 * z),
        )
        self.decoder_fc = nn.Sequential(
            nn.Linear(z, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, flat),
            nn.ReLU(),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(c4, c3, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(c3, c2, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ``[N, C, H, W]`` in [0, 1] -> ``(mu, logvar)``, each ``[N, Z]``."""
        h = self.encoder(x)
        z = self.config.latent_dim
        return h[:, :z], h[:, z:]

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Sample ``z = mu + sigma * eps`` with the global torch RNG."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, Z]`` -> reconstruction logits ``[N, C, H, W]``."""
        h = self.decoder_fc(z)
        h = h.reshape(-1, CONV_CHANNELS[3], self.feat, self.feat)
        return self.decoder_conv(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: ``(recon_logits, mu, logvar)`` with a sampled ``z``."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


class ExportedEncoder(nn.Module):
    """What ``NAME.onnx`` computes: image -> ``(mu, logvar, sigmoid(decode(mu)))``."""

    def __init__(self, vae: BetaVAE):
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor):
        mu, logvar = self.vae.encode(image)
        return mu, logvar, torch.sigmoid(self.vae.decode(mu))


class ExportedDecoder(nn.Module):
    """What ``NAME.decoder.onnx`` computes: ``z -> sigmoid(decode(z))``."""

    def __init__(self, vae: BetaVAE):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor):
        return torch.sigmoid(self.vae.decode(z))
