"""Learning-rate schedules and early stopping on the held-out loss.

Schedules (``--lr-schedule``), as a factor of ``--lr``:

- ``constant``: 1 at every step (no warm-up).
- ``cosine``: a linear warm-up over the first ``warmup_steps`` steps, then a
  half cosine from 1 down to :data:`COSINE_FLOOR` at ``total_steps`` (the
  ``--epochs`` maximum). A pure function of the step, so a resumed run gets
  the same rates as an uninterrupted one.
- ``plateau``: the same warm-up, then 1, halved (:data:`PLATEAU_FACTOR`)
  whenever the held-out loss has not improved for :data:`PLATEAU_PATIENCE`
  epochs, never below :data:`PLATEAU_FLOOR`. Its state is in the checkpoint.

:class:`EarlyStopping` keeps the best held-out loss, its epoch, and how many
epochs passed without an improvement larger than ``min_delta`` (relative).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SCHEDULES = ("cosine", "plateau", "constant")
#: Final factor of the cosine schedule (the rate never reaches exactly 0).
COSINE_FLOOR = 0.01
#: Epochs without improvement before ``plateau`` lowers the rate.
PLATEAU_PATIENCE = 2
#: What ``plateau`` multiplies the rate by each time.
PLATEAU_FACTOR = 0.5
#: Lowest factor ``plateau`` goes down to.
PLATEAU_FLOOR = 1.0 / 64.0


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Factor of the base rate at optimiser step ``step`` (0-based) for the
    ``cosine`` schedule."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_factor(
    schedule: str, step: int, total_steps: int, warmup_steps: int, plateau: float = 1.0
) -> float:
    """Factor of ``--lr`` at ``step``; ``plateau`` is :attr:`EarlyStopping.plateau`."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return warmup_cosine(step, total_steps, warmup_steps)
    if schedule == "plateau":
        return (step + 1) / warmup_steps if step < warmup_steps else plateau
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


@dataclass
class EarlyStopping:
    """Tracks the held-out loss over epochs (and the ``plateau`` factor).

    ``update`` is called once per epoch; it returns True when the epoch is
    the new best. ``should_stop`` says whether ``patience`` epochs passed
    without an improvement (``patience`` 0 never stops)."""

    patience: int
    min_delta: float
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    plateau: float = 1.0
    plateau_bad: int = 0

    def improves(self, loss: float) -> bool:
        if not math.isfinite(self.best_loss):
            return math.isfinite(loss)
        return loss < self.best_loss - self.min_delta * abs(self.best_loss)

    def update(self, epoch: int, loss: float) -> bool:
        if self.improves(loss):
            self.best_loss, self.best_epoch = float(loss), epoch
            self.bad_epochs = self.plateau_bad = 0
            return True
        self.bad_epochs += 1
        self.plateau_bad += 1
        if self.plateau_bad >= PLATEAU_PATIENCE:
            self.plateau = max(PLATEAU_FLOOR, self.plateau * PLATEAU_FACTOR)
            self.plateau_bad = 0
        return False

    def restart(self) -> None:
        """Forget the best so far (the objective changed, e.g. the capacity C grew)."""
        self.best_loss, self.bad_epochs, self.plateau_bad = math.inf, 0, 0

    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        d = asdict(self)
        del d["patience"], d["min_delta"]  # from the command line, may change on resume
        return d

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)
