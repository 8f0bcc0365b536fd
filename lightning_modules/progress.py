"""One line per epoch on the terminal when the progress bar is off (the demo, batch jobs, log files)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

SHOWN = ("train/loss", "val/selection")


class EpochLine(pl.Callback):
    """Prints ``epoch E: step S/N, train/loss …, val/selection …, T s`` after each training epoch (its validation
    included) on rank 0; silent while a progress bar is shown."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.progress_bar_callback is not None:
            return
        rank_zero_info(
            epoch_line(
                trainer.current_epoch,
                trainer.global_step,
                trainer.max_steps,
                trainer.callback_metrics,
                time.monotonic() - self._start,
            )
        )


def epoch_line(epoch: int, step: int, max_steps: int, metrics: dict[str, Any], elapsed_s: float) -> str:
    values = [f"{key} {float(metrics[key]):.4g}" for key in SHOWN if key in metrics]
    total = f"/{max_steps}" if max_steps and max_steps > 0 else ""
    return ", ".join([f"epoch {epoch}: step {step}{total}", *values, f"{elapsed_s:.0f} s"])
