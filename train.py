"""mmstilts entry point: ``python train.py fit|validate|test|predict --config configs/base.yaml --config ...``.

Values that flow between data and model are linked once here:

- model.core.text_model -> data.tokenizer; model.core.vision_model + vision_kwargs -> data.image_config (timm data
  config)
- data.task_info -> model.tasks (label names and training flags, read from the shards' manifests)
- data.evaluation -> model.evaluation (evaluation sets in loader order, and the seed)
- trainer.max_steps -> model.max_steps (the LR schedule; not estimated_stepping_batches, Lightning #20550)
- seed_everything -> data.seed

Each run lives in ``trainer.default_root_dir`` (default ``runs/<name>``): checkpoints/, logs, the resolved
config, ``finished.json`` once the command completed, and the results report after a test. A finished fit's
checkpoints keep the weights alone (``checkpoints.keep_weights_only``): a finished run is never resumed.

Errors users cause (a setting out of range, an unreadable checkpoint, a read-only or full disk, no W&B login)
end as ``train.py: <what, where, the fix>`` on stderr with exit code 2 (config) or 1 (runtime), no traceback
(``main``); ``MMSTILTS_DEBUG=1`` or ``--debug`` shows it. The optimizer is ``model.optimizer`` (AdamW) and
``model.schedule``: LightningCLI's ``--optimizer`` / ``--lr_scheduler``, which would replace both, are refused.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

# isort: off
import lightning_modules.lazy  # noqa: F401  first: torchmetrics without its unused torchvision/transformers parts

# isort: on
from jsonargparse import set_parsing_settings
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from datamodules.datamodule import TransferDataModule
from datamodules.pipeline import DataError
from datamodules.preflight import PreflightReport, preflight
from lightning_modules import config_adjustments
from lightning_modules.callbacks import DivergenceGuard, FinalCheckpoint, PredictionWriter, RunReport
from lightning_modules.checkpoints import is_weights_only, keep_weights_only
from lightning_modules.core import vision_data_config
from lightning_modules.ddp import DEFAULT_TIMEOUT_S, register_ddp_strategies
from lightning_modules.module import CoreConfig, TransferModule
from lightning_modules.preflight import model_checks
from lightning_modules.protocol import ProtocolRecord, append_finished, read_record
from lightning_modules.reports import compact_table, rows_from_metrics
from lightning_modules.weights import (
    CheckpointFileError,
    WeightSourceError,
    check_checkpoint_file,
    exit_if_weights_unreachable,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# per-task fields (datamodules.datamodule.TaskData) and the grouped model settings (module.CoreConfig, Optimizer,
# ...) are documented by attribute docstrings: --data.tasks.help, --model.core.text_model's help
set_parsing_settings(docstring_parse_attribute_docstrings=True)

# model.* keys from before the grouping -> where they live now (named in the parser's "unrecognized" errors)
MOVED_MODEL_KEYS = {
    **{f.name: f"core.{f.name}" for f in fields(CoreConfig)},
    **{k: f"optimizer.{k}" for k in ("lr", "head_lr", "weight_decay")},
    "warmup_steps": "schedule.warmup_steps (or schedule.warmup_fraction for a fraction of max_steps)",
    **{f"freeze_{k}": f"freezing.{k}" for k in ("vision", "text_embeddings", "text_layers")},
}


def moved_keys_hint(message: str) -> str:
    """`` (model.X is now model.Y; ...)`` for every pre-grouping ``model.X`` that ``message`` names, else ``""``."""
    named = dict.fromkeys(re.findall(r"(?<![\w.])model\.(\w+)", message))
    moves = [f"model.{key} is now model.{MOVED_MODEL_KEYS[key]}" for key in named if key in MOVED_MODEL_KEYS]
    return f" ({'; '.join(moves)})" if moves else ""


def optimizer_hint(message: str) -> str:
    """LightningCLI's ``--optimizer`` / ``--lr_scheduler`` would silently replace AdamW and the schedule: refused
    (``auto_configure_optimizers=False``); the error says where the optimizer is set."""
    if not re.search(r"(?<![\w.])(optimizer|lr_scheduler)\b", message):
        return ""
    return (
        " (the optimizer is AdamW, set by model.optimizer.{lr, head_lr, weight_decay}, and the learning-rate "
        "schedule by model.schedule.*; --optimizer and --lr_scheduler are not supported)"
    )


class MMStiltsArgumentParser(LightningArgumentParser):
    """LightningCLI's parser; an error naming a model key from before the grouping also says where it moved."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error(message + moved_keys_hint(message) + optimizer_hint(message), ex)


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config-<subcommand>-<n>.yaml`` in the run directory: a resumed run,
    or the test after a fit, never collides with an earlier config (nor with W&B's own config.yaml)."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        root = Path(trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        stage = getattr(stage, "value", stage)
        n = len(list(root.glob(f"config-{stage}-*.yaml")))
        self.parser.save(self.config, root / f"config-{stage}-{n}.yaml", overwrite=True, multifile=False)
        self.already_saved = True


class MMStiltsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str, default="run", help="Run name: the run directory is runs/<name>.")
        parser.add_argument("--phase", type=str, default="train", help="Phase name stored with the lineage.")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the checkpoint best on English dev on every test set.",
        )
        parser.add_argument(
            "--collective_timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            help="Seconds a DDP collective may wait for other ranks before the run fails.",
        )
        parser.link_arguments("model.core.text_model", "data.tokenizer")
        parser.link_arguments(
            ("model.core.vision_model", "model.core.vision_kwargs"), "data.image_config", compute_fn=image_config
        )
        parser.link_arguments("trainer.max_steps", "model.max_steps")
        parser.link_arguments("seed_everything", "data.seed")
        parser.link_arguments("phase", "model.phase")
        parser.link_arguments("data.task_info", "model.tasks", apply_on="instantiate")
        parser.link_arguments("data.evaluation", "model.evaluation", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Put every run artefact under the run directory and continue the W&B run on resume."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = cfg.trainer.default_root_dir or os.path.join("runs", cfg.name)
        cfg.trainer.default_root_dir = root
        register_ddp_strategies(cfg.collective_timeout)  # `ddp` (also `auto` on several devices) cannot hang
        config_adjustments.drop_lr_monitor_without_logger(cfg)
        config_adjustments.evaluate_checkpoint_alone(cfg, self.subcommand)
        for logger in _as_list(cfg.trainer.logger):
            args = logger.init_args
            if "save_dir" in args and args.save_dir in (None, ".", "runs"):
                args.save_dir = root
            if logger.class_path.endswith("WandbLogger"):
                args.name = args.name or os.environ.get("WANDB_NAME") or cfg.name
                config_adjustments.eval_wandb_run(logger, self.subcommand, root)
        for callback in _as_list(cfg.trainer.callbacks):
            if callback.class_path.endswith("ModelCheckpoint") and callback.init_args.dirpath is None:
                callback.init_args.dirpath = os.path.join(root, "checkpoints")

    def instantiate_classes(self) -> None:
        """Checks that every pretrained weight source can be reached before the tokenizer or any weights load:
        an unreachable one exits with advice instead of a download trace (``lightning_modules/weights.py``)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        exit_if_weights_unreachable(cfg.model.core)
        if cfg.model.get("init_from"):  # after evaluate_checkpoint_alone, which drops it where it is not loaded
            check_checkpoint_file(cfg.model.init_from, "model.init_from")
        super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The DDP names get the model's DDP options (which parameters a step can leave unused) before the trainer
        builds its strategy; an explicit ``--trainer.strategy`` object keeps its own."""
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        options = self.model.ddp_options(cfg.trainer.get("accumulate_grad_batches") or 1)
        register_ddp_strategies(cfg.collective_timeout, **options)
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses, then checks ``--ckpt_path`` before LightningCLI reads its hyperparameters (``check_resume_file``)."""
        super().parse_arguments(parser, args)
        check_resume_file(self.config)

    def fit(self, model: TransferModule, **kwargs: Any) -> None:
        """``trainer.fit``; a run with no training task (BUCC, Tatoeba: no training data) only tests."""
        if self.datamodule.train_tasks:
            self.trainer.fit(model, **kwargs)
            return
        rank_zero_info("No task has a train_split: evaluation-only run, scoring the starting weights.")
        self._evaluation_only = True
        datamodule = kwargs.get("datamodule")
        if datamodule.eval_sets["val"]:  # dev first: BUCC tunes its threshold there (XTREME) for the test
            self.trainer.validate(model, datamodule=datamodule, verbose=False)
        self.trainer.test(model, datamodule=datamodule, verbose=False)

    def test(self, model: TransferModule, **kwargs: Any) -> None:
        """``trainer.test`` without Lightning's per-DataLoader dump: ``after_test`` prints one compact table."""
        self.trainer.test(model, **{**kwargs, "verbose": False})

    def validate(self, model: TransferModule, **kwargs: Any) -> None:
        """``trainer.validate``; ``after_validate`` prints one compact table."""
        self.trainer.validate(model, **{**kwargs, "verbose": False})

    def before_fit(self) -> None:
        """Preflight (``run_preflight``): shards, vocabularies, lengths; fails before any training."""
        run_preflight(self.datamodule, self.trainer, self.model)

    def after_fit(self) -> None:
        if self.datamodule.train_tasks and self.trainer.global_step == 0:
            raise RuntimeError(
                f"Nothing was trained (global step 0 after fit; trainer.max_steps={self.trainer.max_steps}, "
                f"data.steps_per_epoch={self.datamodule.steps_per_epoch}): nothing to test or hand on. Check the "
                "run length settings."
            )
        best = selected_checkpoint(self.trainer)  # before the test, which loads that file's callback states
        final = next((cb for cb in self.trainer.callbacks if isinstance(cb, FinalCheckpoint)), None)
        ckpts = {
            "best_ckpt": best["path"],
            "best_step": best["step"],
            "best_score": best["score"],
            "final_ckpt": final.path if final else "",
            "final_step": final.step if final else 0,
        }
        if self.config.fit.test_after_fit and not getattr(self, "_evaluation_only", False):
            # the selected checkpoint; with none (no validation, or only NaN scores) the weights at the end of fit
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best["path"] or None, verbose=False)
            report = Path(self.trainer.default_root_dir, "results.md")
            if self.trainer.is_global_zero and report.exists():
                print(report.read_text())
        if self.trainer.is_global_zero:  # a finished run is never resumed: its files keep the weights alone
            keep_weights_only([ckpts["best_ckpt"], ckpts["final_ckpt"]])
        self._finish({**ckpts, "last_ckpt": ckpts["final_ckpt"], "weights_only": True})  # last_ckpt: runners read it

    def after_test(self) -> None:
        self._print_table("test")
        self._finish({})

    def after_validate(self) -> None:
        self._print_table("val")
        self._finish({})

    def _print_table(self, split: str) -> None:
        rows = rows_from_metrics(self.trainer.callback_metrics, split)
        if self.trainer.is_global_zero and rows:
            print(compact_table(rows), flush=True)

    def _finish(self, extra: dict[str, Any]) -> None:
        """``finished.json`` is written last: the study runner skips runs that have it."""
        if self.trainer.is_global_zero:
            ckpt = self.config[self.subcommand].get("ckpt_path")
            device = type(self.trainer.accelerator).__name__.removesuffix("Accelerator").lower()  # cpu, cuda, mps
            info = {
                "subcommand": self.subcommand,
                "phase": self.model.hparams.phase,
                "ckpt_path": ckpt,
                "device": device,
                **extra,
            }
            append_finished(self.trainer.default_root_dir, info)
        if any(isinstance(logger, WandbLogger) for logger in self.trainer.loggers):
            import wandb

            wandb.finish()  # one W&B run per command, also when several run in one process


