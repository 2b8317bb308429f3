import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bvae_tools.checkpoint import load_checkpoint
from bvae_tools.errors import UserError
from bvae_tools.export import ExportError, check_parity, export

METADATA_KEYS = {
    "bvae.format",
    "bvae.latent_dim",
    "bvae.channels",
    "bvae.height",
    "bvae.width",
    "bvae.likelihood",
    "bvae.objective",
    "bvae.beta",
    "bvae.gamma",
    "bvae.capacity_max",
    "bvae.latent_kl",
    "bvae.dataset",
    "bvae.steps",
    "bvae.seed",
    "bvae.fit",  # not in the contract: how folder frames were fitted (crop | letterbox)
}


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny.onnx"
    summary = export(trained_run, out, kl_samples=256, parity_samples=8)
    return out, summary


@pytest.fixture(scope="module")
def exported_dynamo(trained_rgb_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "rgb.onnx"
    summary = export(
        trained_rgb_run,
        out,
        exporter="dynamo",
        external_data=True,
        kl_samples=256,
        parity_samples=8,
    )
    return out, summary


def meta(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_torchscript_export_contract(exported):
    out, summary = exported
    dec = out.with_name("tiny.decoder.onnx")
    assert out.is_file() and dec.is_file()
    assert summary["opset"] == 17
    m = onnx.load(str(out))
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in m.graph.input] == ["image"]
    assert [o.name for o in m.graph.output] == ["mu", "logvar", "recon"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 32]
    io_shapes = {
        vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in (*m.graph.input, *m.graph.output)
    }
    assert io_shapes == {
        "image": ["N", 1, 32, 32],
        "mu": ["N", 3],
        "logvar": ["N", 3],
        "recon": ["N", 1, 32, 32],
    }
    d = onnx.load(str(dec))
    assert [d.dim_param or d.dim_value for d in d.graph.output[0].type.tensor_type.shape.dim] == [
        "N",
        1,
        32,
        32,
    ]
    assert [i.name for i in d.graph.input] == ["z"]
    assert [o.name for o in d.graph.output] == ["recon"]


def test_metadata_on_both_files(exported, trained_run):
    out, summary = exported
    _, cfg, state = load_checkpoint(trained_run)
    for path in (out, out.with_name("tiny.decoder.onnx")):
        md = meta(path)
        assert set(md) == METADATA_KEYS
        assert md["bvae.format"] == "1"
        assert md["bvae.latent_dim"] == "3" and md["bvae.channels"] == "1"
        assert md["bvae.height"] == md["bvae.width"] == "32"
        assert md["bvae.likelihood"] == "bernoulli" and md["bvae.objective"] == "beta"
        assert float(md["bvae.beta"]) == 4.0 and float(md["bvae.gamma"]) == 1000.0
        assert float(md["bvae.capacity_max"]) == 25.0
        assert md["bvae.dataset"] == "dsprites"
        assert md["bvae.steps"] == str(state["step"]) and md["bvae.seed"] == "0"
        assert md["bvae.fit"] == "crop"
        kl = json.loads(md["bvae.latent_kl"])
        assert len(kl) == 3 and all(isinstance(v, float) and v >= 0 for v in kl)
        assert kl == pytest.approx(summary["latent_kl"], abs=1e-5)


def test_golden_fixture(exported):
    out, _ = exported
    g = out.with_name("tiny.golden")
    manifest = json.loads((g / "manifest.json").read_text())
    assert manifest["model"] == "tiny.onnx" and manifest["decoder"] == "tiny.decoder.onnx"
    assert manifest["n"] == 4 and manifest["torch"]
    shapes = {
        "image": (4, 1, 32, 32),
        "mu": (4, 3),
        "logvar": (4, 3),
        "recon": (4, 1, 32, 32),
        "z": (4, 3),
        "decoder_recon": (4, 1, 32, 32),
    }
    arrs = {}
    for name, shape in shapes.items():
        raw = (g / f"{name}.npy").read_bytes()
        assert raw[:8] == b"\x93NUMPY\x01\x00", "npy format version 1.0"
        assert b"'descr': '<f4'" in raw and b"'fortran_order': False" in raw
        arrs[name] = np.load(g / f"{name}.npy")
        assert arrs[name].shape == shape and arrs[name].dtype == np.float32
    assert 0 <= arrs["recon"].min() and arrs["recon"].max() <= 1
    assert not np.array_equal(arrs["z"], arrs["mu"])
    # the fixture is what onnxruntime computes, within the stated tolerance
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    mu, logvar, recon = sess.run(None, {"image": arrs["image"]})
    np.testing.assert_allclose(mu, arrs["mu"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(logvar, arrs["logvar"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(recon, arrs["recon"], rtol=1e-3, atol=1e-5)
    dsess = ort.InferenceSession(
        str(out.with_name("tiny.decoder.onnx")), providers=["CPUExecutionProvider"]
    )
    (drec,) = dsess.run(None, {"z": arrs["z"]})
    np.testing.assert_allclose(drec, arrs["decoder_recon"], rtol=1e-3, atol=1e-5)


def test_dynamo_export_with_external_data(exported_dynamo):
    out, summary = exported_dynamo
    assert summary["opset"] == 18
    for path in (out, out.with_name("rgb.decoder.onnx")):
        data = path.with_name(path.name + ".data")
        assert data.is_file() and data.stat().st_size > 10_000
        assert path.stat().st_size < data.stat().st_size
        md = meta(path)
        assert set(md) == METADATA_KEYS
        assert md["bvae.channels"] == "3" and md["bvae.latent_dim"] == "2"
        assert md["bvae.likelihood"] == "gaussian" and md["bvae.objective"] == "capacity"
        assert float(md["bvae.capacity_max"]) == 5.0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["mu", "logvar", "recon"]
    g = out.with_name("rgb.golden")
    image = np.load(g / "image.npy")
    assert image.shape == (4, 3, 32, 32)
    mu, _, recon = sess.run(None, {"image": image})
    np.testing.assert_allclose(mu, np.load(g / "mu.npy"), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(recon, np.load(g / "recon.npy"), rtol=1e-3, atol=1e-5)
    # dynamic batch: 1 and 7 images
    for n in (1, 7):
        outs = sess.run(None, {"image": np.repeat(image[:1], n, axis=0)})
        assert outs[0].shape == (n, 2) and outs[2].shape == (n, 3, 32, 32)


def test_reexport_without_external_data_removes_stale_data(trained_rgb_run, tmp_path):
    out = tmp_path / "m.onnx"
    export(trained_rgb_run, out, external_data=True, kl_samples=64, parity_samples=4)
    assert (tmp_path / "m.onnx.data").exists()
    export(trained_rgb_run, out, external_data=False, kl_samples=64, parity_samples=4, golden=False)
    assert not (tmp_path / "m.onnx.data").exists()
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_parity_failure_is_loud(exported):
    out, _ = exported
    image = np.load(out.with_name("tiny.golden") / "image.npy")
    mu = np.load(out.with_name("tiny.golden") / "mu.npy")
    logvar = np.load(out.with_name("tiny.golden") / "logvar.npy")
    recon = np.load(out.with_name("tiny.golden") / "recon.npy")
    with pytest.raises(ExportError, match="'mu'.*differs from PyTorch"):
        check_parity(
            out, "image", image, {"mu": mu + 1e-2, "logvar": logvar, "recon": recon}, threads=1
        )


def test_export_argument_errors(trained_run, tmp_path):
    with pytest.raises(UserError, match="must end in .onnx"):
        export(trained_run, tmp_path / "model.bin")
    with pytest.raises(UserError, match="does not exist"):
        export(tmp_path / "no_run", tmp_path / "m.onnx")
    with pytest.raises(UserError, match="opset >= 18"):
        export(trained_run, tmp_path / "m.onnx", exporter="dynamo", opset=17)
    with pytest.raises(ExportError, match="torch.onnx.export .*failed"):
        export(trained_run, tmp_path / "m.onnx", opset=99, kl_samples=16, parity_samples=4)


def test_latent_names_are_stored_one_per_latent(trained_run, tmp_path):
    out = tmp_path / "named.onnx"
    export(trained_run, out, kl_samples=16, parity_samples=8, golden=False, latent_names="x, ,size")
    assert json.loads(meta(out)["bvae.latent_names"]) == ["x", "", "size"]
    for bad, match in (("x,y", "has 2 names but the model has 3"), ("a,b\tc,d", "control")):
        with pytest.raises(UserError, match=match):
            export(trained_run, tmp_path / "bad.onnx", latent_names=bad)
    with pytest.raises(UserError, match="at most 32"):
        export(trained_run, tmp_path / "bad.onnx", latent_names="a,b," + "c" * 33)


def test_failed_check_removes_the_files(trained_run, tmp_path, monkeypatch):
    import bvae_tools.export as ex

    def bad_parity(path, *args, **kwargs):
        raise ExportError(f"{path}: onnxruntime output 'mu' differs from PyTorch")

    monkeypatch.setattr(ex, "check_parity", bad_parity)
    with pytest.raises(ExportError, match="were removed"):
        export(
            trained_run, tmp_path / "m.onnx", external_data=True, kl_samples=16, parity_samples=4
        )
    assert list(tmp_path.iterdir()) == []
