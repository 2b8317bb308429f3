"""One-class anomaly detection protocol on an IDX dataset (Fashion-MNIST).

For each chosen class c: train a β-VAE with ``train`` on images of class c
only, ``export`` it, ``bvae calibrate`` it on other images of class c, then
``bvae score`` a labelled evaluation set with the profile and report the
AUROC of every score and of the profile's default score (normal = class c).

Two splits:

* ``val`` uses the *training* images only: of class c, ``--train`` images
  train, ``--calib`` calibrate and ``--val-normal`` are the normal part of
  the evaluation set; ``--val-anomalies`` images of the other classes are its
  anomalies. Hyperparameters are chosen on this split, never on test labels.
* ``test`` trains and calibrates the same way and scores the whole test set
  (10,000 images for Fashion-MNIST), the standard one-class protocol.

Every step runs the shipped commands (``python -m bvae_tools train`` and
``export``, the ``bvae`` binary), as a user would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .data import read_idx
from .errors import UserError

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
#: GeoTrans (Golan & El-Yaniv, NeurIPS 2018, Table 1), Fashion-MNIST AUROC ×100.
GEOTRANS = (99.4, 97.6, 91.1, 89.9, 92.1, 93.4, 83.3, 98.9, 90.8, 99.2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=DEFAULT_DATA, help="folder with the four IDX .gz files")
    p.add_argument("--split", choices=("val", "test"), default="val", help="see the module doc")
    p.add_argument("--classes", default="0-9", help="classes to run, e.g. 0-9 or 2,6")
    p.add_argument("--out", default="runs/oneclass", help="work folder (models, images, results)")
    p.add_argument(
        "--bvae",
        default="",
        help="the bvae binary (default: ../target/release/bvae, else bvae on PATH)",
    )
    p.add_argument("--train", type=int, default=4000, help="training images of the class")
    p.add_argument("--calib", type=int, default=1000, help="calibration images of the class")
    p.add_argument("--val-normal", type=int, default=1000, help="val: normal evaluation images")
    p.add_argument("--val-anomalies", type=int, default=2000, help="val: other-class images")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and of training")
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        help="after --: options for `train` (default: --size 32 and the tool's defaults)",
    )


def parse_classes(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    if not out or any(c < 0 for c in out):
        raise UserError(f"expected classes like 0-9 or 2,6, got {text!r}")
    return out


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve, anomalies positive: the Mann-Whitney
    statistic with ties counted half."""
    scores = np.concatenate([normal, anomalous])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_a, n_n = len(anomalous), len(normal)
    r_a = ranks[n_n:].sum()
    return float((r_a - n_a * (n_a + 1) / 2.0) / (n_a * n_n))


def write_pngs(folder: Path, images: np.ndarray, names: list[str]) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for img, name in zip(images, names, strict=True):
        Image.fromarray(img).save(folder / f"{name}.png")


def write_idx(path: Path, images: np.ndarray) -> None:
    """Images ``[N, H, W]`` uint8 as an uncompressed IDX file."""
    n, h, w = images.shape
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]))
        f.write(np.array([n, h, w], dtype=">u4").tobytes())
        f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())


def find_bvae(given: str) -> str:
    if given:
        return given
    local = Path(__file__).resolve().parents[2] / "target" / "release" / "bvae"
    if local.is_file():
        return str(local)
    found = shutil.which("bvae")
    if not found:
        raise UserError("no bvae binary: build it (cargo build --release) or pass --bvae")
    return found


