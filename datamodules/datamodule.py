"""The LightningDataModule: per-task WebDataset streams, multi-task mixing, named evaluation loaders.

Evaluation reads only shards whose sha256 matches the manifest (``changed_shard``): a test score is never of data
that changed after the shards were written (cheap at evaluation sizes; once per shard and data module).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from contracts.catalogue import get_task
from contracts.fields import family_fields
from contracts.files import sha256_file
from contracts.ranges import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    Range,
    check_fields,
    check_max_length,
    check_ranges,
    ranged,
)
from datamodules.collate import Collator
from datamodules.controls import LabelShuffle, shuffled_fields
from datamodules.img2dataset import adapt_decoder
from datamodules.mixing import MultiTaskLoader, SamplerKind, TaskSampler, task_weights
from datamodules.pipeline import (
    DataError,
    EvalImageTransform,
    SafeDecoder,
    TrainImageTransform,
    eval_pipeline,
    train_pipeline,
)
from shards.manifest import is_url, load_manifest, sample_count, select_shards, shard_location

NUM_IMAGES = {"text": 0, "image_text": 1, "image_pair": 2}


def changed_shard(path: str, entry: dict[str, Any] | None) -> str | None:
    """Why the local shard ``path`` must not be scored (its sha256 differs from its manifest ``entry``), else None;
    a URL, or an entry without a hash, is not checked here (reading it checks its sample count)."""
    if entry is None or not entry.get("sha256") or is_url(path) or not Path(path).is_file():
        return None  # a missing file fails when it is read, naming it
    if sha256_file(path) == entry["sha256"]:
        return None
    return (
        f"{path}: sha256 differs from the manifest: the shard changed after it was written, so its scores would "
        f"be of other data. Rebuild the shards, or see what changed with `python -m shards verify "
        f"{Path(path).parent}`"
    )


@dataclass
class TaskData:
    """One task's shards and how the run uses them."""

    name: str
    """Catalogue task name (``contracts.catalogue.TASKS``)."""
    shards: str
    """Directory or URL (``s3://...``, ``pipe:...``: ``shards/manifest.py``) with ``manifest.json`` and the shards."""
    train_split: str | None = None
    """Split to train on (null: this task is evaluation-only, e.g. a zero-shot target)."""
    train_langs: list[str] | None = None
    """Languages of train_split to train on (default: all); [en] keeps zero-shot runs English-only."""
    val_split: str | None = None
    """Split for validation / checkpoint selection."""
    val_langs: list[str] | None = None
    """Validation languages; default English only (checkpoints are selected on English dev data)."""
    test_split: str | None = None
    """Split to test on."""
    test_langs: list[str] | None = None
    """Test languages; default every language the test split has."""
    batch_size: int | None = ranged(None, AT_LEAST_ONE)
    """Training batch size for this task (default: data.batch_size)."""
    weight: float | None = ranged(None, POSITIVE)
    """Sampling weight when data.sampler=fixed."""
    loss_weight: float = ranged(1.0, NON_NEGATIVE)
    """Multiplies this task's loss."""
    augment: bool = False
    """Training images get a random resized crop + horizontal flip (evaluation keeps the centre crop)."""
    shuffle_labels: bool = False
    """Negative control: permute the training targets among the samples of each batch (fixed per seed; keeps
    the label distribution, breaks the pairing; ``datamodules/controls.py``)."""


DATA_RANGES: dict[str, Range] = {
    "batch_size": AT_LEAST_ONE,
    "eval_batch_size": AT_LEAST_ONE,
    "num_workers": NON_NEGATIVE,
    "eval_num_workers": NON_NEGATIVE,
    "steps_per_epoch": AT_LEAST_ONE,
    "temperature": POSITIVE,
    "example_cap": AT_LEAST_ONE,
    "shuffle_buffer": NON_NEGATIVE,
}
"""Ranges of ``TransferDataModule``'s numeric arguments (a test checks each key names one of its parameters)."""