def check_resume_file(config: Any) -> None:
    """A truncated or missing ``--ckpt_path`` fails naming the key and the path (``weights.check_checkpoint_file``),
    not as torch's zip-reader error; ``last`` is the newest ``last*.ckpt`` of the run's checkpoint folder."""
    cfg = config[config.subcommand] if config.get("subcommand") else config
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last":
        root = cfg.trainer.default_root_dir or os.path.join("runs", cfg.name)
        found = sorted(Path(root, "checkpoints").glob("last*.ckpt"), key=os.path.getmtime)
        ckpt = found[-1] if found else None  # none: Lightning starts afresh, with its own warning
    if ckpt and ckpt not in ("best", "hpc") and not str(ckpt).startswith("registry") and "://" not in str(ckpt):
        check_checkpoint_file(ckpt, "ckpt_path")
        if config.get("subcommand") in (None, "fit") and is_weights_only(ckpt):
            raise CheckpointFileError(
                f"ckpt_path={ckpt}: its run finished and kept the weights only (no optimizer state): nothing to "
                f"resume. Start a new phase from it with --model.init_from={ckpt}, or re-evaluate it with "
                f"`train.py test --ckpt_path {ckpt}`."
            )


def selected_checkpoint(trainer: Any) -> dict[str, Any]:
    """The checkpoint validation selected: ``{path, step, score}``; path "" when none was (no validation ran, or
    every score was NaN, which Lightning keeps as -inf: a file kept on such a score is not a selection). The same
    on every rank; ``step`` (read from the file) on rank 0 only, which writes finished.json."""
    callback = trainer.checkpoint_callback
    path, score = getattr(callback, "best_model_path", ""), getattr(callback, "best_model_score", None)
    if not path or score is None or not math.isfinite(float(score)):
        return {"path": "", "step": None, "score": None}
    step = (read_record(path)["record"] or {}).get("global_step") if trainer.is_global_zero else None
    return {"path": path, "step": step, "score": float(score)}


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def image_config(vision_model: str | None, vision_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The data side's image transform settings: timm's data config of the model's vision tower."""
    return vision_data_config(vision_model, vision_kwargs or {}) if vision_model else None


def full_preflight(
    dm: TransferDataModule, trainer: Any, model: TransferModule, *, full: bool = False
) -> PreflightReport:
    """The data half (``datamodules.preflight``) and the model half (``lightning_modules.preflight``)."""
    report = preflight(dm, trainer, full=full)
    errors, info = model_checks(model, dm.max_length)
    report.errors += errors
    report.info += info
    return report


def run_preflight(
    dm: TransferDataModule, trainer: Any, model: TransferModule, *, full: bool = False
) -> PreflightReport:
    """Preflight, printed on rank 0; raises ``ValueError`` listing every problem."""
    report = full_preflight(dm, trainer, model, full=full)
    if getattr(trainer, "is_global_zero", True):
        print(report.text(), file=sys.stderr)
    report.raise_on_errors()
    return report


def preflight_main(argv: list[str]) -> int:
    """``python train.py preflight [--full] --config ...``: the run's configs, as for ``train.py fit``."""
    full = "--full" in argv
    cli = cli_main([a for a in argv if a != "--full"], run=False)
    report = full_preflight(cli.datamodule, cli.trainer, cli.model, full=full)
    print(report.text())
    return 0 if report.ok else 1


def cli_main(args: list[str] | None = None, run: bool = True) -> MMStiltsCLI:
    return MMStiltsCLI(
        TransferModule,
        TransferDataModule,
        save_config_callback=RunConfigCallback,
        parser_class=MMStiltsArgumentParser,
        # after the config's; DivergenceGuard before FinalCheckpoint: non-finite weights are never saved as final
        trainer_defaults={
            "callbacks": [PredictionWriter(), RunReport(), ProtocolRecord(), DivergenceGuard(), FinalCheckpoint()]
        },
        parser_kwargs={"parser_mode": "yaml"},
        auto_configure_optimizers=False,  # model.optimizer / model.schedule only (optimizer_hint)
        args=args,
        run=run,
    )


# -- the error boundary ----------------------------------------------------------------------------------------
DEBUG_ENV = "MMSTILTS_DEBUG"
CONFIG_ERROR, RUNTIME_ERROR = 2, 1
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
RUN_DIR_FIX = "--trainer.default_root_dir DIR (or --name NAME: runs/NAME)"


def main(argv: list[str] | None = None) -> int:
    """``python train.py ...`` (``argv``: the command line after ``train.py``; None: ``sys.argv``) inside one error
    boundary: an error ``explain`` knows prints ``train.py: <message>`` (what, where, the fix) on stderr and returns
    its exit code; with ``MMSTILTS_DEBUG=1`` (``--debug`` sets it) it is raised with its traceback."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["preflight"]:
            return preflight_main(args[1:])
        cli_main(argv)
    except Exception as err:
        known = None if os.environ.get(DEBUG_ENV, "") not in ("", "0") else explain(err)
        if known is None:
            raise
        message, code = known
        print(f"train.py: {message}\n  (rerun with {DEBUG_ENV}=1 or --debug for the traceback)", file=sys.stderr)
        return code
    return 0


def explain(err: Exception) -> tuple[str, int] | None:
    """(message, exit code) for an error a user can fix; None for anything else (a bug: its traceback is shown)."""
    if type(err).__module__.split(".")[0] == "wandb":
        return wandb_message(err), RUNTIME_ERROR
    if isinstance(err, OSError):
        return os_message(err), RUNTIME_ERROR
    if isinstance(err, (DataError, CheckpointFileError, WeightSourceError)):
        return str(err), RUNTIME_ERROR
    if isinstance(err, RuntimeError) and "PytorchStream" in str(err):  # torch.save / torch.load on a bad file
        where = file_in_traceback(err)
        return (
            f"{str(err).strip().splitlines()[0]}{f' ({where})' if where else ''}: is the disk full, or the "
            "checkpoint cut off? Free space (df -h) or copy the checkpoint again"
        ), RUNTIME_ERROR
    if isinstance(err, (ValueError, MisconfigurationException)):
        return str(err), CONFIG_ERROR
    return None


def os_message(err: OSError) -> str:
    """What failed, on which path (from the traceback when the OS gives none: a write past a full disk) and the fix."""
    path = err.filename or file_in_traceback(err)
    what = f"{err.strerror or err} (errno {err.errno})" if err.errno else str(err)
    where = f"{path}: " if path else "writing a file (the OS names none): "
    if err.errno in NOT_WRITABLE:
        fix = f"the run folder must be writable: fix its permissions, or write the run elsewhere with {RUN_DIR_FIX}"
    elif err.errno in DISK_FULL:
        fix = (
            f"the disk, your quota or your file-size limit (ulimit -f) is full: free space (df -h {path or '.'}) "
            f"or write the run elsewhere with {RUN_DIR_FIX}"
        )
    else:
        fix = "check the path and its permissions"
    return f"{where}{what}; {fix}"


def file_in_traceback(err: BaseException) -> str | None:
    """The file being read or written where ``err`` was raised: the innermost frame holding an open file object."""
    frames, tb = [], err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase):
                name = getattr(value, "path", None) or getattr(value, "name", None)  # fsspec: target, not temp file
                if isinstance(name, str):
                    return name
    return None


def wandb_message(err: Exception) -> str:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    return (
        f"W&B: {reason}. Log offline with WANDB_MODE=offline (sync later with `wandb sync`), log in with "
        "`wandb login` (or set WANDB_API_KEY), or run without W&B: --trainer.logger false"
    )


if __name__ == "__main__":
    if "--debug" in sys.argv:  # through the environment, so DDP ranks (re-run from sys.argv) inherit it
        sys.argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    sys.exit(main())