def call(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def one_class(args, c: int, images, labels, test_images, test_labels, bvae: str) -> dict:
    rng = np.random.default_rng(args.seed + 1000 * c)
    own = rng.permutation(np.flatnonzero(labels == c))
    need = args.train + args.calib + (args.val_normal if args.split == "val" else 0)
    if len(own) < need:
        raise UserError(f"class {c} has {len(own)} training images, {need} are asked for")
    tr, cal = own[: args.train], own[args.train : args.train + args.calib]
    work = Path(args.out) / f"class{c}"
    work.mkdir(parents=True, exist_ok=True)
    if args.split == "val":
        normal = own[args.train + args.calib : need]
        others = rng.permutation(np.flatnonzero(labels != c))[: args.val_anomalies]
        eval_images = np.concatenate([images[normal], images[others]])
        eval_normal = np.concatenate([np.ones(len(normal), bool), np.zeros(len(others), bool)])
    else:
        eval_images, eval_normal = test_images, test_labels == c
    names = [f"{i:05d}" for i in range(len(eval_images))]
    write_idx(work / "train.idx", images[tr])
    write_pngs(work / "calib", images[cal], [f"{i:05d}" for i in range(len(cal))])
    write_pngs(work / "eval", eval_images, names)

    t0 = time.time()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if "--size" not in train_args:
        train_args = ["--size", "32", *train_args]
    py = [sys.executable, "-m", "bvae_tools"]
    call([*py, "train", "--idx", str(work / "train.idx"), "--out", str(work / "run"),
         "--seed", str(args.seed), "--no-progress", *train_args])  # fmt: skip
    t_train = time.time() - t0
    model = work / "model.onnx"
    call([*py, "export", str(work / "run"), "--out", str(model), "--no-golden"])
    profile = work / "model.calibration.json"
    call([bvae, "calibrate", str(model), str(work / "calib"), "-o", str(profile)])
    out = call([bvae, "score", str(model), str(work / "eval"), "-c", str(profile), "--json"])
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    by_name = {Path(r["file"]).stem: r for r in rows}
    if len(by_name) != len(names):
        raise UserError(f"bvae score returned {len(by_name)} results for {len(names)} images")
    ordered = [by_name[n] for n in names]
    default = json.loads(profile.read_text())["method"]
    result = {"class": c, "default": default, "train_s": round(t_train, 1), "auroc": {}}
    # "noise" is the sensor-noise check's measurement of the image, not a
    # score of the model
    methods = [m for m, v in ordered[0]["scores"].items() if v is not None and m != "noise"]
    for m in methods:
        s = np.array([r["scores"][m] for r in ordered], dtype=float)
        result["auroc"][m] = 100.0 * auroc(s[eval_normal], s[~eval_normal])
    result["auroc"]["default"] = result["auroc"][default]
    return result


def table(results: list[dict], split: str) -> str:
    methods = ["default", *[m for m in results[0]["auroc"] if m != "default"]]
    classes = [r["class"] for r in results]
    head = "| score | " + " | ".join(map(str, classes)) + " | mean | min |"
    lines = [head, "|" + " --- |" * (len(classes) + 3)]
    for m in methods:
        v = [r["auroc"][m] for r in results]
        cells = " | ".join(f"{x:.1f}" for x in v)
        lines.append(f"| {m} | {cells} | {np.mean(v):.1f} | {min(v):.1f} |")
    lines.append("| (default chose) | " + " | ".join(r["default"] for r in results) + " | | |")
    if split == "test":
        g = [GEOTRANS[c] for c in classes if c < len(GEOTRANS)]
        if len(g) == len(classes):
            cells = " | ".join(f"{x:.1f}" for x in g)
            lines.append(f"| GeoTrans | {cells} | {np.mean(g):.1f} | {min(g):.1f} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    data = Path(args.data)
    files = {
        k: data / f"{k}-ubyte.gz"
        for k in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserError(
            f"missing {', '.join(missing)}; on Debian: apt-get install dataset-fashion-mnist"
        )
    images, labels = read_idx(files["train-images-idx3"]), read_idx(files["train-labels-idx1"])
    test_images = read_idx(files["t10k-images-idx3"])
    test_labels = read_idx(files["t10k-labels-idx1"])
    bvae = find_bvae(args.bvae)
    results = []
    for c in parse_classes(args.classes):
        r = one_class(args, c, images, labels, test_images, test_labels, bvae)
        line = "  ".join(f"{m} {v:.1f}" for m, v in r["auroc"].items())
        print(f"class {c}: {line} (default: {r['default']}, trained in {r['train_s']} s)")
        sys.stdout.flush()
        results.append(r)
    out = Path(args.out)
    (out / f"results_{args.split}.json").write_text(json.dumps(results, indent=1))
    text = table(results, args.split)
    (out / f"results_{args.split}.md").write_text(text + "\n")
    print(text)
    return 0
