"""``synth``: write a folder of synthetic camera frames of a simple scene.

A stand-in for frames recorded from a real camera, for demos and tests: a
fixed room (wall gradient, floor, window, table) seen under a varying light
level, with one ball of a few colours at a random place and size, plus a
little sensor noise. The factors of variation are therefore: light level,
ball colour, ball x, ball y and ball radius.

With ``--anomalies`` the frames also show something never seen in normal
frames (a dark upright box, like a person standing in the room), for trying
out anomaly detection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

#: Colours a ball can have (RGB in [0, 1]).
BALL_COLOURS = np.array(
    [[0.85, 0.15, 0.1], [0.1, 0.6, 0.2], [0.15, 0.3, 0.85], [0.95, 0.8, 0.1]], dtype=np.float32
)
LIGHT_RANGE = (0.6, 1.1)
NOISE_STD = 0.015


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write PNG frames into")
    p.add_argument("--n", type=int, default=2048, help="number of frames")
    p.add_argument("--size", type=int, default=64, help="side of the square frames in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    p.add_argument(
        "--anomalies",
        action="store_true",
        help="also draw an object never seen in normal frames (a dark box)",
    )


def room(size: int) -> np.ndarray:
    """The fixed background, float32 ``[size, size, 3]``."""
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    img = np.empty((size, size, 3), dtype=np.float32)
    wall = np.array([0.80, 0.75, 0.65], dtype=np.float32)
    img[:] = wall * (1.0 - 0.25 * yy[..., None])
    floor = yy > 0.62
    img[floor] = np.array([0.45, 0.32, 0.22], dtype=np.float32) * (0.8 + 0.3 * yy[floor, None])
    window = (xx > 0.62) & (xx < 0.9) & (yy > 0.1) & (yy < 0.4)
    img[window] = np.array([0.65, 0.8, 0.95], dtype=np.float32)
    table = (xx > 0.08) & (xx < 0.4) & (yy > 0.5) & (yy < 0.56)
    img[table] = np.array([0.3, 0.2, 0.12], dtype=np.float32)
    return img


def render_frames(
    n: int, size: int, seed: int, anomalies: bool = False
) -> tuple[np.ndarray, list[dict]]:
    """``n`` frames as uint8 ``[n, size, size, 3]`` and each frame's factors."""
    rng = np.random.default_rng(seed)
    base = room(size)
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(t, t, indexing="ij")
    frames = np.empty((n, size, size, 3), dtype=np.uint8)
    factors = []
    for i in range(n):
        light = rng.uniform(*LIGHT_RANGE)
        colour = int(rng.integers(len(BALL_COLOURS)))
        radius = rng.uniform(0.06, 0.14)
        bx = rng.uniform(0.12, 0.88)
        by = rng.uniform(0.35, 0.88)
        img = base.copy()
        ball = (xx - bx) ** 2 + (yy - by) ** 2 <= radius**2
        shade = 1.0 - 1.5 * np.clip((xx - bx) + (yy - by), 0, None)  # lit from the top left
        img[ball] = BALL_COLOURS[colour] * shade[ball, None]
        f = {
            "light": round(light, 4),
            "colour": colour,
            "radius": round(radius, 4),
            "x": round(bx, 4),
            "y": round(by, 4),
        }
        if anomalies:
            ax = rng.uniform(0.1, 0.8)
            box = (xx > ax) & (xx < ax + 0.12) & (yy > 0.3) & (yy < 0.9)
            img[box] = np.array([0.08, 0.08, 0.1], dtype=np.float32)
            f["anomaly_x"] = round(ax, 4)
        img = img * light + rng.normal(0.0, NOISE_STD, img.shape).astype(np.float32)
        frames[i] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        factors.append(f)
    return frames, factors


def synth(out: str | Path, n: int, size: int, seed: int, anomalies: bool = False) -> Path:
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if size < 8:
        raise UserError(f"--size must be >= 8 pixels, got {size}")
    out = Path(out)
    if out.exists() and any(out.glob("frame_*.png")):
        raise UserError(f"{out} already holds frames; choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    frames, factors = render_frames(n, size, seed, anomalies)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(out / f"frame_{i:05d}.png")
    with (out / "factors.jsonl").open("w") as f:
        for i, fac in enumerate(factors):
            f.write(json.dumps({"file": f"frame_{i:05d}.png", **fac}) + "\n")
    return out


def run(args: argparse.Namespace) -> int:
    out = synth(args.out, args.n, args.size, args.seed, args.anomalies)
    print(f"wrote {args.n} frames ({args.size}×{args.size} RGB) and factors.jsonl in {out}")
    return 0
