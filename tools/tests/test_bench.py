import json

import pytest

from bvae_tools.__main__ import main
from bvae_tools.bench import STAGES, compare, encoder_subgraph, format_table, image_shape
from bvae_tools.errors import UserError


@pytest.fixture(scope="module")
def model(trained_run, tmp_path_factory):
    from bvae_tools.export import export

    out = tmp_path_factory.mktemp("bench") / "m.onnx"
    export(trained_run, out, kl_samples=64, parity_samples=4, golden=False)
    return out


def fake_bvae(bvae, model, threads, batch, n):
    # what `bvae bench --inference-only --json` reports, parsed
    return {
        "encode": 0.1,
        "encode_batch": 0.1,
        "full": 0.2,
        "full_batch": 0.3,
        "load_to_first_result": 12.0,
    }


def test_encoder_subgraph_has_only_the_latents(model, tmp_path):
    import onnx

    enc = onnx.load(str(encoder_subgraph(model, tmp_path / "e.onnx")))
    assert [o.name for o in enc.graph.output] == ["mu", "logvar"]
    assert not any(n.op_type in ("ConvTranspose", "DepthToSpace") for n in enc.graph.node)
    assert image_shape(model) == (1, 32, 32)


def test_compare_times_onnxruntime_and_reports_ratios(model):
    res = compare(model, "unused", [1], batch=2, n=3, rounds=2, bvae_round_fn=fake_bvae)
    rows = res["threads"]["1"]
    for key, _ in STAGES:
        r = rows[key]
        assert r["ort_ms"] > 0
        assert r["ratio"] == pytest.approx(r["bvae_ms"] / r["ort_ms"])
    assert rows["full"]["bvae_ms"] == 0.2
    assert rows["load_to_first_result_ms"] == 12.0
    text = format_table(res)
    assert "full pass, batch 2 (per frame)" in text and "bvae/ort" in text


def test_missing_binary_and_bad_arguments_are_user_errors(model, capsys):
    with pytest.raises(UserError, match="not found"):
        compare(model, "/nonexistent/bvae", [1], batch=2, n=1, rounds=1)
    with pytest.raises(UserError):
        compare(model, "unused", [1], batch=1, n=1, rounds=1, bvae_round_fn=fake_bvae)
    assert main(["bench", str(model.with_name("nope.onnx"))]) == 2
    assert "no model" in capsys.readouterr().err


def test_cli_json(model, monkeypatch, capsys):
    import bvae_tools.bench as bench

    monkeypatch.setattr(bench, "bvae_round", fake_bvae)
    monkeypatch.setattr(bench, "compare", lambda *a, **k: compare(*a, **k, bvae_round_fn=fake_bvae))
    assert (
        main(
            [
                "bench",
                str(model),
                "--threads",
                "1",
                "--batch",
                "2",
                "-n",
                "2",
                "--rounds",
                "1",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out["threads"]) == {"1"}


def test_layers_pair_up_by_kind_in_run_order(model):
    from bvae_tools.bench import format_layers, ort_layers, pair_layers

    ort_ops = ort_layers(model, 3)
    kinds = [o["op"] for o in ort_ops]
    assert "Conv" in kinds and "ConvTranspose" in kinds, kinds
    assert all(o["us"] >= 0 for o in ort_ops)
    # bvae's side as `bvae bench --layers` reports it: one layer onnxruntime
    # lacks (a second dense layer: it stands alone, after the first pair),
    # a reshape, a sigmoid
    bvae_ops = [
        {"name": "image", "op": "Source", "info": "", "us": 0.0},
        {"name": "c1", "op": "BvaeConv", "info": "ConvShape { ic: 1 }", "us": 10.0},
        {"name": "d1", "op": "BvaeConv", "info": "dense 8 -> 4, relu true", "us": 2.0},
        {"name": "d2", "op": "BvaeConv", "info": "dense 8 -> 4, relu false", "us": 1.0},
        {"name": "r", "op": "IntoShape", "info": "", "us": 0.5},
        {"name": "t1", "op": "BvaeConv", "info": "transposed DeconvShape { ic: 4 }", "us": 20.0},
        {"name": "s", "op": "Sigmoid", "info": "", "us": 1.5},
    ]
    ort_side = [
        {"name": "conv", "op": "Conv", "us": 12.0},
        {"name": "gemm", "op": "FusedGemm", "us": 4.0},
        {"name": "relu", "op": "Relu", "us": 1.0},
        {"name": "deconv", "op": "ConvTranspose", "us": 30.0},
    ]
    rows = pair_layers(ort_side, bvae_ops)
    assert [(r["kind"], r["ort_us"], r["bvae_us"]) for r in rows] == [
        ("conv", 12.0, 10.0),
        ("dense", 4.0, 2.0),
        ("dense", None, 1.0),
        ("deconv", 30.0, 20.0),
        ("other", 1.0, 2.0),
    ]
    text = format_layers(rows)
    assert "0.83" in text and "sum" in text  # conv 10/12, and the totals


def test_layer_rounds_take_the_median_of_each_layer(model, monkeypatch):
    import bvae_tools.bench as bench

    times = iter([10.0, 30.0, 20.0])
    monkeypatch.setattr(
        bench,
        "bvae_layers",
        lambda *a: [{"name": "c", "op": "BvaeConv", "info": "ConvShape {}", "us": next(times)}],
    )
    rows = bench.layer_rounds(model, "unused", 2, 3)
    conv = [r for r in rows if r["kind"] == "conv"]
    # the test model's first convolution pairs with bvae's; its further
    # layers stand alone, timed by onnxruntime only
    assert conv[0]["bvae_us"] == 20.0 and conv[0]["ort_us"] > 0
    assert all(r["bvae_us"] is None for r in conv[1:])
