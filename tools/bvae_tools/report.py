"""``report``: PNGs a person would rather look at than read.

- ``loss_curves.png``: training and held-out loss, reconstruction NLL and KL per epoch.
- ``latent_kl.png``: mean KL per latent on training images (which latents carry information).
- ``reconstructions.png``: held-out inputs (top row) above their reconstructions.
- ``traversals.png``: one row per latent (sorted by KL), that latent swept over
  [-3, 3] (prior σ units) while the others keep the ``mu`` of one image.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .checkpoint import LOG_NAME, load_checkpoint, resolve_checkpoint  # noqa: E402
from .data import open_source, split_indices  # noqa: E402
from .errors import UserError  # noqa: E402
from .train import mean_latent_kl  # noqa: E402

#: A latent with mean KL below this many nats is inactive: drawn grey here,
#: and, in the runtime, never blamed for an anomaly (the same number as
#: ``ACTIVE_KL_NATS`` in src/meta.rs; a test checks that they agree).
ACTIVE_KL = 0.01
TRAVERSAL_STEPS = 9
TRAVERSAL_RANGE = 3.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run directory of `train` (holds checkpoint.pt and log.csv)")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR/report)")
    p.add_argument("--samples", type=int, default=2048, help="training images for the KL bars")
    p.add_argument("--n-recon", type=int, default=8, help="images in the reconstruction grid")


def read_log(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UserError(f"training log {path} does not exist; run `train` first")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"training log {path} has no epochs yet")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def plot_losses(log: dict[str, np.ndarray], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ep = log["epoch"]
    axes[0].plot(ep, log["loss"], "o-", label="train")
    axes[0].plot(ep, log["heldout_loss"], "s--", label="held-out")
    axes[0].set_title("objective")
    axes[1].plot(ep, log["recon"], "o-", label="train")
    axes[1].plot(ep, log["heldout_recon"], "s--", label="held-out")
    axes[1].set_title("reconstruction NLL (per image)")
    axes[2].plot(ep, log["kl"], "o-", label="train total")
    axes[2].plot(ep, log["heldout_kl"], "s--", label="held-out total")
    if np.any(log["capacity"] > 0):
        axes[2].plot(ep, log["capacity"], ":", label="capacity C")
    axes[2].set_title("KL (nats)")
    for ax in axes[:2]:
        # the first epoch often dwarfs the rest; a log axis keeps the later epochs readable
        values = np.concatenate([ax_line.get_ydata() for ax_line in ax.get_lines()])
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 5:
            ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_kl(kl: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(kl) + 1.5), 3.4))
    colours = ["tab:blue" if v >= ACTIVE_KL else "tab:gray" for v in kl]
    ax.bar(np.arange(len(kl)), kl, color=colours)
    for j, v in enumerate(kl):
        ax.text(j, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(kl)), [f"z{j}" for j in range(len(kl))])
    ax.set_ylabel("mean KL (nats)")
    n_active = int((kl >= ACTIVE_KL).sum())
    ax.set_title(f"KL per latent: {n_active} of {len(kl)} active (≥ {ACTIVE_KL} nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _show(ax, img: np.ndarray) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_recon(x: np.ndarray, recon: np.ndarray, path: Path) -> None:
    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 2.9), squeeze=False)
    for i in range(n):
        _show(axes[0, i], x[i])
        _show(axes[1, i], recon[i])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("recon")
    fig.suptitle("held-out inputs and reconstructions (decoder of mu)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@torch.no_grad()
def traversal_images(model, base_mu: torch.Tensor, order: np.ndarray) -> np.ndarray:
    """``[rows, steps, C, H, W]``: row r sweeps latent ``order[r]``."""
    values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, TRAVERSAL_STEPS)
    rows = []
    for j in order:
        z = base_mu.repeat(TRAVERSAL_STEPS, 1)
        z[:, j] = values
        rows.append(torch.sigmoid(model.decode(z)).numpy())
    return np.stack(rows)


def plot_traversals(grid: np.ndarray, order: np.ndarray, kl: np.ndarray, path: Path) -> None:
    rows, steps = grid.shape[:2]
    fig, axes = plt.subplots(
        rows, steps, figsize=(1.05 * steps + 1.2, 1.05 * rows + 0.6), squeeze=False
    )
    for r in range(rows):
        for c in range(steps):
            _show(axes[r, c], grid[r, c])
        axes[r, 0].set_ylabel(
            f"z{order[r]}\n{kl[order[r]]:.2f}", rotation=0, ha="right", va="center", fontsize=8
        )
    vals = np.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, steps)
    for c in range(steps):
        axes[-1, c].set_xlabel(f"{vals[c]:+.1f}", fontsize=8)
    fig.suptitle("latent traversals (rows by KL, nats; others fixed at one image's mu)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def report(
    run_dir: str | Path, out: str | Path | None = None, samples: int = 2048, n_recon: int = 8
) -> dict:
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    if samples < 1 or n_recon < 1:
        raise UserError("--samples and --n-recon must be >= 1")
    ckpt = resolve_checkpoint(run_dir)
    log = read_log(ckpt.parent / LOG_NAME)
    model, cfg, _ = load_checkpoint(ckpt)
    source = open_source(cfg.data, cfg.model.size, cfg.model.channels, cache=ckpt.parent)
    train_idx, hold_idx = split_indices(len(source), cfg.holdout, cfg.seed)
    rng = np.random.default_rng([cfg.seed, 13])
    kl_idx = np.sort(rng.choice(train_idx, size=min(samples, len(train_idx)), replace=False))
    kl = mean_latent_kl(model, source, kl_idx)
    pool = hold_idx if len(hold_idx) > 0 else train_idx
    rec_idx = rng.choice(pool, size=min(n_recon, len(pool)), replace=False)
    with torch.no_grad():
        x = source.batch(rec_idx)
        mu, _ = model.encode(x)
        recon = torch.sigmoid(model.decode(mu)).numpy()
    out.mkdir(parents=True, exist_ok=True)
    plot_losses(log, out / "loss_curves.png")
    plot_kl(kl, out / "latent_kl.png")
    plot_recon(x.numpy(), recon, out / "reconstructions.png")
    order = np.argsort(-kl, kind="stable")
    plot_traversals(traversal_images(model, mu[:1], order), order, kl, out / "traversals.png")
    return {"out": out, "latent_kl": kl.tolist()}


def run(args: argparse.Namespace) -> int:
    s = report(args.run_dir, args.out, args.samples, args.n_recon)
    print(
        f"wrote loss_curves.png, latent_kl.png, reconstructions.png, traversals.png in {s['out']}"
    )
    return 0
