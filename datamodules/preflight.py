"""Preflight: check a run's data and config before any training step.

Runs automatically before ``train.py fit`` (fast mode) and on demand, with the same configs as the run::

    python -m datamodules.preflight --config configs/base.yaml --config configs/demo/base.yaml \\
        --config configs/demo/target_ve.yaml [--full]

Checks (errors stop the run; info lines are reported):

- every shard the run reads exists and looks like a whole tar (fast: size > 0 and a multiple of 512
  bytes); ``--full`` also compares sha256 and sample counts with the manifest (``shards.verify``);
- every training stream has at least ``data.num_workers × ranks`` shards (otherwise workers share shards);
- every evaluation set has samples;
- tasks sharing a head have the same label vocabulary, in this run and across phases (``init_from`` with
  an ``init_scope`` that carries heads: MNLI → XNLI keep one label order); ``init_scope`` names heads
  this run has;
- VQA answer-vocabulary coverage per test language (xGQA: answers outside the GQA vocabulary score 0);
- ``data.max_length`` (+ image tokens for single-stream fusion) fits the text model's position limit.
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from datamodules.datamodule import TransferDataModule
from lightning_modules.tasks import FAMILIES, get_task
from shards.manifest import is_url, open_shard
from shards.verify import verify_shard

TAR_BLOCK = 512
# Models whose position ids start after the padding index (RoBERTa family: padding_idx + 1 = 2).
POSITION_OFFSET_MODEL_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer"})


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


def preflight(dm: TransferDataModule, trainer_or_world: Any, model: Any = None, *, full: bool = False
              ) -> PreflightReport:  # fmt: skip
    """Every problem of this run's data and config (see the module docstring).

    Args:
        dm: The run's data module.
        trainer_or_world: A Trainer (ranks = nodes × devices) or the number of ranks.
        model: The run's TransferModule (heads, init_from, fusion); None checks the data alone.
        full: Hash every shard and count its samples (slow on real data) instead of the fast check.
    """
    world = trainer_or_world if isinstance(trainer_or_world, int) else _world(trainer_or_world)
    report = PreflightReport()
    for check in (_shards, _train_streams, _eval_sets, _vocabularies, _vqa_coverage, _positions):
        check(dm, model, world, full, report)
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


def _shards(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
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
            report.errors.append(f"data.tasks[{name}]: {path} is missing (listed in the manifest); rebuild the "
                                 "shards with `python -m shards build`")  # fmt: skip
        elif path.stat().st_size == 0 or path.stat().st_size % TAR_BLOCK:
            report.errors.append(f"data.tasks[{name}]: {path} is truncated ({path.stat().st_size} bytes, not whole "
                                 "512-byte tar blocks); rebuild it")  # fmt: skip
    mode = "sha256 + counts" if full else "exist + size (--full hashes them)"
    report.info.append(f"shards: {n - remote} checked ({mode})" + (f", {remote} remote not checked" if remote else ""))


def _train_streams(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
    streams = max(1, dm.num_workers) * world
    for name in dm.train_tasks:
        split = dm.tasks[name].train_split
        n = sum(1 for s in dm.manifests[name]["shards"] if s["split"] == split and s["task"] == name)
        if n == 0:
            have = sorted(dm.manifests[name]["counts"])
            report.errors.append(f"data.tasks[{name}].train_split={split!r}: no such split in {dm.tasks[name].shards}; "
                                 f"it has {have}")  # fmt: skip
        elif n < streams:
            report.errors.append(
                f"data.tasks[{name}]: the train split {split!r} has {n} shard(s) but data.num_workers="
                f"{dm.num_workers} × {world} rank(s) read {streams} streams; lower data.num_workers to "
                f"{max(0, n // world)} or rebuild with a smaller --max-per-shard"
            )


def _eval_sets(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
    for stage in ("val", "test"):
        for task, lang in dm.eval_names(stage):
            if dm.eval_count(stage, task, lang) == 0:
                report.errors.append(f"data.tasks[{task}]: the {stage} set for {lang!r} is empty; drop {lang!r} "
                                     f"from data.tasks[{task}].{stage}_langs or rebuild the shards")  # fmt: skip


def _vocabularies(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
    by_head: dict[str, tuple[str, list[str]]] = {}
    for name in dm.tasks:
        head, labels = get_task(name).head, dm.label_names[name]
        if head in by_head and by_head[head][1] != labels:
            other = by_head[head][0]
            report.errors.append(f"data.tasks: {other} and {name} share head {head!r} but their label vocabularies "
                                 f"differ ({len(by_head[head][1])} vs {len(labels)} labels, or their order); "
                                 "rebuild both from one vocabulary")  # fmt: skip
        by_head.setdefault(head, (name, labels))
    if model is not None:
        _init_scope(model, {h: labels for h, (_, labels) in by_head.items()}, report)


def _init_scope(model: Any, labels: dict[str, list[str]], report: PreflightReport) -> None:
    hp = model.hparams
    if not hp.get("init_from"):
        return
    scope, heads = hp.init_scope, sorted(model.heads)
    names = [] if scope == "core" else heads if scope == "all" else [scope] if isinstance(scope, str) else scope
    unknown = [n for n in names if n not in heads]
    for name in unknown:
        hint = " (a head family: heads are named by the catalogue's `head` field)" if name in FAMILIES else ""
        report.errors.append(f"model.init_scope names head {name!r}{hint}, which this run does not have; valid: "
                             f"core, all, or a list of {heads}")  # fmt: skip
    if unknown or not names:
        return
    if not Path(hp.init_from).is_file():
        report.errors.append(f"model.init_from={hp.init_from}: no such file; point it at an earlier phase's checkpoint")
        return
    from lightning_modules.checkpoints import read_checkpoint

    parent_tasks = read_checkpoint(hp.init_from).get("hyper_parameters", {}).get("tasks") or {}
    for task, info in parent_tasks.items():
        head = get_task(task).head
        if head in names and head in labels and list(info.get("labels", [])) != labels[head]:
            report.errors.append(f"model.init_scope carries head {head!r}, but {task} in model.init_from was trained "
                                 "with another label order/vocabulary than this run; rebuild the shards with the "
                                 "parent's vocabulary or use init_scope: core")  # fmt: skip


def _vqa_coverage(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
    for task, lang, urls in dm.eval_sets["test"]:
        if get_task(task).family != "vqa":
            continue
        total = inside = 0
        for url in urls:
            for record in _json_records(url):
                total += 1
                inside += bool(record.get("labels"))
        share = 100.0 * inside / total if total else float("nan")
        report.info.append(f"{task}/{lang}: {share:.1f}% of {total} test answers inside the answer vocabulary")


def _json_records(url: str) -> Iterator[dict]:
    """The json members of a shard; for a local file random access mode seeks over the images."""
    try:
        with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|" if is_url(url) else "r:") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    yield json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, ValueError):
        return  # _shards reports the broken file


def _positions(dm: TransferDataModule, model: Any, world: int, full: bool, report: PreflightReport) -> None:
    config = model.core.text.config if model is not None else AutoConfig.from_pretrained(dm.tokenizer_name)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return
    offset = config.pad_token_id + 1 if config.model_type in POSITION_OFFSET_MODEL_TYPES else 0
    image_tokens = _image_tokens(dm, model)
    need = dm.max_length + image_tokens
    if need > limit - offset:
        report.errors.append(
            f"data.max_length={dm.max_length} + {image_tokens} image tokens needs {need} positions but the text "
            f"model has {limit - offset} (max_position_embeddings {limit} - offset {offset}); lower data.max_length "
            f"to {(limit - offset - image_tokens) // 8 * 8}"  # a multiple of 8 (lightning_modules/settings.py)
        )
    report.info.append(f"positions: {need} of {limit - offset} used ({image_tokens} image tokens)")


def _image_tokens(dm: TransferDataModule, model: Any) -> int:
    """Image tokens prepended to the text (single-stream fusion with an image task), else 0."""
    if not any(get_task(t).modality != "text" for t in dm.tasks) or dm.vision_model is None:
        return 0
    if model is not None:
        if model.core.fusion != "single_stream" or model.core.vision is None:
            return 0
        vision = model.core.vision
    else:
        from lightning_modules.core import build_vision_encoder

        with torch.device("meta"):
            vision = build_vision_encoder(dm.vision_model, pretrained=False, kwargs=dm.vision_kwargs)
    patches = getattr(getattr(vision, "patch_embed", None), "num_patches", None)
    return 0 if patches is None else int(patches) + int(getattr(vision, "num_prefix_tokens", 0))


def run_preflight(dm: TransferDataModule, trainer: Any, model: Any = None, *, full: bool = False) -> PreflightReport:
    """Preflight, printed on rank 0; raises ``ValueError`` listing every problem."""
    report = preflight(dm, trainer, model, full=full)
    if getattr(trainer, "is_global_zero", True):
        print(report.text(), file=sys.stderr)
    report.raise_on_errors()
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m datamodules.preflight [--full] --config ...``: the run's configs, as for ``train.py fit``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    full = "--full" in argv
    argv = [a for a in argv if a != "--full"]
    from train import cli_main

    cli = cli_main(argv, run=False)
    report = preflight(cli.datamodule, cli.trainer, cli.model, full=full)
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
