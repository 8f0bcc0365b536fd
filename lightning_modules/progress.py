"""One progress line per training epoch when the progress bar is off (logs, the study runner, the demo)."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl

EPOCH_PREFIX = "epoch "


class EpochLine(pl.Callback):
    """Prints ``epoch k | step s/max | loss x | val/selection y | t s`` after each training epoch, on rank 0,
    only when the trainer has no progress bar (with a bar the line would repeat what it shows)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        print(epoch_line(trainer.current_epoch, trainer.global_step, trainer.max_steps, trainer.callback_metrics,
                         time.monotonic() - self._t0), flush=True)  # fmt: skip


def epoch_line(epoch: int, step: int, max_steps: int, metrics: dict[str, Any], seconds: float) -> str:
    """The line ``EpochLine`` prints (pure, for tests)."""
    parts = [f"{EPOCH_PREFIX}{epoch}", f"step {step}/{max_steps if max_steps and max_steps > 0 else '?'}"]
    for key, label in (("train/loss", "loss"), ("val/selection", "val/selection")):
        value = metrics.get(key)
        if value is not None and not math.isnan(float(value)):
            parts.append(f"{label} {float(value):.4f}")
    return " | ".join([*parts, f"{seconds:.0f} s"])
