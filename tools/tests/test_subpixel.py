import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bvae_tools.model import BetaVAE, ExportedDecoder, ModelConfig
from bvae_tools.subpixel import SubPixelConvTranspose2d, rewritable, subpixel_decoder


@pytest.mark.parametrize(
    ("c_in", "c_out", "size"), [(64, 64, 4), (32, 32, 16), (3, 8, 5), (5, 1, 7)]
)
def test_subpixel_equals_transposed_convolution(c_in, c_out, size):
    torch.manual_seed(c_in + c_out + size)
    deconv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)
    x = torch.randn(3, c_in, size, size + 1)  # non-square too
    with torch.no_grad():
        want = deconv(x)
        got = SubPixelConvTranspose2d(deconv)(x)
    assert got.shape == want.shape == (3, c_out, 2 * size, 2 * size + 2)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_only_k4_s2_p1_layers_are_rewritable():
    assert rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1))
    assert not rewritable(nn.ConvTranspose2d(4, 4, 3, 2, 1))
    assert not rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1))
    assert not rewritable(nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2))
    assert not rewritable(nn.Conv2d(4, 4, 4, 2, 1))
    with pytest.raises(ValueError):
        SubPixelConvTranspose2d(nn.ConvTranspose2d(4, 4, 3, 1, 1))


@pytest.mark.parametrize(("channels", "size", "rewritten"), [(1, 64, 2), (3, 32, 1), (1, 128, 3)])
def test_rewritten_vae_decodes_the_same(channels, size, rewritten):
    torch.manual_seed(channels)
    vae = BetaVAE(ModelConfig(channels=channels, size=size, latent_dim=5)).eval()
    fast = subpixel_decoder(vae)
    kinds = [type(m).__name__ for m in fast.decoder_conv]
    # layers on maps of at least 8x8 with at least 8 outputs are rewritten:
    # never the last (C_out = channels < 8), nor the first ones on small maps
    assert kinds.count("SubPixelConvTranspose2d") == rewritten
    assert kinds.count("ConvTranspose2d") == 4 - rewritten
    assert isinstance(fast.decoder_conv[-1], nn.ConvTranspose2d)
    # the original model is left untouched
    assert all(not isinstance(m, SubPixelConvTranspose2d) for m in vae.modules())
    z = torch.randn(4, 5) * 2
    with torch.no_grad():
        np.testing.assert_allclose(
            ExportedDecoder(fast)(z).numpy(), ExportedDecoder(vae)(z).numpy(), rtol=1e-5, atol=1e-6
        )


def test_export_writes_transposed_convolutions_by_default(exported_pair):
    fast, plain = exported_pair
    ops = {n.op_type for n in onnx.load(str(fast), load_external_data=False).graph.node}
    assert "DepthToSpace" in ops and "Slice" in ops
    # 32x32 input: only the layer on the 8x8 map is rewritten
    n_deconv = sum(
        n.op_type == "ConvTranspose"
        for n in onnx.load(str(fast), load_external_data=False).graph.node
    )
    assert n_deconv == 3
    plain_ops = [n.op_type for n in onnx.load(str(plain), load_external_data=False).graph.node]
    assert plain_ops.count("ConvTranspose") == 4 and "DepthToSpace" not in plain_ops


def test_subpixel_and_plain_exports_agree(exported_pair):
    import onnxruntime as ort

    fast, plain = exported_pair
    golden = np.load(fast.with_name("fast.golden") / "image.npy")
    outs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
            None, {"image": golden}
        )
        for p in (fast, plain)
    ]
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def exported_pair(trained_run, tmp_path_factory):
    from bvae_tools.export import export

    d = tmp_path_factory.mktemp("subpixel")
    fast, plain = d / "fast.onnx", d / "plain.onnx"
    export(trained_run, fast, kl_samples=64, parity_samples=8, subpixel=True)
    export(trained_run, plain, kl_samples=64, parity_samples=8, golden=False)
    return fast, plain
