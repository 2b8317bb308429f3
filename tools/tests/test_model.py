import pytest
import torch

from bvae_tools.errors import UserError
from bvae_tools.model import BetaVAE, ExportedDecoder, ExportedEncoder, ModelConfig


@pytest.mark.parametrize("channels,size,z", [(1, 64, 10), (3, 32, 6), (1, 16, 1), (3, 48, 4)])
def test_shapes_and_ranges(channels, size, z):
    torch.manual_seed(0)
    vae = BetaVAE(ModelConfig(channels, size, z)).eval()
    x = torch.rand(5, channels, size, size)
    logits, mu, logvar = vae(x)
    assert logits.shape == (5, channels, size, size)
    assert mu.shape == logvar.shape == (5, z)
    mu2, logvar2, recon = ExportedEncoder(vae)(x)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    assert recon.shape == x.shape
    assert recon.min() >= 0 and recon.max() <= 1
    dec = ExportedDecoder(vae)(torch.randn(3, z) * 3)
    assert dec.shape == (3, channels, size, size)
    assert dec.min() >= 0 and dec.max() <= 1
    # recon of the exported encoder is the decoder applied to mu
    torch.testing.assert_close(recon, ExportedDecoder(vae)(mu))


def test_architecture_matches_the_paper():
    vae = BetaVAE(ModelConfig(1, 64, 10))
    convs = [m for m in vae.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    deconvs = [m for m in vae.decoder_conv if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in deconvs] == [64, 32, 32, 1]
    linears = [m for m in vae.encoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 20]


@pytest.mark.parametrize(
    "cfg",
    [ModelConfig(2, 64, 10), ModelConfig(1, 40, 10), ModelConfig(1, 8, 10), ModelConfig(1, 64, 0)],
)
def test_bad_configs_are_user_errors(cfg):
    with pytest.raises(UserError):
        cfg.validate()


def test_size_error_suggests_a_valid_size():
    with pytest.raises(UserError, match="multiple of 16.*got 40"):
        ModelConfig(1, 40, 10).validate()
