"""Preflight, data half: check a run's data before any training step.

Runs automatically before ``train.py fit`` (fast mode) and on demand, with the same configs as the run::

    python train.py preflight --config configs/base.yaml --config configs/demo/base.yaml \\
        --config configs/demo/target_ve.yaml [--full]

The model half (``init_scope`` vs heads and the parent's vocabularies, position limits) lives with the
model in ``lightning_modules/preflight.py``; ``train.run_preflight`` runs both. Data checks (errors stop the
run; info lines are reported):

- every shard the run reads exists and looks like a whole tar (fast: size > 0 and a multiple of 512
  bytes); ``--full`` also compares sha256 and sample counts with the manifest (``shards.verify``);
- every training task has a shard per rank in the languages it reads (workers beyond its shards stay idle
  and are not started);
- every evaluation set has samples;
- tasks sharing a head have the same label vocabulary in this run;
- VQA answer-vocabulary coverage per test language (xGQA: answers outside the GQA vocabulary score 0).

Before either half, right after the config is parsed, ``train.py`` checks that every pretrained weight source
can be reached (``lightning_modules/weights.py``): nothing is built until it can.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.catalogue import get_task
from contracts.fields import family_fields
from datamodules.datamodule import TransferDataModule
from shards.manifest import TarReadError, is_url, tar_samples
from shards.verify import verify_shard

TAR_BLOCK = 512


@dataclass
class PreflightReport:
    errors: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self) -> str:
        lines = [f"preflight: {len(self.errors)} problem(s)"]
        lines += [f"  ERROR {e}" for e in self.errors] + [f"  {i}" for i in self.info]
        return "\n".join(lines)

    def raise_on_errors(self) -> None:
        if self.errors:
            raise ValueError(self.text())


def preflight(dm: TransferDataModule, trainer_or_world: Any, *, full: bool = False) -> PreflightReport:
    """Every problem of this run's data (see the module docstring).

    Args:
        dm: The run's data module.
        trainer_or_world: A Trainer (ranks = nodes × devices) or the number of ranks.
        full: Hash every shard and count its samples (slow on real data) instead of the fast check.
    """
    world = trainer_or_world if isinstance(trainer_or_world, int) else _world(trainer_or_world)
    report = PreflightReport()
    for check in (_shards, _train_streams, _eval_sets, _vocabularies, _vqa_coverage):
        check(dm, world, full, report)
    return report


def _world(trainer: Any) -> int:
    return int(trainer.num_nodes) * int(trainer.num_devices)


def _used_shards(dm: TransferDataModule) -> Iterator[tuple[str, Path | str, dict]]:
    for name, t in dm.tasks.items():
        manifest = dm.manifests[name]
        splits = {t.train_split, t.val_split, t.test_split} - {None}
        for entry in manifest["shards"]:
            if entry["split"] in splits and entry["task"] == name:
                directory = manifest["_dir"]
                yield name, directory if is_url(directory) else Path(directory), entry


def _shards(dm: TransferDataModule, world: int, full: bool, report: PreflightReport) -> None:
    n = remote = 0
    for name, directory, entry in _used_shards(dm):
        n += 1
        if is_url(directory):
            remote += 1  # no cheap size check through a URL; reading it is the check
            continue
        if full:
            report.errors += [f"data.tasks[{name}]: {p}" for p in verify_shard(directory, entry)]
            continue
        path = directory / entry["file"]
        if not path.is_file():
            report.errors.append(
                f"data.tasks[{name}]: {path} is missing (listed in the manifest); rebuild the "
                "shards with `python -m shards build`"
            )
        elif path.stat().st_size == 0 or path.stat().st_size % TAR_BLOCK:
            report.errors.append(
                f"data.tasks[{name}]: {path} is truncated ({path.stat().st_size} bytes, not whole "
                "512-byte tar blocks); rebuild it"
            )
    mode = "sha256 + counts" if full else "exist + size (--full hashes them)"
    report.info.append(f"shards: {n - remote} checked ({mode})" + (f", {remote} remote not checked" if remote else ""))


def _train_streams(dm: TransferDataModule, world: int, full: bool, report: PreflightReport) -> None:
    """Each training task's shards, those of the languages the run reads (``train_langs``): at least one per rank;
    fewer than ``data.num_workers`` per rank are read by as many workers as there are shards (``train_workers``)."""
    for name in dm.train_tasks:
        t = dm.tasks[name]
        split = t.train_split
        if not any(s["split"] == split and s["task"] == name for s in dm.manifests[name]["shards"]):
            have = sorted(dm.manifests[name]["counts"])
            report.errors.append(
                f"data.tasks[{name}].train_split={split!r}: no such split in {t.shards}; it has {have}"
            )
            continue
        try:
            n = len(dm._train_urls(name))
        except ValueError as err:  # a train_langs language without shards: the message names the split and language
            report.errors.append(f"data.tasks[{name}].train_langs: {err}")
            continue
        langs = f" ({', '.join(t.train_langs)})" if t.train_langs else ""
        if n < world:
            report.errors.append(
                f"data.tasks[{name}]: the train split {split!r}{langs} has {n} shard(s) for {world} ranks: every rank "
                "needs one; rebuild with a smaller --max-per-shard, or train on fewer devices"
            )
        elif dm.train_workers(name, world) < dm.num_workers:
            report.info.append(
                f"data.tasks[{name}]: the train split {split!r}{langs} has {n} shard(s): read by "
                f"{dm.train_workers(name, world)} worker(s) per rank (data.num_workers="
                f"{dm.num_workers})"
            )


def _eval_sets(dm: TransferDataModule, world: int, full: bool, report: PreflightReport) -> None:
    for stage in ("val", "test"):
        for task, lang in dm.eval_names(stage):
            if dm.eval_count(stage, task, lang) == 0:
                report.errors.append(
                    f"data.tasks[{task}]: the {stage} set for {lang!r} is empty; drop {lang!r} "
                    f"from data.tasks[{task}].{stage}_langs or rebuild the shards"
                )


def _vocabularies(dm: TransferDataModule, world: int, full: bool, report: PreflightReport) -> None:
    by_head: dict[str, tuple[str, list[str]]] = {}
    for name in dm.tasks:
        head, labels = get_task(name).head, dm.label_names[name]
        if head in by_head and by_head[head][1] != labels:
            other = by_head[head][0]
            report.errors.append(
                f"data.tasks: {other} and {name} share head {head!r} but their label vocabularies "
                f"differ ({len(by_head[head][1])} vs {len(labels)} labels, or their order); "
                "rebuild both from one vocabulary"
            )
        by_head.setdefault(head, (name, labels))


def _vqa_coverage(dm: TransferDataModule, world: int, full: bool, report: PreflightReport) -> None:
    for task, lang, urls in dm.eval_sets["test"]:
        if not family_fields(get_task(task).family).soft_labels:
            continue
        total = inside = 0
        for url in urls:
            for record in _json_records(url):
                total += 1
                inside += bool(record.get("labels"))
        share = 100.0 * inside / total if total else float("nan")
        report.info.append(f"{task}/{lang}: {share:.1f}% of {total} test answers inside the answer vocabulary")


def _json_records(url: str) -> Iterator[dict]:
    """The json members of a shard (only those are read into memory)."""
    try:
        for sample in tar_samples(url, keep=lambda name: name.endswith(".json")):
            if "json" in sample:
                yield json.loads(sample["json"])
    except (TarReadError, ValueError):
        return  # _shards reports the broken file
