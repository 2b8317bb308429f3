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
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError(f"{bvae} not found: build it with `cargo build --release`") from None
    if res.returncode != 0:
        raise UserError(f"{' '.join(cmd)} failed:\n{res.stderr.strip()}")
    data = json.loads(res.stdout)
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
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0
