"""Callbacks that write a run's files, so that ``TransferModule`` computes and logs but never writes files.

``train.py`` registers both by default (``trainer_defaults``), for every subcommand:

- ``PredictionWriter``: ``predict`` -> ``predictions.jsonl`` in the run directory, one line per test sample
  (task, key, lang, prediction, label, prediction_name, label_name), for error analysis; prints where.
- ``RunReport``: after ``test`` -> ``results.json/csv/md`` + charts (``reports.write_run_report``, with the
  test's protocol record: ``protocol.test_protocol``), ``test_counts.json`` (samples scored per task/language:
  the exactness check) and ``outcomes.jsonl`` (per-sample outcomes, so two runs on one test set can be paired:
  ``metrics/outcomes.py``).

and, for ``fit``, one that guards what a fit hands on:

- ``FinalCheckpoint``: saves the weights of the fit's last optimizer step as the checkpoint callback's ``last.ckpt``
  (Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint is saved, i.e. when the monitored score improved,
  so it can lag the end of training); ``train.py`` names it ``final_ckpt`` in ``finished.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from lightning_modules.metrics.outcomes import write_outcomes


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step``'s rows per rank, then rank 0 concatenates the rank files into one."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.rows: list[dict[str, Any]] = []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:  # fmt: skip
        self.rows += prediction

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        part = root / f"predictions.rank{trainer.global_rank}.jsonl"
        part.write_text("".join(json.dumps(r, default=str) + "\n" for r in self.rows))
        self.rows = []
        trainer.strategy.barrier()
        if trainer.is_global_zero:  # each sample was predicted by exactly one rank: concatenate
            parts = sorted(root.glob("predictions.rank*.jsonl"))
            (root / "predictions.jsonl").write_text("".join(p.read_text() for p in parts))
            for p in parts:
                p.unlink()
            print(f"predictions: {root / 'predictions.jsonl'} ({trainer.world_size} rank(s))", flush=True)


class RunReport(Callback):
    """Writes the results report and the per-set sample counts of the test that just ended (rank 0)."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = getattr(pl_module, "test_rows", None)
        if not trainer.is_global_zero or not rows:
            return
        from lightning_modules.protocol import test_protocol
        from lightning_modules.reports import write_run_report  # matplotlib: only when a report is written

        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        scores = [r for r in rows if r["metric"] != "count"]
        labels = {task: len(info["labels"]) for task, info in pl_module.task_info.items()}
        write_run_report(trainer.default_root_dir, scores, selection=pl_module.selection_key,
                         protocol=test_protocol(trainer, pl_module), label_counts=labels,
                         wandb_logger=wandb)  # fmt: skip
        counts = {f"{r['task']}/{r['lang']}": int(r["value"]) for r in rows if r["metric"] == "count"}
        Path(trainer.default_root_dir, "test_counts.json").write_text(json.dumps(counts, indent=1))
        complete = [entry for entry in getattr(pl_module, "test_outcomes", []) if entry[2] is not None]
        write_outcomes(trainer.default_root_dir, complete, {"seed": rows[0]["seed"]})


class FinalCheckpoint(Callback):
    """At the end of fit, saves the weights of the last optimizer step as ``last.ckpt``: the file of the checkpoint
    callback's ``last_model_path`` (``<dirpath>/last.ckpt`` when it has saved none; ``<root>/checkpoints/last.ckpt``
    without a checkpoint callback). The file's protocol record says ``final: true``; ``path`` and ``step`` are what
    ``train.py`` writes into ``finished.json``. Nothing is saved when no step was taken."""

    def __init__(self) -> None:
        self.path = ""
        self.step = 0
        self._saving = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            return
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
            path = callback.last_model_path or os.path.join(callback.dirpath, name)
            callback.last_model_path = path  # set before saving: the state stored in the file names it
        else:
            path = os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
        self._saving = True
        try:
            trainer.save_checkpoint(path)  # every rank (a collective); rank 0 writes
        finally:
            self._saving = False
        self.path, self.step = str(path), trainer.global_step

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint.setdefault("protocol", {})["final"] = self._saving
