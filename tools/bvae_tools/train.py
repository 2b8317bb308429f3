"""``train``: fit a β-VAE on a data source; write checkpoint.pt, log.csv, config.json."""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .augment import AugmentConfig, augment_batch, batch_generator
from .checkpoint import (
    CHECKPOINT_NAME,
    LOG_NAME,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
)
from .data import (
    ILLUMINATIONS,
    DataConfig,
    ImageSource,
    open_source,
    parse_grid,
    renormalise,
    split_indices,
)
from .errors import UserError
from .losses import LIKELIHOODS, OBJECTIVES, LossConfig, kl_per_latent, vae_loss
from .model import BetaVAE, ModelConfig
from .schedule import SCHEDULES, EarlyStopping, lr_factor

#: Fields of the resumed run that must match the command line.
_RESUME_MUST_MATCH = (
    "model",
    "loss",
    "data",
    "batch_size",
    "holdout",
    "seed",
    "epoch_size",
    "lr_schedule",
    "warmup_epochs",
    "augment",
)


#: The training recipe users get by default (tools/README.md, "Training recipe";
#: the experiments behind it are in docs/detection/recipe_experiments.md).
DEFAULT_EPOCHS = 20
DEFAULT_PATIENCE = 5
DEFAULT_MIN_DELTA = 1e-3
DEFAULT_SCHEDULE = "cosine"
DEFAULT_WARMUP_EPOCHS = 1.0
DEFAULT_LR = 5e-4
DEFAULT_LATENT_DIM = 16
DEFAULT_BETA = 1.0
DEFAULT_AUGMENT = False


