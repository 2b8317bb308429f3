"""Training configuration and checkpoints (what train writes and export/report read)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .augment import AugmentConfig
from .data import DataConfig
from .errors import UserError
from .losses import LossConfig
from .model import BetaVAE, ModelConfig
from .schedule import SCHEDULES

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (resolved and validated).

    The defaults of the recipe fields (``patience``, ``lr_schedule``,
    ``augment``) are "off", which is what runs made before they existed did;
    the defaults users get are those of ``train``'s command line."""

    model: ModelConfig
    loss: LossConfig
    data: DataConfig
    lr: float = 5e-4
    batch_size: int = 64
    epochs: int = 20
    steps: int = 0
    epoch_size: int = 0
    holdout: float = 0.1
    eval_size: int = 1024
    seed: int = 0
    patience: int = 0
    min_delta: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    extra: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        self.model.validate()
        self.loss.validate()
        if not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps < 0:
            raise UserError(f"steps must be >= 0 (0 = no limit), got {self.steps}")
        if self.epoch_size < 0:
            raise UserError(
                f"epoch size must be >= 0 (0 = whole training set), got {self.epoch_size}"
            )
        if not 0 <= self.holdout < 1:
            raise UserError(f"held-out fraction must be in [0, 1), got {self.holdout}")
        if self.eval_size < 1:
            raise UserError(f"eval size must be >= 1, got {self.eval_size}")
        if self.patience < 0:
            raise UserError(
                f"patience must be >= 0 epochs (0 = no early stopping), got {self.patience}"
            )
        if not 0 <= self.min_delta < 1:
            raise UserError(
                f"min delta must be in [0, 1) (a fraction of the best held-out loss), "
                f"got {self.min_delta}"
            )
        if self.lr_schedule not in SCHEDULES:
            raise UserError(
                f"learning-rate schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}"
            )
        if not self.warmup_epochs >= 0:
            raise UserError(f"warm-up must be >= 0 epochs, got {self.warmup_epochs}")
        self.augment.validate()
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data"] = self.data.to_dict()
        d["augment"] = self.augment.to_dict()
        return d

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        d = dict(d)
        return TrainConfig(
            model=ModelConfig(**d.pop("model")),
            loss=LossConfig(**d.pop("loss")),
            data=DataConfig.from_dict(d.pop("data")),
            augment=AugmentConfig.from_dict(d.pop("augment", None)),
            **d,
        )


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory containing one."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise UserError(
            f"checkpoint {p} does not exist; pass the run directory of "
            "`train` (--out) or its checkpoint.pt"
        )
    return p


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[BetaVAE, TrainConfig, dict]:
    """Load a checkpoint written by ``train``: (model in eval mode, config, raw state)."""
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location=device, weights_only=False)
        cfg = TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, RuntimeError, OSError) as e:
        raise UserError(f"{p} is not a bvae training checkpoint: {e}") from None
    model = BetaVAE(cfg.model).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, cfg, state
