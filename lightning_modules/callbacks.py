"""Callbacks that write a run's files, so that ``TransferModule`` computes and logs but never writes files.

``train.py`` registers both by default (``trainer_defaults``), for every subcommand:

- ``PredictionWriter``: ``predict`` -> ``predictions.jsonl`` in the run directory, one line per test sample
  (task, key, lang, prediction, label, prediction_name, label_name), for error analysis; prints where.
- ``RunReport``: after ``test`` -> ``results.json/csv/md`` + charts (``reports.write_run_report``, with the
  test's protocol record: ``protocol.test_protocol``), ``test_counts.json`` (samples scored per task/language:
  the exactness check) and ``outcomes.jsonl`` (per-sample outcomes, so two runs on one test set can be paired:
  ``metrics/outcomes.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
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