def parse_classes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(sorted({int(c) for c in text.split(",") if c.strip()}))
    except ValueError:
        raise UserError(
            f"--classes must be comma-separated integers like 0,3; got {text!r}"
        ) from None


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (choose one source)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", metavar="DIR", help="folder of PNG/JPEG images (recursive)")
    src.add_argument(
        "--dsprites", action="store_true", help="the built-in dSprites generator (737,280 images)"
    )
    src.add_argument("--idx", metavar="FILE", help="IDX images file (MNIST format, .gz or raw)")
    g.add_argument("--idx-labels", metavar="FILE", help="IDX labels file, needed for --classes")
    g.add_argument("--classes", metavar="LIST", help="keep only these IDX labels, e.g. 0,3")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    m = p.add_argument_group("model")
    m.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 gray, 3 RGB")
    m.add_argument("--size", type=int, default=64, help="input side in pixels, multiple of 16")
    m.add_argument(
        "--fit",
        choices=("crop", "letterbox"),
        default="crop",
        help="how --images of another aspect ratio become square: centre crop, or "
        "shrink to fit on black borders (calibrate the runtime with the same --fit)",
    )
    m.add_argument(
        "--illumination",
        choices=ILLUMINATIONS,
        default="none",
        help="gain: scale every image to the training data's mean brightness, here and "
        "in the runtime, so a global change of light (lights dimmed, clouds) is not an "
        "anomaly; none: keep it (lights out is then an anomaly)",
    )
    m.add_argument(
        "--tiles",
        default="",
        metavar="COLSxROWS",
        help="cut every --images frame into a grid of tiles (e.g. 4x3), each one training "
        "image of --size; the model then scores camera frames tile by tile, so small "
        "objects are not lost in the shrink (bvae calibrate reads the grid from the model)",
    )
    m.add_argument("--latent-dim", type=int, default=DEFAULT_LATENT_DIM, help="number of latents Z")
    o = p.add_argument_group("objective")
    o.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default="bernoulli",
        help="bernoulli: BCE on logits; gaussian: squared error",
    )
    o.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="beta",
        help="beta: recon + β·KL; capacity: recon + γ·|KL − C|",
    )
    o.add_argument(
        "--beta",
        type=float,
        default=DEFAULT_BETA,
        help="β of the beta objective (1 for camera frames; 0.5 for small gray objects "
        "such as Fashion-MNIST; 4 and more to disentangle)",
    )
    o.add_argument("--gamma", type=float, default=1000.0, help="γ of the capacity objective")
    o.add_argument("--capacity-max", type=float, default=25.0, help="final capacity C_max, nats")
    o.add_argument(
        "--capacity-steps",
        type=int,
        default=100_000,
        help="steps over which C grows linearly from 0 to C_max",
    )
    t = p.add_argument_group("training")
    t.add_argument("--out", default="runs/model", help="run directory (checkpoint, log, config)")
    t.add_argument(
        "--epochs",
        type=int,
        default=DEFAULT_EPOCHS,
        help="most epochs to train; early stopping (--patience) usually ends sooner",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=DEFAULT_PATIENCE,
        help="stop after this many epochs without a better held-out loss, and keep "
        "the best epoch's weights (0 = train all --epochs, keep the last)",
    )
    t.add_argument(
        "--min-delta",
        type=float,
        default=DEFAULT_MIN_DELTA,
        help="an epoch is better only if its held-out loss is lower by more than "
        "this fraction of the best so far",
    )
    t.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=DEFAULT_SCHEDULE,
        help="cosine: warm-up, then cosine decay to 1%% of --lr at --epochs; plateau: "
        "warm-up, then halve --lr after 2 epochs without a better held-out loss; "
        "constant: --lr throughout",
    )
    t.add_argument(
        "--warmup-epochs",
        type=float,
        default=DEFAULT_WARMUP_EPOCHS,
        help="epochs of linear warm-up of the rate (cosine, plateau; at most half the run)",
    )
    t.add_argument(
        "--steps",
        type=int,
        default=0,
        help="stop after this many optimiser steps in total (0 = no limit)",
    )
    t.add_argument(
        "--epoch-size",
        type=int,
        default=0,
        help="images per epoch, drawn without replacement (0 = whole training "
        "split; dSprites has 663k, so set e.g. 32768)",
    )
    t.add_argument("--batch-size", type=int, default=64, help="images per step")
    t.add_argument(
        "--lr",
        type=float,
        default=DEFAULT_LR,
        help="Adam learning rate (peak); 2e-3 suits small gray objects, camera frames "
        "collapsed with it once",
    )
    t.add_argument("--holdout", type=float, default=0.1, help="fraction of images held out")
    t.add_argument(
        "--eval-size",
        type=int,
        default=1024,
        help="at most this many held-out images are scored each epoch",
    )
    t.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    a = p.add_argument_group("augmentation (training batches only, never the held-out images)")
    a.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_AUGMENT,
        help="shift, brighten and change the contrast of each training image a little, "
        "as a fixed camera sees (helped on Fashion-MNIST, mixed on the synthetic "
        "camera scene; see tools/README.md)",
    )
    a.add_argument(
        "--augment-shift", type=int, default=2, help="largest shift in x and y, whole pixels"
    )
    a.add_argument(
        "--augment-brightness", type=float, default=0.1, help="brightness factor in 1 ± this"
    )
    a.add_argument(
        "--augment-contrast", type=float, default=0.1, help="contrast factor in 1 ± this"
    )
    a.add_argument(
        "--augment-noise", type=float, default=0.0, help="std of added Gaussian pixel noise"
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (same settings; may raise --epochs, --steps, "
        "--patience)",
    )
    t.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_grid_text(text: str) -> str:
    """``--tiles`` in the canonical form the model's metadata keeps (``4x3``),
    or ``""``."""
    if not text:
        return ""
    cols, rows = parse_grid(text)
    return f"{cols}x{rows}"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.dsprites:
        data = DataConfig("dsprites", illumination=args.illumination)
    elif args.images:
        data = DataConfig(
            "folder",
            str(Path(args.images).absolute()),
            fit=args.fit,
            illumination=args.illumination,
            tiles=parse_grid_text(args.tiles),
        )
    else:
        # absolute paths, so that export and report work from any directory
        data = DataConfig(
            "idx",
            str(Path(args.idx).absolute()),
            str(Path(args.idx_labels).absolute()) if args.idx_labels else None,
            parse_classes(args.classes),
            illumination=args.illumination,
        )
    if args.tiles and data.kind != "folder":
        raise UserError("--tiles cuts camera frames: it needs --images")
    if (args.classes or args.idx_labels) and data.kind != "idx":
        raise UserError("--classes and --idx-labels only apply to --idx data")
    return TrainConfig(
        model=ModelConfig(args.channels, args.size, args.latent_dim),
        loss=LossConfig(
            args.likelihood,
            args.objective,
            args.beta,
            args.gamma,
            args.capacity_max,
            args.capacity_steps,
        ),
        data=data,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps=args.steps,
        epoch_size=args.epoch_size,
        holdout=args.holdout,
        eval_size=args.eval_size,
        seed=args.seed,
        patience=args.patience,
        min_delta=args.min_delta,
        lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs,
        augment=AugmentConfig(
            args.augment,
            args.augment_shift,
            args.augment_brightness,
            args.augment_contrast,
            args.augment_noise,
        ),
    ).validate()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available; use cpu")
    return torch.device(name)


def log_columns(z: int) -> list[str]:
    return (
        ["epoch", "step", "loss", "recon", "kl"]
        + [f"kl_{j}" for j in range(z)]
        + ["capacity", "heldout_loss", "heldout_recon", "heldout_kl", "seconds", "lr"]
    )


@torch.no_grad()
def evaluate(
    model: BetaVAE,
    source: ImageSource,
    indices: np.ndarray,
    cfg: TrainConfig,
    step: int,
    device: torch.device,
) -> dict[str, float]:
    """Objective on held-out images, with a fixed noise seed so epochs compare."""
    if len(indices) == 0:
        return {"loss": float("nan"), "recon": float("nan"), "kl": float("nan")}
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    sums = np.zeros(3)
    for start in range(0, len(indices), 256):
        x = source.batch(indices[start : start + 256]).to(device)
        mu, logvar = model.encode(x)
        eps = torch.randn(mu.shape, generator=gen).to(device)
        logits = model.decode(mu + torch.exp(0.5 * logvar) * eps)
        t = vae_loss(logits, x, mu, logvar, cfg.loss, step)
        sums += np.array([t.loss.item(), t.recon.item(), t.kl.item()]) * len(x)
    model.train()
    loss, recon, kl = sums / len(indices)
    return {"loss": loss, "recon": recon, "kl": kl}


@torch.no_grad()
def mean_latent_kl(
    model: BetaVAE,
    source: ImageSource,
    indices: np.ndarray,
    device: torch.device | str = "cpu",
    batch: int = 256,
) -> np.ndarray:
    """Mean KL (nats) of each latent over the images at ``indices``."""
    was_training = model.training
    model.eval()
    total = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    for start in range(0, len(indices), batch):
        x = source.batch(indices[start : start + batch]).to(device)
        mu, logvar = model.encode(x)
        total += kl_per_latent(mu, logvar).double().sum(0).cpu()
    model.train(was_training)
    return (total / max(1, len(indices))).numpy()


def eval_subset(hold: np.ndarray, eval_size: int, seed: int) -> np.ndarray:
    if len(hold) <= eval_size:
        return hold
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(hold, size=eval_size, replace=False))


