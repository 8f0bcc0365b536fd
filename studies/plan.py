"""The runs of a study in dependency order, their ``train.py`` commands, and the cost / disk plan."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from studies.spec import PHASES, Study, StudyError

TRAIN_CMD_ENV = "MMSTILTS_TRAIN_CMD"
PROTOCOLS = ("zero_shot", "translate_test", "few_shot")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One ``train.py`` invocation of the study."""

    name: str
    """Path of the run directory below the study's ``out``, e.g. ``mnli/seed0/xvnli``."""
    phase: str
    """``start``, ``intermediate``, ``target``, ``translate_test`` or ``few_shot``."""
    seed: int
    configs: tuple[str, ...]
    overrides: tuple[str, ...]
    run_dir: Path
    parent: Run | None = None
    """The run whose weights this run starts from."""
    condition: str = ""
    target: str = ""
    data_tasks: tuple[Mapping[str, Any], ...] | None = field(default=None, compare=False)
    """Protocol runs: the ``data.tasks`` list replacing the target config's (an inline ``--config``)."""
    shots: int | None = None
    lang: str = ""
    hand_on: str = "final"
    """Which checkpoint of a start/intermediate parent this run starts from (the study's ``hand_on``)."""

    @property
    def protocol(self) -> str:
        return {"translate_test": "translate_test", "few_shot": "few_shot"}.get(self.phase, "zero_shot")

    @property
    def subcommand(self) -> str:
        return "test" if self.phase == "translate_test" else "fit"

    @property
    def init_key(self) -> str:
        """Which of the parent's checkpoints this run starts from: a target run's best (its selected model, which
        translate-test and few-shot continue); a start or intermediate run's ``hand_on`` (final by default)."""
        if self.parent is not None and self.parent.phase == "target":
            return "best_ckpt"
        return "best_ckpt" if self.hand_on == "best" else "final_ckpt"


def plan(
    study: Study, only: Sequence[str] = (), targets: Sequence[str] = (), protocols: Sequence[str] = PROTOCOLS
) -> list[Run]:
    """The runs in dependency order: start runs, then per condition and seed its intermediate run, its targets
    and their protocol runs. Each (condition, seed) intermediate run is the parent of every target run of it.

    Args:
        study: the parsed study.
        only: restrict to these conditions (all if empty).
        targets: restrict to these targets (all if empty).
        protocols: which of ``zero_shot``, ``translate_test``, ``few_shot`` to plan (target runs always).
    """
    conditions = _select(only, study.conditions, "--only")
    target_names = _select(targets, study.targets, "--targets")
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise StudyError(f"--protocols: unknown {bad}; valid: {', '.join(PROTOCOLS)}")
    out = study.out_dir
    runs: list[Run] = []
    starts: dict[int, Run] = {}
    if study.start:
        for seed in study.seeds:
            start = Run(
                f"start/seed{seed}",
                "start",
                seed,
                tuple(study.start.configs),
                tuple(study.start.overrides),
                out / "start" / f"seed{seed}",
                hand_on=study.hand_on,
            )
            starts[seed] = start
            runs.append(start)
    for condition in conditions:
        spec = study.conditions[condition]
        for seed in study.seeds:
            parent = starts.get(seed)
            prefix = f"{condition}/seed{seed}"
            if spec.configs:
                parent = Run(
                    f"{prefix}/intermediate",
                    "intermediate",
                    seed,
                    tuple(spec.configs),
                    tuple(spec.overrides),
                    out / prefix / "intermediate",
                    parent,
                    condition,
                    hand_on=study.hand_on,
                )
                runs.append(parent)
            for target in target_names:
                t = study.targets[target]
                run = Run(
                    f"{prefix}/{target}",
                    "target",
                    seed,
                    tuple(t.configs),
                    tuple(t.overrides),
                    out / prefix / target,
                    parent,
                    condition,
                    target,
                    hand_on=study.hand_on,
                )
                runs.append(run)
                runs += protocol_runs(study, run, protocols)
    return runs


