"""The study YAML, parsed by jsonargparse into dataclasses (unknown keys and wrong types fail with the key).

The checks jsonargparse cannot express (task names in the catalogue, the baseline among the conditions,
directory-safe names) follow in ``validate``.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentParser

from contracts.catalogue import get_task
from studies.table import find_overlaps

Keep = Literal["best", "last", "none"]
PHASES = ("start", "intermediate", "target", "translate_test", "few_shot")


class StudyError(Exception):
    """A study definition or run failed; the message says which key or run, and what to do."""


@dataclass
class StartSpec:
    """The optional phase-1 run of each seed."""

    configs: list[str] = field(default_factory=list)
    """``--config`` files stacked after the study's ``base`` files."""
    overrides: list[str] = field(default_factory=list)
    """CLI overrides for these runs only, after the study's shared ``overrides``."""


@dataclass
class ConditionSpec:
    """An intermediate condition; no ``configs`` means no intermediate phase (the baseline)."""

    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    """Its intermediate tasks (catalogue names): the overlap marks."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free per-condition metadata, passed through to study.json (e.g. ``control: negative``)."""
    control: str = ""
    """``positive`` or ``negative`` marks a control condition: its own block in study.md."""


@dataclass
class TranslateTest:
    """IGLUE's translate-test protocol: the target run's checkpoint tested on machine-translated test data."""

    split: str = "translate_test"
    """The split name the converters give the machine-translated test files."""
    task: str | None = None
    """The task whose shards hold that split; default: the target's task."""


@dataclass
class FewShot:
    """IGLUE's few-shot protocol: from the target run's checkpoint, train on N shots of one language."""

    shots: list[int]
    langs: list[str]
    """One run per (shot count, language), as IGLUE reports them."""
    train_split: str = "train_{shots}"
    """Split name of the N-shot training data; ``{shots}`` is replaced by N."""
    val_split: str = "dev"
    """The dev split the checkpoint is selected on (IGLUE: XVNLI ``translate_dev``, xGQA ``dev``)."""
    val_lang: str | None = None
    """Language of that dev split; default: the shot language (``en`` selects on English dev)."""
    test_split: str = "test"
    task: str | None = None
    """The task whose shards hold the few-shot splits; default: the target's task."""
    conditions: list[str] = field(default_factory=list)
    """Run few-shot only from these conditions' target runs (default: every condition)."""
    overrides: list[str] = field(default_factory=list)
    """CLI overrides of the few-shot runs (steps, learning rate), after the target's."""


@dataclass
class TargetSpec:
    """A target: English training task(s), zero-shot test of ``task``, optional IGLUE protocols."""

    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    task: str = ""
    """The evaluated task; default: the target's name."""
    train_tasks: list[str] | None = None
    """Its English training tasks; default: ``[task]``."""
    translate_test: TranslateTest | None = None
    few_shot: FewShot | None = None


@dataclass
class Resources:
    """What one run of a phase needs: SLURM / local-gpus resources and the cost-plan figures."""

    gpus: int = 1
    """GPUs per node (one DDP process per GPU)."""
    nodes: int = 1
    cpus_per_gpu: int = 8
    mem_gb: float | None = None
    time_min: int = 24 * 60
    partition: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)
    """Extra sbatch options, e.g. ``{account: abc, constraint: a100, qos: normal}``."""
    seconds_per_step: float | None = None
    """Cost plan: wall seconds per optimizer step of one run (measure with a short run; see docs/study.md)."""
    checkpoint_gb: float | None = None
    """Disk plan: size of one weights-only checkpoint of this phase, what a finished run keeps (a run in training
    holds ~3x that: its best and last carry AdamW's moments until the fit ends)."""


@dataclass
class Retention:
    """What stays on disk once every run that starts from a run's checkpoints has finished."""

    keep: Keep = "best"
    """Target runs: keep ``best``, ``last`` or ``none`` of their checkpoints."""
    keep_intermediate: Keep = "last"
    """Start and intermediate runs (their final weights are what they hand on)."""
    keep_protocol: Keep = "none"
    """Translate-test and few-shot runs: a study reads their outcomes and results, not their weights."""
    keep_seeds: list[int] | None = None
    """Only runs of these seeds keep a checkpoint (as the keys above say); runs of other seeds keep none once their
    dependents have finished. Default: every seed. Results are the same either way: a study reads outcomes and
    results, and no checkpoint goes before every run starting from it has finished."""

    def keep_for(self, phase: str, seed: int | None = None) -> Keep:
        """Which checkpoint a finished run of ``phase`` (and ``seed``) keeps: the one rule of the runner's retention
        (``studies.runs.apply_retention``) and the dry run's disk plan (``studies.plan.cost_plan``)."""
        if self.keep_seeds is not None and seed is not None and seed not in self.keep_seeds:
            return "none"
        if phase in ("start", "intermediate"):
            return self.keep_intermediate
        return self.keep_protocol if phase in ("translate_test", "few_shot") else self.keep