def _clone_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _stop_reason(cfg: TrainConfig, stopper: EarlyStopping) -> str:
    return (
        f"held-out loss did not improve by more than {cfg.min_delta:g} of the best "
        f"for {stopper.bad_epochs} epochs (--patience {cfg.patience})"
    )


def train(
    cfg: TrainConfig, out: Path, resume: bool = False, device: str = "auto", progress: bool = True
) -> dict:
    """Train, checkpointing after every epoch; stop early when the held-out
    loss stops improving (``cfg.patience``). The checkpoint's ``model`` is the
    best epoch's weights (what export and report use), ``last_model`` the
    latest (what ``--resume`` continues from). Returns a summary with
    ``outcome``: when and why training stopped, and the best epoch."""
    dev = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    log_path = out / LOG_NAME
    source = open_source(cfg.data, cfg.model.size, cfg.model.channels, cache=out)
    train_idx, hold_idx = split_indices(len(source), cfg.holdout, cfg.seed)
    hold_eval = eval_subset(hold_idx, cfg.eval_size, cfg.seed)
    epoch_size = min(cfg.epoch_size or len(train_idx), len(train_idx))
    steps_per_epoch = -(-epoch_size // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.steps:
        total_steps = min(total_steps, cfg.steps)
    # a warm-up never takes more than half of a short run
    warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps // 2)
    # without held-out images there is nothing to stop on: keep the last epoch
    stopper = EarlyStopping(cfg.patience if len(hold_eval) else 0, cfg.min_delta)

    torch.manual_seed(cfg.seed)
    model = BetaVAE(cfg.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, step, elapsed = 0, 0, 0.0
    best_state: dict | None = None
    best: dict = {}
    if resume:
        _, old_cfg, state = load_checkpoint(ckpt_path, "cpu")
        old, new = old_cfg.to_dict(), cfg.to_dict()
        diff = [k for k in _RESUME_MUST_MATCH if old[k] != new[k]]
        if diff:
            raise UserError(
                f"--resume: the checkpoint in {out} was trained with different "
                f"{', '.join(diff)}: {[old[k] for k in diff]} vs now {[new[k] for k in diff]}; "
                "use the same settings (only --epochs, --steps, --lr, --eval-size, "
                "--patience, --min-delta may change)"
            )
        model.load_state_dict(state.get("last_model", state["model"]))
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, elapsed = state["epoch"], state["step"], state.get("seconds", 0.0)
        torch.set_rng_state(state["torch_rng"])
        stopper.load_state_dict(state.get("early_stopping", {}))
        best_state = {k: v.to(dev) for k, v in state["model"].items()}
        best = state.get("best") or {"epoch": start_epoch, "step": step, "heldout_loss": None}
    elif ckpt_path.exists():
        raise UserError(
            f"{out} already holds a training run; pass --resume to continue it, "
            "or choose another --out"
        )
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    z = cfg.model.latent_dim
    if not resume or not log_path.exists():
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(log_columns(z))

    summary: dict = {"epoch": start_epoch, "step": step}
    if resume and stopper.should_stop():
        summary["outcome"] = {
            "stopped_epoch": start_epoch,
            "reason": "early_stop",
            "message": _stop_reason(cfg, stopper),
            **{f"best_{k}": v for k, v in best.items()},
        }
        record = {**cfg.to_dict(), "outcome": summary["outcome"]}
        (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
        return summary
    reason = "max_epochs"
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.steps and step >= cfg.steps:
            reason = "max_steps"
            break
        t0 = time.time()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = train_idx[rng.permutation(len(train_idx))[:epoch_size]]
        n_batches = -(-len(order) // cfg.batch_size)
        if cfg.steps:
            n_batches = min(n_batches, cfg.steps - step)
        sums = np.zeros(3)
        kl_sums = np.zeros(z)
        seen = 0
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not progress,
            leave=False,
        )
        lr = cfg.lr
        for b in bar:
            lr = cfg.lr * lr_factor(
                cfg.lr_schedule, step, total_steps, warmup_steps, stopper.plateau
            )
            for g in opt.param_groups:
                g["lr"] = lr
            x = source.batch(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            x = augment_batch(x, cfg.augment, batch_generator(cfg.seed, epoch, b))
            x = renormalise(source, x).to(dev)
            logits, mu, logvar = model(x)
            terms = vae_loss(logits, x, mu, logvar, cfg.loss, step)
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            opt.step()
            step += 1
            n = len(x)
            seen += n
            sums += np.array([terms.loss.item(), terms.recon.item(), terms.kl.item()]) * n
            kl_sums += terms.kl_per_latent.detach().cpu().numpy() * n
            if not np.isfinite(sums[0]):
                raise UserError(
                    f"training diverged at step {step} (loss is not finite); lower --lr or --gamma"
                )
            if b % 20 == 0:
                bar.set_postfix(loss=f"{terms.loss.item():.1f}", kl=f"{terms.kl.item():.2f}")
        bar.close()
        held = evaluate(model, source, hold_eval, cfg, step, dev)
        elapsed += time.time() - t0
        loss, recon, kl = sums / max(1, seen)
        klz = kl_sums / max(1, seen)
        capacity = terms.capacity
        if cfg.loss.objective == "capacity" and capacity < cfg.loss.capacity_max:
            # the objective moves while C grows: compare epochs only once C is at C_max
            stopper.restart()
        improved = stopper.update(epoch + 1, held["loss"]) if len(hold_eval) else False
        # without early stopping (or held-out images) the last epoch is kept
        is_best = improved or not stopper.patience
        if is_best:
            best_state = _clone_state(model)
            best = {"epoch": epoch + 1, "step": step, "heldout_loss": held["loss"]}
        row = (
            [epoch + 1, step, loss, recon, kl]
            + list(klz)
            + [capacity, held["loss"], held["recon"], held["kl"], round(elapsed, 2), lr]
        )
        with log_path.open("a", newline="") as f:
            csv.writer(f).writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        save_checkpoint(
            ckpt_path,
            {
                "format": 1,
                "config": cfg.to_dict(),
                "model": best_state,
                "last_model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "seconds": elapsed,
                "torch_rng": torch.get_rng_state(),
                "torch_version": torch.__version__,
                "early_stopping": stopper.state_dict(),
                "best": best,
            },
        )
        summary = {
            "epoch": epoch + 1,
            "step": step,
            "loss": loss,
            "recon": recon,
            "kl": kl,
            "kl_per_latent": klz.tolist(),
            "heldout_loss": held["loss"],
            "seconds": elapsed,
        }
        if progress:
            mark = " *" if best["epoch"] == epoch + 1 else ""
            tqdm.write(
                f"epoch {epoch + 1}: step {step} loss {loss:.2f} recon {recon:.2f} "
                f"kl {kl:.2f} held-out {held['loss']:.2f}{mark} lr {lr:.2g} ({elapsed:.0f} s)"
            )
        if stopper.should_stop():
            reason = "early_stop"
            break
    else:
        if cfg.steps and step >= cfg.steps:
            reason = "max_steps"
    if "loss" not in summary:
        return summary
    messages = {
        "early_stop": _stop_reason(cfg, stopper),
        "max_epochs": f"reached --epochs {cfg.epochs}",
        "max_steps": f"reached --steps {cfg.steps}",
    }
    summary["outcome"] = {
        "stopped_epoch": summary["epoch"],
        "reason": reason,
        "message": messages[reason],
        **{f"best_{k}": v for k, v in best.items()},
    }
    record = {**cfg.to_dict(), "outcome": summary["outcome"]}
    (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    return summary


def describe_outcome(outcome: dict) -> str:
    """One line: when and why training stopped, and which epoch is kept."""
    loss = outcome.get("best_heldout_loss")
    best = f"best epoch {outcome['best_epoch']}"
    if loss is not None and math.isfinite(loss):
        best += f", held-out loss {loss:.3f}"
    return f"stopped at epoch {outcome['stopped_epoch']}: {outcome['message']}; {best} (kept)"


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    summary = train(
        cfg, Path(args.out), resume=args.resume, device=args.device, progress=not args.no_progress
    )
    if "loss" not in summary:
        if "outcome" in summary:
            print(
                f"nothing to do: {describe_outcome(summary['outcome'])}; raise --patience "
                "(or pass --patience 0) to train on"
            )
            return 0
        print(
            f"nothing to do: {args.out} already reached epoch {summary['epoch']} "
            f"/ step {summary['step']}; raise --epochs or --steps to train more"
        )
        return 0
    kl = ", ".join(f"{v:.2f}" for v in summary["kl_per_latent"])
    print(
        f"trained {summary['step']} steps in {summary['seconds']:.0f} s: "
        f"loss {summary['loss']:.3f}, held-out {summary['heldout_loss']:.3f}, "
        f"KL per latent [{kl}]"
    )
    print(describe_outcome(summary["outcome"]))
    print(f"checkpoint: {Path(args.out) / CHECKPOINT_NAME}")
    return 0
