"""``bench``: bvae (tract) against onnxruntime on the same ONNX file.

In one run, for each thread count: onnxruntime (the inference call only,
``intra_op_num_threads`` = the thread count, sequential execution) and
``bvae bench --inference-only --json`` (a subprocess) time the encoder-only
pass and the full pass at batch 1 and at batch N (per frame). onnxruntime
runs the encoder-only pass on the encoder sub-graph (``image`` -> ``mu``,
``logvar``, cut out with ``onnx.utils.extract_model``), as it computes every
node of a graph whatever outputs are asked for. The two runtimes alternate
for ``--rounds`` rounds, so load from other processes hits both alike; the
result is the median over rounds of each round's median. Ratios below 1
mean bvae is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import UserError

#: (key, label) of the compared stages, in print order.
STAGES = (
    ("encode", "encoder-only, batch 1"),
    ("encode_batch", "encoder-only, batch {b} (per frame)"),
    ("full", "full pass, batch 1"),
    ("full_batch", "full pass, batch {b} (per frame)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="NAME.onnx (the encoder model of the contract)")
    p.add_argument(
        "--bvae",
        default=str(Path(__file__).resolve().parents[2] / "target" / "release" / "bvae"),
        help="the bvae binary [default: target/release/bvae of this checkout]",
    )
    p.add_argument(
        "--threads",
        dest="bench_threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts to compare (each runtime gets the same count)",
    )
    p.add_argument("--batch", type=int, default=16, help="the batched pass's batch size")
    p.add_argument("-n", "--iterations", type=int, default=300, help="timed runs per stage")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each runtime")
    p.add_argument(
        "--layers",
        action="store_true",
        help="also time each layer of the full pass, batch 1, one thread, in both runtimes "
        "(onnxruntime's profiler, `bvae bench --layers`), side by side",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def encoder_subgraph(model: Path, out: Path) -> Path:
    """The ``image -> mu, logvar`` part of ``model``, written to ``out``."""
    import onnx.utils

    onnx.utils.extract_model(str(model), str(out), ["image"], ["mu", "logvar"])
    return out


def _median_ms(fn, n: int, per_call: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, n)):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3 / per_call


def image_shape(model: Path) -> tuple[int, int, int]:
    """(C, H, W) of the model's ``image`` input (from the graph, else the metadata)."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    chw = []
    for i, key in enumerate(("bvae.channels", "bvae.height", "bvae.width")):
        v = dims[i + 1] if len(dims) == 4 and dims[i + 1] > 0 else int(meta.get(key, 0))
        if v <= 0:
            raise UserError(f"{model}: cannot tell the input's {key[5:]}")
        chw.append(v)
    return tuple(chw)