@dataclass
class Significance:
    """How study deltas are tested: paired bootstrap over items and seeds, then a correction over the grid."""

    correction: str = "holm"
    """``holm`` (Holm–Bonferroni) or ``bh`` (Benjamini–Hochberg)."""
    resamples: int = 2000
    """Bootstrap resamples per delta."""
    effects: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0])
    """Deltas (points) the power estimate sizes the seeds for."""


@dataclass
class Budget:
    """Equal budgets: appended to every intermediate run after all other overrides."""

    intermediate_steps: int | None = None
    """``trainer.max_steps`` of every intermediate run."""
    batch_size: int | None = None
    """``data.batch_size`` of every intermediate run."""


@dataclass
class Analysis:
    """Why it transfers (``study.py analyze``, docs/analysis.md): per-language, per-checkpoint and LogME analysis."""

    enabled: bool = False
    """Store each checkpoint's diagnostics when its run finishes (before retention) and end study.md with the
    analysis; ``study.py analyze`` works either way."""
    probe: str | None = None
    """Shard directory of a parallel test set (same item ids in English and the other languages) for the
    checkpoint diagnostics; default: the first target's test task."""
    probe_split: str = "test"
    probe_items: int = 200
    """Parallel items per language the diagnostics read."""
    logme_items: int = 256
    """English training items per target whose features LogME scores."""


@dataclass
class Study:
    """A study YAML."""

    conditions: dict[str, ConditionSpec]
    targets: dict[str, TargetSpec]
    name: str = ""
    """W&B group; default: the file name."""
    out: str = ""
    """Output directory; default ``runs/studies/<name>``."""
    base: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str = "none"
    start: StartSpec | None = None
    train_cmd: str | list[str] | None = None
    resources: dict[str, Resources] = field(default_factory=dict)
    """Per phase (``start``, ``intermediate``, ``target``, ``translate_test``, ``few_shot``) or ``default``."""
    retention: Retention = field(default_factory=Retention)
    significance: Significance = field(default_factory=lambda: Significance())
    """Paired-bootstrap settings of the report (``studies/significance.py``)."""
    budget: Budget = field(default_factory=lambda: Budget())
    """Equal budgets for every intermediate phase."""
    analysis: Analysis = field(default_factory=lambda: Analysis())
    """The analysis of why (and for which languages) conditions transfer (studies/analysis.py)."""
    hand_on: Literal["final", "best"] = "final"
    """Which checkpoint of a start or intermediate run seeds the next phase: ``final`` (the weights at its last
    optimizer step: the phase trains its full, equal budget, as in STILTs' fixed intermediate schedule) or ``best``
    (selected on the phase's own English dev score: early stopping on the intermediate task). Recorded in every
    child's lineage (``lineage.parent``: path, step, final, selected)."""
    scale: list[str] = field(default_factory=list)
    """Arguments appended last to every run: set by ``--rehearse`` from configs/rehearsal.yaml, not in a study."""

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/studies/{self.name}")

    @property
    def train_cmd_list(self) -> list[str]:
        if isinstance(self.train_cmd, str):
            return shlex.split(self.train_cmd)
        return list(self.train_cmd or [])

    def resources_for(self, phase: str) -> Resources:
        """The phase's resources (merged over ``default`` when parsed from YAML), else ``default``, else the
        defaults."""
        return self.resources.get(phase) or self.resources.get("default") or Resources()

    def config_files(self) -> list[str]:
        """Every ``--config`` file the study uses, in order of first use."""
        entries = [self.start] if self.start else []
        entries += [*self.conditions.values(), *self.targets.values()]
        return list(dict.fromkeys([*self.base, *(c for e in entries for c in e.configs)]))

    def overlaps(self) -> dict[str, list[str]]:
        """Condition -> targets whose training data its intermediate data overlaps (``studies.table.find_overlaps``)."""
        targets = {name: [t.task, *(t.train_tasks or [])] for name, t in self.targets.items()}
        return find_overlaps({name: c.tasks for name, c in self.conditions.items()}, targets)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Study, "study")
    return parser


def parse_study(data: dict[str, Any], default_name: str = "study", where: str = "<study>") -> Study:
    """Parse and validate a study mapping (the loaded YAML); errors name the key and the fix."""
    if not isinstance(data, dict):
        raise StudyError(f"{where}: a study is a mapping with `conditions` and `targets`, got {data!r}")
    if not data.get("conditions") or not data.get("targets"):
        raise StudyError(f"{where}: a study needs `conditions` and `targets` (mappings of name -> entry).")
    raw_resources = copy.deepcopy(data.get("resources")) or {}  # as written: the parser fills every default in
    for key in ("conditions", "targets"):  # `none:` alone (null) is the natural YAML for an empty entry
        if isinstance(data[key], dict):
            data = {**data, key: {k: ({} if v is None else v) for k, v in data[key].items()}}
    parser = _parser()
    try:
        study: Study = parser.instantiate(parser.parse_object({"study": data})).study
    except Exception as err:  # jsonargparse's ArgumentError names the key; keep its text, drop the traceback
        raise StudyError(f"{where}: {err}".replace("study.", "")) from None
    study.name = study.name or default_name
    study.resources = merged_resources(raw_resources, study.resources)
    validate(study)
    return study