def protocol_runs(study: Study, target_run: Run, protocols: Sequence[str]) -> list[Run]:
    """Translate-test and few-shot runs starting from one target run's best checkpoint."""
    t = study.targets[target_run.target]
    tasks = target_tasks(study, target_run)
    runs = []
    base = dict(
        seed=target_run.seed,
        configs=target_run.configs,
        parent=target_run,
        condition=target_run.condition,
        target=target_run.target,
    )
    if t.translate_test and "translate_test" in protocols:
        task = t.translate_test.task or t.task
        data = [
            dict(e, test_split=t.translate_test.split)
            if e.get("name") == task
            else {k: v for k, v in e.items() if k != "test_split"}
            for e in tasks
        ]
        name = f"{target_run.name}.translate_test"
        runs.append(
            Run(
                name,
                "translate_test",
                overrides=target_run.overrides,
                run_dir=study.out_dir / name,
                data_tasks=tuple(data),
                **base,
            )
        )
    few = t.few_shot
    if few and "few_shot" in protocols and (not few.conditions or target_run.condition in few.conditions):
        task = few.task or t.task
        entry = next((e for e in tasks if e.get("name") == task), None)
        shards = entry.get("shards") if entry else f"data/{task}"
        for shots in few.shots:
            for lang in few.langs:
                data = [
                    {
                        "name": task,
                        "shards": shards,
                        "train_split": few.train_split.format(shots=shots),
                        "train_langs": [lang],
                        "val_split": few.val_split,
                        "val_langs": [few.val_lang or lang],
                        "test_split": few.test_split,
                        "test_langs": [lang],
                    }
                ]
                name = f"{target_run.name}.fs{shots}.{lang}"
                runs.append(
                    Run(
                        name,
                        "few_shot",
                        overrides=(*target_run.overrides, *few.overrides),
                        run_dir=study.out_dir / name,
                        data_tasks=tuple(data),
                        shots=shots,
                        lang=lang,
                        **base,
                    )
                )
    return runs


def _select(names: Sequence[str], valid: Mapping[str, Any], flag: str) -> list[str]:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise StudyError(f"{flag}: unknown name(s) {', '.join(unknown)}. Valid: {', '.join(valid)}")
    return [n for n in valid if not names or n in names]


# ----------------------------------------------------------------------------------------------- commands


def train_command(study: Study) -> list[str]:
    """``$MMSTILTS_TRAIN_CMD``, else the YAML's ``train_cmd``, else ``python train.py`` (next to study.py)."""
    if os.environ.get(TRAIN_CMD_ENV):
        return shlex.split(os.environ[TRAIN_CMD_ENV])
    if study.train_cmd_list:
        return study.train_cmd_list
    return [sys.executable, str(REPO / "train.py")]


def run_overrides(study: Study, run: Run) -> list[str]:
    """A run's CLI overrides in order: the study's, the run's, the equal budget (intermediate runs), then the
    rehearsal's scale. The dry run's plan reads the same list (``run_config``)."""
    args = [*study.overrides, *run.overrides]
    if run.phase == "intermediate":  # equal budgets: after the configs' and overrides' values
        if study.budget.intermediate_steps:
            args += ["--trainer.max_steps", str(study.budget.intermediate_steps)]
        if study.budget.batch_size:
            args += ["--data.batch_size", str(study.budget.batch_size)]
    return args + list(study.scale)


def run_args(study: Study, run: Run, init_from: str | None) -> list[str]:
    """The arguments of one run: subcommand, stacked configs, overrides, then the run's own settings."""
    args = [run.subcommand]
    for config in (*study.base, *run.configs):
        args += ["--config", config]
    if run.data_tasks is not None:  # the protocol's own list, whole: jsonargparse merges a later list of the same
        # length entry by entry (keys the new entries leave out would survive), so the list is emptied first
        args += ["--config", json.dumps({"data": {"tasks": []}})]
        args += ["--config", json.dumps({"data": {"tasks": list(run.data_tasks)}})]
    args += run_overrides(study, run)
    args += ["--trainer.default_root_dir", str(run.run_dir), "--seed_everything", str(run.seed), "--phase", run.phase]
    if run.subcommand == "test":
        return args + (["--ckpt_path", init_from] if init_from else [])
    if init_from:
        args += ["--model.init_from", init_from]
        if run.phase == "few_shot":  # continue the target model, head included
            args += ["--model.init_scope", "all"]
    return args + ["--test_after_fit", "true" if run.phase in ("target", "few_shot") else "false"]


def run_env(study: Study, run: Run) -> dict[str, str]:
    """The environment of a run: W&B group = study, job type = phase, run name = the run's path."""
    env = dict(os.environ)
    env.update(WANDB_RUN_GROUP=study.name, WANDB_JOB_TYPE=run.phase, WANDB_NAME=f"{study.name}/{run.name}")
    tags = [t for t in (run.condition, run.target, f"seed{run.seed}", run.lang) if t]
    env["WANDB_TAGS"] = ",".join(filter(None, [env.get("WANDB_TAGS", ""), *tags]))
    return env


# ----------------------------------------------------------------------------------------------- resolved configs


