"""Config adjustments ``train.py`` makes before instantiating anything, one function per rule (issue 14).

- ``evaluate_checkpoint_alone``: ``validate``/``test``/``predict --ckpt_path X`` evaluate X's weights, so the parent
  named by ``model.init_from`` (which LightningCLI copies from X's saved hyperparameters, over the command line)
  is not loaded: a checkpoint is enough to evaluate itself, also after its parent moved.
- ``drop_lr_monitor_without_logger``: ``--trainer.logger false`` removes ``LearningRateMonitor`` (it needs a logger).
- ``eval_wandb_run``: ``validate``/``test``/``predict`` by hand get their own W&B run (job type ``eval``, the fit's
  group, ``fit_run_id`` in its config) instead of continuing the fit's run and overwriting its config.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

EVAL_SUBCOMMANDS = ("validate", "test", "predict")


def as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def evaluate_checkpoint_alone(cfg: Any, subcommand: str | None) -> None:
    if subcommand in EVAL_SUBCOMMANDS and cfg.get("ckpt_path") and cfg.model.get("init_from"):
        cfg.model.init_from = None


def drop_lr_monitor_without_logger(cfg: Any) -> None:
    if as_list(cfg.trainer.logger):
        return
    callbacks = [c for c in as_list(cfg.trainer.callbacks) if not _class_name(c).endswith("LearningRateMonitor")]
    cfg.trainer.callbacks = callbacks


def _class_name(spec: Any) -> str:
    return spec.class_path if hasattr(spec, "class_path") else type(spec).__name__


def fit_wandb_id(root: str | Path) -> str:
    """One W&B run id per run directory for ``fit``, so a resumed fit continues the same W&B run."""
    path = Path(root, "wandb_id.txt")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


def eval_wandb_run(logger: Any, subcommand: str | None, root: str | Path) -> None:
    """Fill a WandbLogger spec: ``fit`` continues the run directory's W&B run and records its group; an evaluation
    command gets a new run in the same group, job type ``eval``, linked to the fit by ``fit_run_id``."""
    args, root = logger.init_args, Path(root)
    extra = dict(logger.get("dict_kwargs") or {})
    group_file = root / "wandb_group.txt"
    if subcommand not in EVAL_SUBCOMMANDS:
        args.id = args.id or fit_wandb_id(root)
        args.resume = "allow"
        group = os.environ.get("WANDB_RUN_GROUP") or extra.get("group")
        if group:
            group_file.write_text(group)
        return
    fit_id = (root / "wandb_id.txt").read_text().strip() if (root / "wandb_id.txt").exists() else None
    args.id = args.id if args.id and args.id != fit_id else uuid.uuid4().hex[:12]
    args.name = f"{args.name}-{subcommand}" if args.name else subcommand
    extra.setdefault("job_type", os.environ.get("WANDB_JOB_TYPE") or "eval")  # a study's phase (translate_test)
    recorded = group_file.read_text().strip() if group_file.exists() else None
    extra["group"] = os.environ.get("WANDB_RUN_GROUP") or extra.get("group") or recorded or root.name
    extra["config"] = {**dict(extra.get("config") or {}), "fit_run_id": fit_id, "eval_subcommand": subcommand}
    logger.dict_kwargs = extra