def merged_resources(raw: dict[str, Any], parsed: dict[str, Resources]) -> dict[str, Resources]:
    """Each phase's entry on top of ``default``: a phase overrides the keys it names (``sbatch`` key by key) and
    takes every other key (partition, account, memory, ...) from ``default``. ``raw``: the YAML's mapping."""
    if not isinstance(raw, dict) or not raw:
        return parsed
    default = dict(raw.get("default") or {})
    merged = {}
    for phase, entry in raw.items():
        entry = dict(entry or {})
        sbatch = {**(default.get("sbatch") or {}), **(entry.get("sbatch") or {})}
        values = {**default, **entry, "sbatch": sbatch}
        merged[phase] = Resources(**{k: v for k, v in values.items() if k in Resources.__dataclass_fields__})
    return merged


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"Study config {str(path)!r} not found (see configs/studies/ for the shipped studies).")
    return parse_study(yaml.safe_load(path.read_text()) or {}, default_name=path.stem, where=str(path))


def _check_tasks(tasks: list[str], where: str) -> None:
    for task in tasks:
        try:
            get_task(task)
        except KeyError as err:
            raise StudyError(f"`{where}`: {err.args[0]}") from None


def _check_name(kind: str, name: str, reserved: str) -> None:
    """Names become directories ``<out>/<condition>/seed<k>/<target>``; protocol runs add ``.<protocol>``."""
    if name == reserved or not name or "/" in name or "." in name:
        raise StudyError(
            f"Invalid {kind} name {name!r}: names are directory names; {reserved!r}, '/' and '.' are not allowed."
        )


def validate(study: Study) -> None:
    """The checks beyond types: catalogue task names, names, baseline, seeds, phases of ``resources``."""
    for name, cond in study.conditions.items():
        _check_name("condition", name, "start")
        _check_tasks(cond.tasks, f"conditions.{name}.tasks")
        if cond.control not in ("", "positive", "negative"):
            raise StudyError(f"`conditions.{name}.control` must be positive or negative, got {cond.control!r}")
        if cond.configs and not cond.tasks:
            raise StudyError(
                f"`conditions.{name}` has configs but no `tasks`: list its intermediate tasks (overlap marks)."
            )
    for name, target in study.targets.items():
        _check_name("target", name, "intermediate")
        target.task = target.task or name
        target.train_tasks = [target.task] if target.train_tasks is None else target.train_tasks
        _check_tasks([target.task], f"targets.{name}.task")
        _check_tasks(target.train_tasks, f"targets.{name}.train_tasks")
        if not target.configs:
            raise StudyError(f"`targets.{name}` needs `configs` (e.g. configs/target/{target.task}.yaml)")
        few = target.few_shot
        if few and (not few.shots or not few.langs):
            raise StudyError(f"`targets.{name}.few_shot` needs `shots` and `langs` (e.g. shots: [1, 5], langs: [de])")
        unknown = [c for c in (few.conditions if few else []) if c not in study.conditions]
        if unknown:
            valid = list(study.conditions)
            raise StudyError(f"`targets.{name}.few_shot.conditions`: unknown {unknown}; valid: {valid}")
    if study.baseline not in study.conditions:
        names = ", ".join(study.conditions)
        raise StudyError(
            f"Baseline condition {study.baseline!r} is not under `conditions` ({names}); "
            f"add `{study.baseline}: {{}}` or set `baseline:`."
        )
    if study.significance.correction not in ("holm", "bh"):
        raise StudyError(f"`significance.correction` must be holm or bh, got {study.significance.correction!r}")
    if not study.seeds:
        raise StudyError("`seeds` must be a non-empty list of integers")
    if len(set(study.seeds)) != len(study.seeds):
        raise StudyError(f"`seeds` lists a seed twice: {study.seeds}")
    stray = [s for s in study.retention.keep_seeds or [] if s not in study.seeds]
    if stray:
        raise StudyError(f"`retention.keep_seeds`: {stray} not among the study's `seeds` {study.seeds}")
    if study.start is not None and not study.start.configs:
        raise StudyError("`start` needs `configs` (the phase-1 run's config files); remove `start` to skip it.")
    bad = sorted(set(study.resources) - {*PHASES, "default"})
    if bad:
        raise StudyError(f"`resources`: unknown phase(s) {bad}; valid: {', '.join((*PHASES, 'default'))}")
