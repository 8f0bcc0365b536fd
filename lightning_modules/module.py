"""TransferModule: the one LightningModule of every phase. It wires core + heads to steps, logs and optimizers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypedDict

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import SumMetric

from contracts.catalogue import TaskSpec, get_task
from contracts.ranges import FRACTION, NON_NEGATIVE, POSITIVE, check_fields, ranged
from lightning_modules.checkpoints import lineage, load_init_checkpoint
from lightning_modules.core import EncoderCore
from lightning_modules.families import build_head, build_metrics, family_model
from lightning_modules.heads import HeadOutput, load_lm_head
from lightning_modules.metrics import BuccF1
from lightning_modules.reports import label_name
from lightning_modules.weights import warn_if_lr_too_high

EvalStage = Literal["val", "test"]
DEFAULT_WARMUP_FRACTION = 0.1


class TaskInfo(TypedDict, total=False):
    """What the model knows of one task of the run (linked from ``data.task_info``)."""

    labels: list[str]
    """Label names by index (catalogue or shards' manifest); empty for tasks without labels."""
    train: bool
    """The task has a train split in this run."""
    loss_weight: float
    """Multiplies the task's loss."""


@dataclass
class Optimizer:
    """AdamW (fused on CUDA); weight decay is not applied to biases and norms."""

    lr: float = ranged(2e-5, POSITIVE)
    """Peak learning rate of the core."""
    head_lr: float | None = ranged(None, POSITIVE)
    """Peak learning rate of the heads (default: lr)."""
    weight_decay: float = ranged(0.01, NON_NEGATIVE)
    """AdamW weight decay."""


@dataclass
class Schedule:
    """Linear warm-up, then linear decay to 0 at ``trainer.max_steps``; give at most one of the two lengths."""

    warmup_steps: int | None = ranged(None, NON_NEGATIVE)
    """Warm-up length in optimizer steps."""
    warmup_fraction: float | None = ranged(None, FRACTION)
    """Warm-up length as a fraction of max_steps (default 0.1 when neither is given)."""

    def warmup(self, max_steps: int) -> int:
        """Warm-up length in steps; raises when both lengths are given."""
        if self.warmup_steps is not None and self.warmup_fraction is not None:
            raise ValueError(
                f"model.schedule.warmup_steps={self.warmup_steps} and model.schedule.warmup_fraction="
                f"{self.warmup_fraction} are both set: give one and set the other to null"
            )
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        fraction = DEFAULT_WARMUP_FRACTION if self.warmup_fraction is None else self.warmup_fraction
        if not 0 <= fraction <= 1:
            raise ValueError(f"model.schedule.warmup_fraction={fraction} must be in [0, 1]; for steps use warmup_steps")
        return int(fraction * max_steps)

    def check_fits(self, max_steps: int) -> None:
        """The warm-up must end before the run does (``max_steps`` ≤ 0: not known yet, not checked); raises when
        both lengths are given."""
        warmup = self.warmup(max(max_steps, 0))
        if max_steps > 0 and warmup >= max_steps:
            raise ValueError(
                f"model.schedule: the warm-up ({warmup} steps) must be shorter than trainer.max_steps={max_steps}; "
                "give fewer warmup_steps or a warmup_fraction < 1"
            )


@dataclass
class Freezing:
    """Idempotent freezing of parts of the core (text-only runs also freeze the image side)."""

    vision: bool = False
    """Freeze the vision tower."""
    text_embeddings: bool = False
    """Freeze the text embeddings."""
    text_layers: int = ranged(0, NON_NEGATIVE)
    """Freeze the first k text transformer layers."""


@dataclass
class CoreConfig:
    """The encoder core: which towers, from which weights, how they are fused, how they run (``core.EncoderCore``)."""

    text_model: str
    """Hugging Face encoder: hub name or local directory (config + tokenizer)."""
    vision_model: str | None = None
    """timm model name, or a vision.json file; null for text-only runs."""
    vision_kwargs: dict[str, Any] | None = None
    """Extra timm.create_model kwargs (image size, depth, ...)."""
    text_kwargs: dict[str, Any] | None = None
    """Extra AutoModel kwargs (e.g. add_pooling_layer: false)."""
    text_tower: str | None = None
    """Attribute holding the text tower when the checkpoint is a two-tower model (SigLIP: text_model)."""
    text_drop: list[str] | None = None
    """Submodules of the text tower no head uses (SigLIP's projection: head), replaced by identities."""
    pretrained: bool = True
    """Load pretrained weights (false: random init from the configs, as in tests and the demo)."""
    text_pretrained: bool | None = None
    """Load the text tower's pretrained weights (null: follow pretrained)."""
    vision_pretrained: bool | None = None
    """Load the vision tower's pretrained weights (null: follow pretrained)."""
    vision_checkpoint: str | None = None
    """Local weights for the vision tower: a .safetensors/.pth file or a timm model directory."""
    text_embedding: dict[str, Any] | None = None
    """Aligned two-tower start: {pool: first|last, modules: [dotted paths in the checkpoint], pad_to: fixed text
    length (SigLIP 64), vision_check: the checkpoint's patch-embedding weight}; timm's pooling and head are kept for
    the image side and retrieval uses both towers' own embeddings (no fresh projection). Null: first token + a
    head's projection. See docs/start.md."""
    fusion: Literal["single_stream", "fusion_transformer"] = "single_stream"
    """single_stream (image tokens prepended to the text) or fusion_transformer."""
    attn_implementation: str = "sdpa"
    """Attention kernel of the text model (sdpa, eager, flash_attention_2)."""
    retrieval_layer: int | None = None
    """Text layer whose mean-pooled states sentence retrieval uses (null: last)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (large cores)."""
    compile: bool = False
    """torch.compile the core."""

    def build(self) -> EncoderCore:
        """The core these settings describe (weights loaded, or random where not pretrained)."""
        return EncoderCore(
            self.text_model,
            self.vision_model,
            pretrained=self.pretrained,
            fusion=self.fusion,
            text_tower=self.text_tower,
            text_drop=self.text_drop,
            text_kwargs=self.text_kwargs,
            vision_kwargs=self.vision_kwargs,
            attn_implementation=self.attn_implementation,
            text_pretrained=self.text_pretrained,
            vision_pretrained=self.vision_pretrained,
            vision_checkpoint=self.vision_checkpoint,
            text_embedding=self.text_embedding,
        )


def _dual(spec: TaskSpec) -> bool:
    """The task's family encodes images and texts apart (retrieval): no fusion path."""
    return family_model(spec.family).dual_encoder


def _plain(value: Any, kind: type) -> dict[str, Any]:
    """A group as a plain dict: checkpoints load with ``weights_only=True``, which refuses dataclasses."""
    if value is None:
        return asdict(kind())
    return asdict(value) if not isinstance(value, dict) else asdict(kind(**value))


class TransferModule(pl.LightningModule):
    """Encoder core + one head per head name of the configured tasks."""

    def __init__(
        self,
        core: CoreConfig,
        tasks: dict[str, TaskInfo] | None = None,
        evaluation: dict[str, Any] | None = None,
        optimizer: Optimizer | None = None,
        schedule: Schedule | None = None,
        max_steps: int = -1,
        init_from: str | None = None,
        init_scope: str | list[str] = "core",
        phase: str = "train",
        freezing: Freezing | None = None,
    ) -> None:
        """
        Args:
            core: The encoder core: text and vision towers, their weights, fusion and runtime switches.
            tasks: Per task: label names, whether it trains, loss weight (linked from data.task_info).
            evaluation: The evaluation sets, ``{"val": [[task, lang], ...], "test": [...], "seed": int}``, one
                per loader in loader order (linked from data.evaluation).
            optimizer: AdamW settings: lr (core), head_lr (heads; default lr), weight_decay.
            schedule: Linear warm-up (warmup_steps or warmup_fraction, not both), then linear decay.
            max_steps: Total optimizer steps for the schedule (linked from trainer.max_steps).
            init_from: Checkpoint of an earlier phase to start from (not a resume: see ckpt_path).
            init_scope: What init_from carries over: core, all, or a list of head names.
            phase: Name of this phase (intermediate, target, ...), stored with the lineage.
            freezing: What of the core to freeze: vision, text_embeddings, the first text_layers layers.
        """
        super().__init__()
        # the groups as plain dicts before save_hyperparameters reads the locals: hparams stay YAML/JSON values
        # (under LightningCLI the hparams are the config's values, plain already)
        core, optimizer, schedule = _plain(core, CoreConfig), _plain(optimizer, Optimizer), _plain(schedule, Schedule)
        freezing = _plain(freezing, Freezing)
        self.save_hyperparameters()
        self.core_config, self.optimizer_config = CoreConfig(**core), Optimizer(**optimizer)
        self.schedule, self.freezing = Schedule(**schedule), Freezing(**freezing)
        for group in ("optimizer_config", "schedule", "freezing"):  # each field's range (contracts.ranges.ranged)
            check_fields(getattr(self, group), f"model.{group.removesuffix('_config')}.")
        # both lengths given, or a warm-up as long as the run: fail at construction, not at fit
        self.schedule.check_fits(max_steps)
        if not tasks:
            raise ValueError("model.tasks is empty: it is linked from data.tasks; configure data.tasks")
        self.core = self.core_config.build()
        warn_if_lr_too_high(self.optimizer_config.lr, self.core.sources)
        self.task_info = tasks
        evaluation = evaluation or {}
        self.eval_names: dict[str, list[tuple[str, str]]] = {
            stage: [(task, lang) for task, lang in evaluation.get(stage, [])] for stage in ("val", "test")
        }
        self.seed: int | None = evaluation.get("seed")
        self.specs = {name: get_task(name) for name in tasks}
        self.heads = nn.ModuleDict()
        core = self.core_config
        for name, spec in self.specs.items():
            if spec.head not in self.heads:
                # a pretrained text model's LM head where its checkpoint has one (else fresh: one line says so)
                lm_head = None
                if family_model(spec.family).lm_head and self.core.sources.text_pretrained:
                    lm_head = load_lm_head(core.text_model)
                self.heads[spec.head] = build_head(
                    spec.family,
                    self.core.hidden_size,
                    label_names=tasks[name]["labels"],
                    vocab_size=self.core.text.config.vocab_size,
                    retrieval_layer=core.retrieval_layer,
                    lm_head=lm_head,
                    own_embeddings=self.core.own_embeddings,
                )
        self.metrics = nn.ModuleDict()  # "<stage>|<task>|<lang>" -> task metric; created in setup
        self.counts = nn.ModuleDict()  # same keys -> samples scored (exactness check)
        self._lineage: dict[str, Any] = {}
        self.test_rows: list[dict[str, Any]] = []  # the last test's rows, read by callbacks.RunReport
        self.test_outcomes: list[tuple] = []  # the last test's per-sample outcomes, read by callbacks.RunReport
        self._dev_thresholds: dict[tuple[str, str], float] = {}  # BUCC: (task, lang) -> threshold tuned on dev
        self.apply_freezing()
        if core.gradient_checkpointing:
            self.core.set_gradient_checkpointing(True)

    # -- setup ----------------------------------------------------------------------------------------
    @property
    def train_tasks(self) -> list[str]:
        return [name for name, info in self.task_info.items() if info.get("train")]

    def apply_freezing(self) -> None:
        """Idempotent freezing; the vision tower is also frozen when no training task has images."""
        freezing = self.freezing
        text_only = all(self.specs[t].modality == "text" for t in self.train_tasks) if self.train_tasks else False
        self.core.freeze(freezing.vision or text_only, freezing.text_embeddings, freezing.text_layers)
        if text_only and self.core.vision is not None:
            for p in [*self.core.image_proj.parameters(), self.core.image_type]:
                p.requires_grad_(False)
        if hasattr(self.core, "fuser"):  # only joint image + text encoding runs it: not text, not retrieval
            specs = [self.specs[t] for t in self.train_tasks]
            self.core.fuser.requires_grad_(any(s.modality != "text" and not _dual(s) for s in specs))
        if self.core.own_embeddings:  # the towers' own pooling/projections vs the fusion path: train what runs
            specs = [self.specs[t] for t in self.train_tasks]
            if not any(_dual(s) for s in specs):  # only freezes: freeze_vision etc. still hold
                for module in self.core.embedding_heads():
                    module.requires_grad_(False)
            joint = any(s.modality != "text" and not _dual(s) for s in specs)  # fusion path runs
            if self.core.vision is not None and not joint:
                for p in [*self.core.image_proj.parameters(), self.core.image_type]:
                    p.requires_grad_(False)
        for name in self.heads:  # heads of evaluation-only tasks (and parameterless ones) do not train
            trains = any(self.specs[t].head == name for t in self.train_tasks)
            for p in self.heads[name].parameters():
                p.requires_grad_(trains)

    def every_step_uses_every_parameter(self) -> bool:
        """True when DDP can skip its unused-parameter search: one trained head, one modality."""
        heads = {self.specs[t].head for t in self.train_tasks}
        modalities = {self.specs[t].modality for t in self.train_tasks}
        return len(heads) <= 1 and len(modalities) <= 1

    def ddp_options(self, accumulate_grad_batches: int = 1) -> dict[str, bool]:
        """``DistributedDataParallel`` options for this module's training tasks, given to the DDP strategy's
        constructor (``lightning_modules.ddp.register_ddp_strategies``; ``train.py`` does it for every run)."""
        # Multi-task steps leave other heads (and, on text-only steps, the vision tower) without gradients; only
        # then pay for DDP's unused-parameter search. Same graph every step: DDP keeps the first step's bucket
        # order (not with no_sync accumulation). Gradients live in the all-reduce buckets: no copy.
        every = self.every_step_uses_every_parameter()
        return {
            "find_unused_parameters": not every,
            "gradient_as_bucket_view": True,
            "static_graph": every and accumulate_grad_batches == 1,
        }

    def setup(self, stage: str) -> None:
        if self.hparams.init_from and not self._lineage:  # a resume (ckpt_path) overwrites these weights later
            self._lineage = self.load_init(self.hparams.init_from, self.hparams.init_scope)
        self.create_metrics()
        if self.core_config.compile:
            self.core.compile()  # in place: state-dict keys stay as they are

    def load_init(self, path: str, scope: str | list[str]) -> dict[str, Any]:
        report = load_init_checkpoint(self, path, scope)
        rank_zero_info(report.summary())
        info = lineage(
            path,
            report.parent_hparams,
            self.hparams.phase,
            report.parent_lineage,
            report.parent_trained_on,
            report.parent_weights,
        )
        for logger in self.loggers:
            logger.log_hyperparams(
                {
                    "lineage": info,
                    "init_missing": report.missing,
                    "init_unexpected": report.unexpected,
                    "init_dropped_heads": report.dropped_heads,
                }
            )
        return info

    def create_metrics(self) -> None:
        for stage in ("val", "test"):
            for task, lang in self.eval_names[stage]:
                key = f"{stage}|{task}|{lang}"
                if key not in self.metrics:
                    lang_arg = lang if self.specs[task].lang_normalisation else None
                    self.metrics[key] = build_metrics(self.specs[task], self.task_info[task]["labels"], lang_arg)
                    self.counts[key] = SumMetric()

    # -- steps ----------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> HeadOutput:
        return self.heads[self.specs[batch["task"]].head](self.core, batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        task = batch["task"]
        out = self(batch)
        loss = out.loss * self.task_info[task].get("loss_weight", 1.0)
        bs = len(batch["keys"])
        self.log(f"train/{task}/loss", out.loss, batch_size=bs, on_step=True, on_epoch=False)
        self.log("train/loss", loss, batch_size=bs, prog_bar=True, on_step=True, on_epoch=False)
        for reason, n in batch.get("skipped", {}).items():
            self.log(f"data/skipped/{reason}", float(n), reduce_fx="sum", on_step=False, on_epoch=True, batch_size=1)
        return loss

    def _eval_step(self, stage: EvalStage, batch: dict[str, Any], dataloader_idx: int) -> HeadOutput:
        task, lang = self._eval_set(stage, dataloader_idx)
        assert batch["task"] == task, f"loader {dataloader_idx} is {task}/{lang} but yielded a {batch['task']} batch"
        out = self(batch)
        key = f"{stage}|{task}|{lang}"
        # test keys: per-sample outcomes (outcomes.jsonl) so runs on one test set can be paired item by item
        self.metrics[key].update(**out.metric_inputs, keys=batch["keys"] if stage == "test" else None)
        self.counts[key].update(len(batch["keys"]))
        return out

    def _eval_set(self, stage: EvalStage, dataloader_idx: int) -> tuple[str, str]:
        names = self.eval_names[stage]
        if dataloader_idx >= len(names):
            raise ValueError(
                f"model.evaluation lists {len(names)} {stage} set(s) but the data module has a loader "
                f"#{dataloader_idx}: pass evaluation=datamodule.evaluation (train.py links "
                "data.evaluation -> model.evaluation)"
            )
        return names[dataloader_idx]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """One row per sample (task, key, lang, prediction, label and their label names);
        ``callbacks.PredictionWriter`` writes them."""
        task, _ = self._eval_set("test", dataloader_idx)
        out = self(batch)
        labels = batch.get("labels", batch.get("references", [None] * len(batch["keys"])))
        labels = labels.tolist() if torch.is_tensor(labels) else labels
        names = self.task_info[task]["labels"]
        return [
            {
                "task": task,
                "key": k,
                "lang": lg,
                "prediction": p,
                "label": y,
                "prediction_name": label_name(names, p),
                "label_name": label_name(names, y),
            }
            for k, lg, p, y in zip(batch["keys"], batch["lang"], out.predictions, labels)
        ]

    # -- epoch ends: every rank computes every metric in the same order (each compute syncs) ------------
    def _compute_all(self, stage: EvalStage) -> list[dict[str, Any]]:
        rows = []
        for task, lang in self.eval_names[stage]:
            key = f"{stage}|{task}|{lang}"
            if stage == "test" and isinstance(self.metrics[key], BuccF1):  # XTREME: the dev-tuned threshold
                self.metrics[key].threshold = self._dev_thresholds.get((task, lang))  # None: tuned on test
            values = self.metrics[key].compute()
            if stage == "test":  # a collective like compute: every rank, same order
                self.test_outcomes.append(
                    (task, lang, self.metrics[key].outcomes(), self.metrics[key].outcome_formulas())
                )
            if stage == "val" and "bucc_threshold" in values:
                self._dev_thresholds[(task, lang)] = float(values["bucc_threshold"])
            count = int(self.counts[key].compute().item())
            self.metrics[key].reset()
            self.counts[key].reset()
            for name, value in values.items():
                value = float(value)
                self.log(f"{stage}/{task}/{lang}/{name}", value, sync_dist=False, add_dataloader_idx=False)
                rows.append({"task": task, "lang": lang, "split": stage, "metric": name, "value": value})
            self.log(f"{stage}/{task}/{lang}/count", float(count), sync_dist=False, add_dataloader_idx=False)
            rows.append({"task": task, "lang": lang, "split": stage, "metric": "count", "value": float(count)})
        return rows

    @property
    def selection_key(self) -> str:
        """The English dev metric that selects checkpoints: the first trained task's primary metric."""
        names = self.eval_names["val"]
        for task in [*self.train_tasks, *self.task_info]:
            if (task, "en") in names:
                return f"val/{task}/en/{self.specs[task].primary}"
        if self.hparams.phase == "few_shot" and names:  # IGLUE few-shot: the target language's few-shot dev
            task, lang = names[0]
            return f"val/{task}/{lang}/{self.specs[task].primary}"
        return "val/none"

    def on_validation_epoch_end(self) -> None:
        rows = self._compute_all("val")
        key = self.selection_key
        value = next((r["value"] for r in rows if f"val/{r['task']}/{r['lang']}/{r['metric']}" == key), math.nan)
        self.log("val/selection", value, sync_dist=False, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self.test_outcomes: list[tuple] = []  # (task, lang, outcomes, formulas), filled by _compute_all
        rows = self._compute_all("test")
        self.test_rows = [{"phase": self.hparams.phase, **r, "seed": self.seed} for r in rows]

    # -- checkpoint lineage ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lineage"] = self._lineage or lineage(None, None, self.hparams.phase)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._lineage = checkpoint.get("lineage", {})

    # -- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        if hp.max_steps is None or hp.max_steps <= 0:
            raise ValueError("trainer.max_steps must be set (> 0): the learning-rate schedule is built from it")
        opt = self.optimizer_config
        groups = []
        for module, lr in ((self.core, opt.lr), (self.heads, opt.head_lr or opt.lr)):
            decay, no_decay = [], []
            for p in module.parameters():
                if p.requires_grad:
                    (no_decay if p.ndim < 2 else decay).append(p)  # biases, norms, scales
            groups += [
                {"params": decay, "lr": lr, "weight_decay": opt.weight_decay},
                {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            ]
        groups = [g for g in groups if g["params"]]
        fused = all(p.is_cuda for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(groups, fused=fused or None)
        warmup = self.schedule.warmup(hp.max_steps)
        total = hp.max_steps

        def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0 at max_steps
            if step < warmup:
                return (step + 1) / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