def ort_round(
    full: Path, encoder: Path, threads: int, batch: int, n: int, rng: np.random.Generator
) -> dict[str, float]:
    """Median ms per frame of onnxruntime for each of :data:`STAGES`."""
    c, h, w = image_shape(full)
    out = {}
    for key, path, names in (
        ("encode", encoder, ["mu", "logvar"]),
        ("full", full, ["mu", "logvar", "recon"]),
    ):
        sess = _session(path, threads)
        for suffix, b in (("", 1), ("_batch", batch)):
            x = rng.random((b, c, h, w), dtype=np.float32)
            runs = n if b == 1 else max(10, -(-n // b))
            feed = {"image": x}
            out[key + suffix] = _median_ms(
                lambda sess=sess, names=names, feed=feed: sess.run(names, feed), runs, b
            )
    return out


def _bvae_json(cmd: list[str]) -> dict:
    """Runs ``cmd`` (the bvae binary and a ``--json`` command) and parses what it prints."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError(f"{cmd[0]} not found: build it with `cargo build --release`") from None
    if res.returncode != 0:
        raise UserError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()}")
    return json.loads(res.stdout)


def bvae_round(bvae: str, model: Path, threads: int, batch: int, n: int) -> dict:
    """``bvae bench --inference-only --json``: ms per frame per stage and load times."""
    cmd = [
        bvae,
        "bench",
        str(model),
        "--inference-only",
        "--json",
        "--threads",
        str(threads),
        "--batch",
        str(batch),
        "-n",
        str(n),
    ]
    data = _bvae_json(cmd)
    out = {s["key"]: s["median_ms"] for s in data["stages"]}
    out["load_to_first_result"] = data["load_to_first_result_ms"]
    return out


def compare(
    model: Path,
    bvae: str,
    threads: list[int],
    batch: int = 16,
    n: int = 300,
    rounds: int = 3,
    bvae_round_fn=bvae_round,
) -> dict:
    """Alternating rounds of each runtime; medians over rounds and ratios bvae/ort."""
    if rounds < 1 or n < 1 or batch < 2 or not threads or min(threads) < 1:
        raise UserError("--rounds, -n and --bench-threads must be >= 1 and --batch >= 2")
    rng = np.random.default_rng(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        encoder = encoder_subgraph(model, Path(tmp) / "encoder.onnx")
        for t in threads:
            ort_runs, bvae_runs = [], []
            for _ in range(rounds):
                ort_runs.append(ort_round(model, encoder, t, batch, n, rng))
                bvae_runs.append(bvae_round_fn(bvae, model, t, batch, n))
            rows = {}
            for key, _ in STAGES:
                o = statistics.median(r[key] for r in ort_runs)
                b = statistics.median(r[key] for r in bvae_runs)
                rows[key] = {"ort_ms": o, "bvae_ms": b, "ratio": b / o}
            rows["load_to_first_result_ms"] = statistics.median(
                r["load_to_first_result"] for r in bvae_runs
            )
            results[str(t)] = rows
    return {"model": str(model), "batch": batch, "rounds": rounds, "threads": results}


#: Layer kind of an operator, by onnxruntime op type or bvae info prefix.
_ORT_KIND = {
    "Conv": "conv",
    "ConvTranspose": "deconv",
    "Gemm": "dense",
    "FusedGemm": "dense",
    "MatMul": "dense",
    "FusedMatMul": "dense",
}


def ort_layers(model: Path, n: int) -> list[dict]:
    """Median µs per operator of onnxruntime's full pass (batch 1, one thread), in run order.

    From onnxruntime's own profiler (its ``*_kernel_time`` events): each
    entry has ``name``, ``op`` and ``us``.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        c, h, w = image_shape(model)
        feed = {"image": np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)}
        for _ in range(max(1, n)):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            key = name[: -len("_kernel_time")]
            times.setdefault(key, []).append(float(e["dur"]))
            ops[key] = e.get("args", {}).get("op_name", "?")
    return [{"name": k, "op": ops[k], "us": float(np.median(v))} for k, v in times.items()]


def bvae_layers(bvae: str, model: Path, n: int) -> list[dict]:
    """Median µs per operator of bvae's full pass (``bvae bench --layers``), in run order.

    The parts of one layer that tract split (``….split-over-…``: the mu and
    logvar heads of one ``Gemm``) are summed into one entry.
    """
    cmd = [bvae, "bench", str(model), "--inference-only", "--layers", "--json", "-n", str(n)]
    out: list[dict] = []
    for layer in _bvae_json(cmd)["layers"]:
        name = layer["name"].split(".split-over-")[0]
        if out and out[-1]["name"] == name:
            out[-1]["us"] += layer["median_ms"] * 1e3
            continue
        out.append(
            {"name": name, "op": layer["op"], "info": layer["info"], "us": layer["median_ms"] * 1e3}
        )
    return out


def _bvae_kind(op: dict) -> str | None:
    if op["op"] != "BvaeConv":
        return {"Conv": "conv", "ConvTranspose": "deconv"}.get(
            op["op"], "dense" if op["op"] in ("Gemm", "MatMul", "EinSum", "MatMatMul") else None
        )
    info = op["info"]
    return (
        "dense"
        if info.startswith("dense")
        else "deconv"
        if info.startswith("transposed")
        else "conv"
    )


def pair_layers(ort_ops: list[dict], bvae_ops: list[dict]) -> list[dict]:
    """The layers (convolutions, transposed convolutions, dense) of both runtimes, paired in
    run order by kind, then one ``other`` row with what the rest (activations, reshapes,
    layout changes) costs in each. A layer one runtime has and the other lacks stands
    alone (``None`` on the other side)."""
    ort_l = [(o, _ORT_KIND[o["op"]]) for o in ort_ops if o["op"] in _ORT_KIND]
    bvae_l = [(b, k) for b in bvae_ops if (k := _bvae_kind(b))]

    def row(kind: str, layer: str, ort_us: float | None, bvae_us: float | None) -> dict:
        return {"kind": kind, "layer": layer, "ort_us": ort_us, "bvae_us": bvae_us}

    rows, i, j = [], 0, 0
    while i < len(ort_l) or j < len(bvae_l):
        o = ort_l[i] if i < len(ort_l) else None
        b = bvae_l[j] if j < len(bvae_l) else None
        if o and b and o[1] == b[1]:
            rows.append(row(o[1], b[0]["info"], o[0]["us"], b[0]["us"]))
            i, j = i + 1, j + 1
        elif b and (not o or (j + 1 < len(bvae_l) and bvae_l[j + 1][1] == o[1])):
            # bvae has a layer here that onnxruntime lacks
            rows.append(row(b[1], b[0]["info"], None, b[0]["us"]))
            j += 1
        else:
            rows.append(row(o[1], o[0]["name"], o[0]["us"], None))
            i += 1
    ort_other = sum(o["us"] for o in ort_ops if o["op"] not in _ORT_KIND)
    bvae_other = sum(b["us"] for b in bvae_ops if not _bvae_kind(b))
    rows.append(row("other", "activations, reshapes, layout changes", ort_other, bvae_other))
    return rows


def layer_rounds(model: Path, bvae: str, n: int, rounds: int) -> list[dict]:
    """:func:`pair_layers` over ``rounds`` alternating rounds of the two runtimes' layer
    timings (``n`` runs each): per layer, the median over rounds of each runtime's time."""
    tables = []
    for _ in range(max(1, rounds)):
        tables.append(pair_layers(ort_layers(model, n), bvae_layers(bvae, model, n)))
    rows = tables[0]
    for i, r in enumerate(rows):
        for key in ("ort_us", "bvae_us"):
            vals = [t[i][key] for t in tables if t[i][key] is not None]
            r[key] = statistics.median(vals) if vals else None
    return rows


def format_layers(rows: list[dict]) -> str:
    """The paired layers as a table, with each runtime's sum and the ratio per layer."""
    lines = [
        "full pass by layer, batch 1, 1 thread (µs per run, median over the rounds; "
        "onnxruntime's profiler and `bvae bench --layers` add a little per operator):"
    ]
    lines.append(
        f"{'kind':<7} {'onnxruntime':>11} {'bvae':>9} {'bvae/ort':>9}  layer (bvae's shape)"
    )

    def us(v: float | None) -> str:
        return f"{v:>9.1f}" if v is not None else f"{'-':>9}"

    for r in rows:
        ratio = (
            f"{r['bvae_us'] / r['ort_us']:>9.2f}"
            if r["ort_us"] and r["bvae_us"] is not None
            else f"{'-':>9}"
        )
        lines.append(
            f"{r['kind']:<7} {us(r['ort_us']):>11} {us(r['bvae_us'])} {ratio}  {r['layer'][:90]}"
        )
    tot_o = sum(r["ort_us"] or 0.0 for r in rows)
    tot_b = sum(r["bvae_us"] or 0.0 for r in rows)
    lines.append(f"{'sum':<7} {tot_o:>11.1f} {tot_b:>9.1f} {tot_b / tot_o if tot_o else 0:>9.2f}")
    return "\n".join(lines)


def format_table(res: dict) -> str:
    b = res["batch"]
    lines = [f"{res['model']}: median ms per frame over {res['rounds']} alternating rounds"]
    lines.append(f"{'threads':>7}  {'stage':<34} {'onnxruntime':>11} {'bvae':>9} {'bvae/ort':>9}")
    for t, rows in res["threads"].items():
        for key, label in STAGES:
            r = rows[key]
            lines.append(
                f"{t:>7}  {label.format(b=b):<34} {r['ort_ms']:>11.3f} {r['bvae_ms']:>9.3f} "
                f"{r['ratio']:>9.2f}"
            )
    one = res["threads"].get("1")
    for t, rows in res["threads"].items():
        if one and t != "1":
            for rt in ("ort", "bvae"):
                k = f"{rt}_ms"
                lines.append(
                    f"{t} threads / 1 thread, full pass batch 1, {rt}: "
                    f"{rows['full'][k] / one['full'][k]:.2f}"
                )
    if one:
        lines.append(f"bvae load to first result: {one['load_to_first_result_ms']:.1f} ms")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    if not model.is_file():
        raise UserError(f"no model at {model}")
    res = compare(model, args.bvae, args.bench_threads, args.batch, args.iterations, args.rounds)
    if args.layers:
        res["layers"] = layer_rounds(model, args.bvae, args.iterations, args.rounds)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_table(res))
        if args.layers:
            print(format_layers(res["layers"]))
    return 0