def resolved(files: Sequence[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML a run's config files and ``--a.b=v`` overrides add up to (mappings merged, lists replaced).

    A light reading for the plan (steps, shard directories); train.py's parser stays the authority.
    """
    merged: dict[str, Any] = {}
    for path in files:
        try:
            data = json.loads(path) if path.lstrip().startswith("{") else _load_yaml(path)
        except (OSError, ValueError) as err:
            raise StudyError(f"Cannot read config {path!r}: {err}") from None
        _merge(merged, data or {})
    items = list(overrides)
    for i, item in enumerate(items):
        if not item.startswith("--"):
            continue
        key, sep, value = item[2:].partition("=")
        if not sep:
            value = items[i + 1] if i + 1 < len(items) and not items[i + 1].startswith("--") else "true"
        node = {}
        cur = node
        *parents, last = key.split(".")
        for part in parents:
            cur = cur.setdefault(part, {})
        cur[last] = yaml.safe_load(value)
        _merge(merged, node)
    return merged


_YAML_CACHE: dict[str, Any] = {}


def _load_yaml(path: str) -> Any:
    if path not in _YAML_CACHE:
        _YAML_CACHE[path] = yaml.safe_load(Path(path).read_text())
    return _YAML_CACHE[path]


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = json.loads(json.dumps(value)) if isinstance(value, dict | list) else value


def target_tasks(study: Study, run: Run) -> list[dict[str, Any]]:
    """The ``data.tasks`` of a run's stacked config files (empty when the files do not exist yet)."""
    files = [f for f in (*study.base, *run.configs) if Path(f).is_file()]
    tasks = resolved(files).get("data", {}).get("tasks") or []
    return [dict(t) for t in tasks if isinstance(t, dict)]


def run_config(study: Study, run: Run) -> dict[str, Any]:
    files = [f for f in (*study.base, *run.configs) if Path(f).is_file()]
    if run.data_tasks is not None:
        files.append(json.dumps({"data": {"tasks": list(run.data_tasks)}}))
    return resolved(files, run_overrides(study, run))


# ----------------------------------------------------------------------------------------------- cost plan


@dataclass
class PhaseCost:
    runs: int = 0
    to_run: int = 0
    steps: int = 0
    gpu_hours: float | None = 0.0
    disk_peak_gb: float | None = 0.0
    disk_kept_gb: float | None = 0.0
    steps_unknown: bool = False
    """Some run has no ``trainer.max_steps`` (it trains by epochs): its steps and GPU-hours are unknown."""


# A finished fit's checkpoints hold the weights alone (train.py); while a run trains, its best and last files are
# full training states: the weights plus AdamW's two moments, ~3x the weights in fp32.
FULL_STATE_FACTOR = 3


def _kept_files(study: Study, run: Run) -> int:
    return 0 if study.retention.keep_for(run.phase, run.seed) == "none" else 1


def cost_plan(study: Study, runs: Sequence[Run], done: Mapping[str, bool]) -> tuple[dict[str, PhaseCost], dict]:
    """Per phase: runs, runs left, optimizer steps, GPU-hours, checkpoint disk (peak and after retention).

    Disk counts ``resources.<phase>.checkpoint_gb`` per weights-only file. Peak: a run others start from holds its
    best and last until they have finished; any other run holds what retention keeps once it finishes; and one run
    of each phase in training holds best and last as full states (``FULL_STATE_FACTOR``).
    Also returns missing shard directories: ``{shards dir: {"tasks": {...}, "runs": n}}``.
    """
    costs: dict[str, PhaseCost] = defaultdict(PhaseCost)
    missing: dict[str, dict[str, Any]] = {}
    parents = {run.parent.name for run in runs if run.parent is not None}
    training: dict[str, float] = {}  # per phase: one run in training, full states beyond its finished files
    for run in runs:
        cfg = run_config(study, run)
        res = study.resources_for(run.phase)
        cost = costs[run.phase]
        cost.runs += 1
        left = not done.get(run.name)
        cost.to_run += left
        tasks = [t for t in (cfg.get("data") or {}).get("tasks") or [] if isinstance(t, dict)]
        trains = not tasks or any(t.get("train_split") for t in tasks)  # no tasks known: assume it trains
        evaluates_only = run.subcommand == "test" or not trains  # translate-test; a target without training data
        max_steps = 0 if evaluates_only else (cfg.get("trainer") or {}).get("max_steps")
        steps = int(max_steps) if isinstance(max_steps, int) and max_steps >= 0 else None  # -1/None: epochs
        cost.steps += (steps or 0) * left
        if left and steps is None:
            cost.steps_unknown = True
        if left and (steps is None or (steps and res.seconds_per_step is None)):
            cost.gpu_hours = None
        elif left and cost.gpu_hours is not None:
            cost.gpu_hours += steps * res.seconds_per_step * res.gpus * res.nodes / 3600 if steps else 0.0
        files = 0 if evaluates_only else 2  # best + last
        kept = min(files, _kept_files(study, run))
        held = files if run.name in parents else kept  # until its dependents finish; else retention at its end
        for key, n in (("disk_peak_gb", held), ("disk_kept_gb", kept)):
            value = getattr(cost, key)
            if res.checkpoint_gb is None:
                setattr(cost, key, None if files else value)
            elif value is not None:
                setattr(cost, key, value + n * res.checkpoint_gb)
        if files and res.checkpoint_gb is not None:
            full = files * FULL_STATE_FACTOR * res.checkpoint_gb - held * res.checkpoint_gb
            training[run.phase] = max(training.get(run.phase, 0.0), full)
        for task in (cfg.get("data") or {}).get("tasks") or []:
            shards = str(task.get("shards", ""))
            if shards and not Path(shards, "manifest.json").is_file():
                entry = missing.setdefault(shards, {"tasks": set(), "runs": 0})
                entry["tasks"].add(str(task.get("name")))
                entry["runs"] += 1
    for phase, extra in training.items():
        if costs[phase].disk_peak_gb is not None:
            costs[phase].disk_peak_gb += extra
    return dict(costs), missing


def _num(value: float | None, fmt: str) -> str:
    return "?" if value is None else format(value, fmt)


def summary_lines(study: Study, runs: Sequence[Run], done: Mapping[str, bool], verbose: bool = False) -> list[str]:
    """The dry run's summary: runs per phase, GPU-hours, disk, missing shard directories (≤ 32 lines unless
    ``verbose``, which lists every missing shard directory)."""
    costs, missing = cost_plan(study, runs, done)
    costs = {p: costs[p] for p in PHASES if p in costs}
    header = f"{'phase':<15}{'runs':>6}{'to run':>8}{'steps':>12}{'GPU-h':>10}{'disk peak GB':>14}{'kept GB':>9}"
    lines = [f"study {study.name}: {len(runs)} runs ({sum(done.values())} finished) in {study.out_dir}", header]
    total = PhaseCost()
    for phase, c in costs.items():
        lines.append(
            f"{phase:<15}{c.runs:>6}{c.to_run:>8}{c.steps:>12,}{_num(c.gpu_hours, ',.1f'):>10}"
            f"{_num(c.disk_peak_gb, ',.0f'):>14}{_num(c.disk_kept_gb, ',.0f'):>9}"
        )
        total.runs, total.to_run, total.steps = total.runs + c.runs, total.to_run + c.to_run, total.steps + c.steps
        for key in ("gpu_hours", "disk_peak_gb", "disk_kept_gb"):
            a, b = getattr(total, key), getattr(c, key)
            setattr(total, key, None if a is None or b is None else a + b)
    lines.append(
        f"{'total':<15}{total.runs:>6}{total.to_run:>8}{total.steps:>12,}{_num(total.gpu_hours, ',.1f'):>10}"
        f"{_num(total.disk_peak_gb, ',.0f'):>14}{_num(total.disk_kept_gb, ',.0f'):>9}"
    )
    no_rate = [p for p, c in costs.items() if c.gpu_hours is None and not c.steps_unknown]
    if no_rate:
        lines.append(f"? GPU-h: set resources.<phase>.seconds_per_step (or --probe N) for {', '.join(no_rate)}")
    no_size = [p for p, c in costs.items() if c.disk_peak_gb is None]
    if no_size:
        lines.append(f"? disk: set resources.<phase>.checkpoint_gb for {', '.join(no_size)}")
    no_steps = [p for p, c in costs.items() if c.steps_unknown]
    if no_steps:
        lines.append(f"? = no trainer.max_steps in some runs' configs ({', '.join(no_steps)}): steps unknown")
    keep = study.retention
    lines.append(
        "disk peak = best + last of runs others start from, kept files of the rest, + per phase one run training"
    )
    lines.append(
        f"kept = after retention (keep: {keep.keep}, intermediate: {keep.keep_intermediate}, "
        f"protocol: {keep.keep_protocol}"
        + (f", seeds: {', '.join(map(str, keep.keep_seeds))}" if keep.keep_seeds is not None else "")
        + ")"
    )
    if missing:
        lines.append(f"missing shard directories ({len(missing)}; build them with `python -m shards build`):")
        shown = list(missing.items()) if verbose else list(missing.items())[:12]
        for shards, entry in shown:
            lines.append(f"  {shards} ({', '.join(sorted(entry['tasks']))}): needed by {entry['runs']} runs")
        if len(shown) < len(missing):
            lines.append(f"  ... {len(missing) - len(shown)} more (--verbose lists them all)")
    by_state = Counter("finished" if done.get(r.name) else "to run" for r in runs)
    lines.append("runs: " + ", ".join(f"{n} {s}" for s, n in by_state.items()) + " (--verbose: every run + command)")
    return lines
