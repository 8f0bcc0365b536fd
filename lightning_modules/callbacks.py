"""Callbacks that write a run's files, so that ``TransferModule`` computes and logs but never writes files.

``train.py`` registers both by default (``trainer_defaults``), for every subcommand:

- ``PredictionWriter``: ``predict`` -> ``predictions.jsonl`` in the run directory, one line per test sample
  (task, key, lang, prediction, label, prediction_name, label_name), for error analysis; prints where.
- ``RunReport``: after ``test`` -> ``results.json/csv/md`` + charts (``reports.write_run_report``, with the
  test's protocol record: ``protocol.test_protocol``), ``test_counts.json`` (samples scored per task/language:
  the exactness check) and ``outcomes.jsonl`` (per-sample outcomes, so two runs on one test set can be paired:
  ``metrics/outcomes.py``).

and, for ``fit``, two that guard what a fit hands on:

- ``DivergenceGuard``: a non-finite training loss (checked every step, on every rank) or non-finite weights at the
  end of fit stop the run with ``TrainingDiverged`` (step, task, learning rate) and write ``diverged.json``; nothing
  is tested and ``finished.json`` is not written, so the study runner sees a failed run.
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
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

from contracts.files import atomic_write_text
from contracts.outcomes import write_outcomes


class PredictionWriter(BasePredictionWriter):
    """Collects ``predict_step``'s rows per rank, then rank 0 concatenates the rank files into one."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.rows: list[dict[str, Any]] = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
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
        # per-sample outcomes and counts first, each written whole: results.json (written last by the report)
        # then means every other result file of this test is complete
        complete = [entry for entry in getattr(pl_module, "test_outcomes", []) if entry[2] is not None]
        write_outcomes(trainer.default_root_dir, complete, {"seed": rows[0]["seed"]})
        counts = {f"{r['task']}/{r['lang']}": int(r["value"]) for r in rows if r["metric"] == "count"}
        atomic_write_text(Path(trainer.default_root_dir, "test_counts.json"), json.dumps(counts, indent=1))
        write_run_report(
            trainer.default_root_dir,
            scores,
            selection=pl_module.selection_key,
            protocol=test_protocol(trainer, pl_module),
            label_counts=labels,
            wandb_logger=wandb,
        )


class TrainingDiverged(RuntimeError):
    """The training loss or the weights stopped being finite: the run failed, it has no result."""


DIVERGED_FILE = "diverged.json"


class DivergenceGuard(Callback):
    """Stops a fit whose training loss (every step) or weights (at the end of fit) are not finite.

    The loss check costs one scalar read per step and, under DDP, one boolean all-reduce, so every rank stops at the
    same step. Rank 0 writes ``diverged.json`` (step, task, learning rates, message) into the run directory, then
    every rank raises ``TrainingDiverged``: the command exits non-zero before any test, and without ``finished.json``.
    Must come before ``FinalCheckpoint`` in the callback list, so non-finite weights are never saved as final.
    """

    def __init__(self) -> None:
        self.lrs: list[float] = []  # the learning rates of the step running now (the scheduler steps before batch end)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stale = Path(trainer.default_root_dir, DIVERGED_FILE)  # from an earlier attempt in this directory
        if trainer.is_global_zero and stale.exists():
            stale.unlink()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        local = torch.is_tensor(loss) and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(local, all=False):  # any rank: all stop together
            what = f"the training loss is {float(loss)}" if local else "the training loss is not finite on a rank"
            self.stop(
                trainer,
                pl_module,
                batch.get("task") if isinstance(batch, dict) else None,
                what,
                None if not local else float(loss),
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bad = [name for name, p in pl_module.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
        if bad:  # DDP ranks hold the same weights: every rank finds the same tensors
            self.stop(
                trainer,
                pl_module,
                None,
                f"{len(bad)} weight tensors are not finite after the last step "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})",
            )

    def stop(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, task: str | None, what: str, loss: float | None = None
    ) -> None:
        """Write ``diverged.json`` (rank 0) and raise ``TrainingDiverged`` naming step, task and learning rate."""
        config, lrs = pl_module.optimizer_config, self.lrs
        now = ", ".join(f"{lr:.3g}" for lr in lrs) or "unknown"
        peak = f"model.optimizer.lr={config.lr:g}" + (f", head_lr={config.head_lr:g}" if config.head_lr else "")
        where = f"task {task}" if task else f"tasks {', '.join(pl_module.train_tasks)}"
        message = (
            f"Training diverged at step {trainer.global_step} ({where}): {what}. Learning rate: {peak} "
            f"({now} at this step). Lower model.optimizer.lr or lengthen the warm-up (model.schedule); nothing was "
            f"tested or handed on ({Path(trainer.default_root_dir, DIVERGED_FILE)})."
        )
        if trainer.is_global_zero:
            root = Path(trainer.default_root_dir)
            root.mkdir(parents=True, exist_ok=True)
            record = {
                "step": trainer.global_step,
                "task": task,
                "lr": config.lr,
                "head_lr": config.head_lr,
                "lr_at_step": lrs,
                "loss": None if loss is None else str(loss),
                "message": message,
            }
            (root / DIVERGED_FILE).write_text(json.dumps(record, indent=1) + "\n")
        raise TrainingDiverged(message)


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