class TransferDataModule(pl.LightningDataModule):
    """Streams every configured task's shards; training mixes tasks one per step, evaluation is exact."""

    def __init__(
        self,
        tasks: list[TaskData],
        tokenizer: str = "",
        image_config: dict[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        num_workers: int = 2,
        eval_num_workers: int | None = None,
        steps_per_epoch: int = 1000,
        sampler: SamplerKind = "proportional",
        temperature: float = 2.0,
        example_cap: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        multiprocessing_context: str | None = None,
    ) -> None:
        """
        Args:
            tasks: The tasks of this run: what to train on, validate on and test on.
            tokenizer: Hugging Face tokenizer name or directory (linked from model.core.text_model).
            image_config: timm data config of the vision model (input size, mean, std, interpolation, crop);
                linked from model.core.vision_model + model.core.vision_kwargs (``train.py``); null: no image task.
            batch_size: Training batch size (per rank) unless a task sets its own.
            eval_batch_size: Evaluation batch size (default: batch_size).
            max_length: Maximum tokens per text (truncation).
            num_workers: Loader worker processes per training task.
            eval_num_workers: Loader workers per evaluation set (default: num_workers).
            steps_per_epoch: Training batches per epoch, identical on every rank.
            sampler: How the task of each step is drawn: uniform, proportional (to train sizes),
                temperature (jiant: min(n, cap) ** (1/T)), fixed (tasks[*].weight).
            temperature: T for sampler=temperature.
            example_cap: cap on a task's size for sampler=temperature.
            shuffle_buffer: Samples held in each worker's shuffle buffer (raw bytes, before decoding).
            seed: Seeds shard order, shuffling and the task sequence (linked from seed_everything).
            pin_memory: Pinned host memory for faster host-to-GPU copies.
            persistent_workers: Keep evaluation workers alive between validation runs.
            multiprocessing_context: Worker start method (fork, spawn, forkserver); default: torch's.
        """
        super().__init__()
        if not tasks:
            raise ValueError("data.tasks is empty: name at least one task with its shards directory")
        check_ranges("data.", locals(), DATA_RANGES)
        check_max_length(max_length)
        for t in tasks:
            check_fields(t, f"data.tasks[{t.name}].")
        self.tasks = {t.name: t for t in tasks}
        if len(self.tasks) != len(tasks):
            raise ValueError(f"data.tasks names a task twice: {[t.name for t in tasks]}")
        self.tokenizer_name, self.image_config = tokenizer, image_config
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_length, self.num_workers = max_length, num_workers
        self.eval_num_workers = num_workers if eval_num_workers is None else eval_num_workers
        self.steps_per_epoch, self.sampler_kind = steps_per_epoch, sampler
        self.temperature, self.example_cap = temperature, example_cap
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.multiprocessing_context = multiprocessing_context
        self.manifests = {name: self._manifest(t) for name, t in self.tasks.items()}
        self.label_names = {name: self._label_names(name) for name in self.tasks}
        self.eval_sets = {"val": self._eval_sets("val"), "test": self._eval_sets("test")}
        self._train_loader: MultiTaskLoader | None = None
        self._resume_batch_index = 0
        self._hashed: set[str] = set()  # evaluation shards whose sha256 matched the manifest

    # -- configuration checks (run at construction: before any training) -------------------------------
    def _manifest(self, t: TaskData) -> dict:
        try:
            get_task(t.name)
        except KeyError as err:
            raise ValueError(f"data.tasks[*].name: {err.args[0]}") from None
        if t.shuffle_labels:
            shuffled_fields(t.name, get_task(t.name).family)  # fails now for a family without movable labels
        if t.weight is not None and t.train_split is None:
            raise ValueError(
                f"data.tasks[{t.name}].weight is set but the task has no train_split, so it is never "
                "sampled: remove the weight or set train_split"
            )
        try:
            manifest = load_manifest(t.shards)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"data.tasks[{t.name}].shards: {err}") from None
        if t.name not in manifest["tasks"]:
            raise ValueError(
                f"data.tasks[{t.name}].shards={t.shards} holds task(s) {sorted(manifest['tasks'])}, not {t.name!r}"
            )
        return manifest

    def _label_names(self, name: str) -> list[str]:
        spec = get_task(name)
        from_shards = list(self.manifests[name]["tasks"][name].get("label_names") or [])
        if spec.labels and from_shards and list(spec.labels) != from_shards:
            raise ValueError(
                f"Label order of {name} in {self.tasks[name].shards}/manifest.json ({from_shards}) differs from the "
                f"catalogue's canonical order ({list(spec.labels)}); rebuild the shards with `python -m shards build`."
            )
        return list(spec.labels) or from_shards

    def _eval_sets(self, stage: str) -> list[tuple[str, str, list[str]]]:
        """[(task, lang, shard urls)] in a fixed order: one named loader each."""
        sets = []
        for name, t in self.tasks.items():
            split = t.val_split if stage == "val" else t.test_split
            if split is None:
                continue
            langs = (t.val_langs or ["en"]) if stage == "val" else (t.test_langs or self._langs(name, split))
            for lang in langs:
                try:
                    urls = [str(p) for p in select_shards(self.manifests[name], split, lang=lang, task=name)]
                except ValueError as err:
                    raise ValueError(f"data.tasks[{name}].{stage}_langs: {err}") from None
                sets.append((name, lang, urls))
        return sets

    def _langs(self, name: str, split: str) -> list[str]:
        langs = list(self.manifests[name]["counts"].get(split, {}))
        if not langs:
            raise ValueError(f"data.tasks[{name}]: split {split!r} is not in {self.tasks[name].shards}")
        return sorted(langs, key=lambda lang: (lang != "en", lang))

    # -- values linked into the model -------------------------------------------------------------------
    @property
    def task_info(self) -> dict[str, dict[str, Any]]:
        """Per task: label names, whether it trains, its loss weight (linked to model.tasks)."""
        return {
            name: {"labels": self.label_names[name], "train": t.train_split is not None, "loss_weight": t.loss_weight}
            for name, t in self.tasks.items()
        }

    def setup(self, stage: str) -> None:
        """Record the run's controls (``controls.json`` in the run directory), so its results say what was shuffled."""
        trainer = self.trainer
        if self.controls and trainer is not None and trainer.is_global_zero and stage == "fit":
            root = Path(trainer.default_root_dir)
            root.mkdir(parents=True, exist_ok=True)
            (root / "controls.json").write_text(json.dumps(self.controls, indent=1) + "\n")

    @property
    def controls(self) -> dict[str, dict[str, Any]]:
        """Per task with a control: what it changes (recorded next to the run's results)."""
        return {
            name: {
                "shuffle_labels": True,
                "fields": list(shuffled_fields(name, get_task(name).family)),
                "seed": self.seed,
            }
            for name, t in self.tasks.items()
            if t.shuffle_labels
        }

    @property
    def train_tasks(self) -> list[str]:
        return [name for name, t in self.tasks.items() if t.train_split is not None]

    @property
    def evaluation(self) -> dict[str, Any]:
        """The evaluation sets in loader order and the seed (linked to model.evaluation)."""
        return {
            "val": [list(n) for n in self.eval_names("val")],
            "test": [list(n) for n in self.eval_names("test")],
            "seed": self.seed,
        }

    def eval_names(self, stage: str) -> list[tuple[str, str]]:
        return [(task, lang) for task, lang, _ in self.eval_sets[stage]]

    def eval_count(self, stage: str, task: str, lang: str) -> int:
        split = self.tasks[task].val_split if stage == "val" else self.tasks[task].test_split
        return sample_count(self.manifests[task], split, lang=lang, task=task)

    # -- loaders --------------------------------------------------------------------------------------
    @cached_property
    def tokenizer(self) -> Any:  # a transformers PreTrainedTokenizerBase (not imported here: jsonargparse would
        # import it for --help, reading this module's TYPE_CHECKING block)
        if not self.tokenizer_name:
            raise ValueError("data.tokenizer is empty: set model.core.text_model (it is linked) or data.tokenizer")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_name)

    def _decoder(self, name: str, strict: bool) -> SafeDecoder:
        spec = get_task(name)
        n_images = NUM_IMAGES[spec.modality]
        transform, size = None, None
        if n_images:
            if self.image_config is None:
                raise ValueError(f"Task {name} has images but model.core.vision_model is null: name a timm model")
            config = self.image_config
            train = not strict and self.tasks[name].augment
            if EvalImageTransform.supports(config):
                transform = TrainImageTransform(config) if train else EvalImageTransform(config)
            else:
                import timm.data

                transform = timm.data.create_transform(**config, is_training=train)
            # timm's own transforms get PIL images decoded down to the short side their resize goes to
            size = int(config["input_size"][-1] / config.get("crop_pct", 1.0))
        schema = family_fields(spec.family)
        n_labels = len(self.label_names[name]) if schema.indexed_labels else 0
        decoder = SafeDecoder(
            transform,
            draft_size=size,
            required=schema.required,
            num_images=n_images,
            num_labels=n_labels,
            strict=strict,
        )
        return adapt_decoder(self.manifests[name], name, decoder)  # img2dataset's tars are read where they lie

    def _collator(self, name: str, train: bool) -> Collator:
        return Collator(
            name,
            self.tokenizer,
            max_length=self.max_length,
            num_labels=len(self.label_names[name]),
            train=train,
            seed=self.seed,
        )

    def _loader(self, dataset: Any, workers: int, persistent: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=persistent and workers > 0,
            multiprocessing_context=self.multiprocessing_context if workers > 0 else None,
        )

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> MultiTaskLoader:
        if self._train_loader is not None:
            return self._train_loader
        if not self.train_tasks:
            raise ValueError("No task has a train_split: set data.tasks[*].train_split for at least one task")
        rank, world = self._rank()
        seed = self.seed * 1_000_003 + self._resume_batch_index  # a resumed run draws fresh shards and samples
        loaders = {}
        for name in self.train_tasks:
            urls = self._train_urls(name)
            collate: Any = self._collator(name, train=True)
            if self.tasks[name].shuffle_labels:
                collate = LabelShuffle(collate, shuffled_fields(name, get_task(name).family), self.seed)
            pipeline = train_pipeline(
                urls,
                collate=collate,
                decoder=self._decoder(name, strict=False),
                batch_size=self.tasks[name].batch_size or self.batch_size,
                seed=seed,
                rank=rank,
                world_size=world,
                shuffle_buffer=self.shuffle_buffer,
            )
            loaders[name] = self._loader(pipeline, self.train_workers(name, world), persistent=True)
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        self._train_loader = MultiTaskLoader(
            loaders, TaskSampler(self.weights(), self.seed), self.steps_per_epoch, accumulate
        )
        self._train_loader.batch_index = self._resume_batch_index
        return self._train_loader

    def train_workers(self, name: str, world: int) -> int:
        """Loader workers of a training task: ``num_workers``, at most its shards per rank (a few-shot split of one
        shard per language is read by one worker; more would start and read nothing)."""
        return min(self.num_workers, max(1, len(self._train_urls(name)) // max(1, world)))

    def _train_urls(self, name: str) -> list[str]:
        t = self.tasks[name]
        return [
            str(p)
            for lang in t.train_langs or [None]
            for p in select_shards(self.manifests[name], t.train_split, lang=lang, task=name)
        ]

    def _train_size(self, name: str) -> int:
        t = self.tasks[name]
        return sum(
            sample_count(self.manifests[name], t.train_split, lang=lang, task=name) for lang in t.train_langs or [None]
        )

    def weights(self) -> dict[str, float]:
        sizes = {n: self._train_size(n) for n in self.train_tasks}
        fixed = {n: self.tasks[n].weight for n in self.train_tasks}
        return task_weights(
            self.sampler_kind, sizes, temperature=self.temperature, example_cap=self.example_cap, fixed=fixed
        )

    def _check_eval_shards(self, stage: str) -> None:
        """Raises ``DataError`` naming the first evaluation shard of ``stage`` that changed (``changed_shard``)."""
        for task, _, urls in self.eval_sets[stage]:
            manifest = self.manifests[task]
            entries = {str(shard_location(manifest["_dir"], s["file"])): s for s in manifest["shards"]}
            for url in urls:
                if url not in self._hashed:
                    problem = changed_shard(url, entries.get(url))
                    if problem:
                        raise DataError(f"data.tasks[{task}]: {problem}")
                    self._hashed.add(url)

    def _eval_loaders(self, stage: str) -> list[DataLoader]:
        self._check_eval_shards(stage)
        rank, world = self._rank()
        return [
            self._loader(
                eval_pipeline(
                    urls,
                    collate=self._collator(task, train=False),
                    batch_size=self.eval_batch_size,
                    decoder=self._decoder(task, strict=True),
                    rank=rank,
                    world_size=world,
                    expected=self._shard_counts(task),
                ),
                self.eval_num_workers,
                persistent=self.persistent_workers and stage == "val",
            )
            for task, _, urls in self.eval_sets[stage]
        ]

    def _shard_counts(self, task: str) -> dict[str, int]:
        """Shard url -> manifest sample count: evaluation checks every shard reads exactly that many."""
        manifest = self.manifests[task]
        return {str(shard_location(manifest["_dir"], s["file"])): s["count"] for s in manifest["shards"]}

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    # -- checkpointed state: the task sequence position -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        batch_index = trainer.global_step * accumulate if trainer is not None else 0
        sampler = TaskSampler(self.weights(), self.seed).state_dict() if self.train_tasks else {}
        return {"sampler": sampler, "batch_index": batch_index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("sampler") or {}
        current = TaskSampler(self.weights(), self.seed).state_dict() if self.train_tasks else {}
        resuming = self.trainer is None or self.trainer.state.fn == "fit"  # evaluating a checkpoint draws no tasks
        if saved and saved != current and resuming:  # the task sequence could not continue where it stopped
            raise ValueError(
                f"The checkpoint's task sampler {saved} differs from this run's {current}: resume with the same "
                "data.tasks, data.sampler and seed, or start a new phase from it with model.init_from."
            )
        self._resume_batch_index = int(state.get("batch_index", 0))
        if self._train_loader is not None:
            self._train_loader.batch_index = self._resume_batch_index
