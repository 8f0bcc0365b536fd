"""Run a study: intermediate condition × target task × seed, then the comparison report.

    python study.py --config configs/studies/<name>.yaml [--dry-run] [--only COND ...] [--targets T ...]

A study YAML (see docs/study.md) names the shared ``--config`` files and overrides, the seeds, an optional
``start`` phase, the conditions (intermediate phases; the baseline has none) and the targets. The runner

1. runs ``start`` once per seed (``<out>/start/seed<k>``), if given;
2. runs each condition's intermediate phase once per seed (``<out>/<condition>/seed<k>/intermediate``),
   starting from the start run's final weights;
3. fine-tunes and zero-shot tests every target per (condition, seed) (``<out>/<condition>/seed<k>/<target>``),
   starting from the intermediate run's final weights (the baseline: from the start run, or from scratch);
4. writes study.json / study.csv / study.md / study_heatmap.png into ``<out>`` and prints study.md.

Start and intermediate phases hand on their **final** weights (``last_ckpt`` in ``finished.json``): they have no
dev selection of their own. Target runs select their checkpoint on English dev data only (train.py).

A run whose ``finished.json`` exists is skipped, so a crashed study resumes by running the same command again.
An unfinished run directory from an earlier attempt is moved aside to ``<run dir>.incomplete`` and rerun.

Every run is a subprocess ``[*train_cmd, "fit", ...]``; ``train_cmd`` defaults to ``python train.py`` and can be
replaced by the study YAML's ``train_cmd`` or the environment variable ``MMSTILTS_TRAIN_CMD`` (tests use a fake).
Paths in the YAML are relative to the working directory: run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from lightning_modules import budgets, reports, significance
from lightning_modules.tasks import get_task

TRAIN_CMD_ENV = "MMSTILTS_TRAIN_CMD"
EPOCH_PREFIX = "epoch "  # lightning_modules.progress.EpochLine's lines (not imported: it would load Lightning)
STUDY_KEYS = ("name", "out", "base", "overrides", "seeds", "baseline", "start", "conditions", "targets", "train_cmd",
              "significance", "budget")  # fmt: skip
CONDITION_KEYS = ("configs", "overrides", "tasks", "control")
CONTROLS = ("positive", "negative")
SIGNIFICANCE_KEYS = ("correction", "resamples", "effects")
BUDGET_KEYS = ("intermediate_steps", "batch_size")
TARGET_KEYS = ("configs", "overrides", "task", "train_tasks")
START_KEYS = ("configs", "overrides")
Phase = Literal["start", "intermediate", "target"]


class StudyError(Exception):
    """A study definition or run failed; the message says which key or run, and what to do."""


@dataclass(frozen=True)
class Stage:
    """One entry of the study YAML: the start phase, a condition, or a target."""

    configs: tuple[str, ...] = ()
    """``--config`` files stacked after the study's ``base`` files."""
    overrides: tuple[str, ...] = ()
    """CLI overrides for this stage's runs only, after the study's shared ``overrides``."""
    tasks: tuple[str, ...] = ()
    """Condition: its intermediate tasks. Target: its English training tasks (``train_tasks``)."""
    task: str = ""
    """Target only: the evaluated task (defaults to the target's name)."""
    control: str = ""
    """Condition only: ``positive`` or ``negative`` marks a control (its own block in study.md)."""


@dataclass(frozen=True)
class Study:
    """A parsed study YAML."""

    name: str
    out: Path
    base: tuple[str, ...]
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    baseline: str
    start: Stage | None
    conditions: dict[str, Stage]
    targets: dict[str, Stage]
    train_cmd: tuple[str, ...] = ()
    significance: dict[str, Any] | None = None
    """``correction`` (holm | bh), ``resamples``, ``effects`` (points, for the power estimate)."""
    budget: dict[str, int] | None = None
    """Equal budgets: every intermediate phase runs ``intermediate_steps`` steps of ``batch_size`` examples."""

    def config_files(self) -> list[str]:
        """Every ``--config`` file the study uses, in order of first use."""
        stages = [self.start] if self.start else []
        stages += [*self.conditions.values(), *self.targets.values()]
        return list(dict.fromkeys([*self.base, *(c for s in stages for c in s.configs)]))

    def overlaps(self) -> dict[str, list[str]]:
        """Condition -> targets whose training data its intermediate data overlaps (``reports.find_overlaps``)."""
        targets = {name: [t.task, *t.tasks] for name, t in self.targets.items()}
        return reports.find_overlaps({name: c.tasks for name, c in self.conditions.items()}, targets)


@dataclass(frozen=True)
class Run:
    """One ``train.py fit`` invocation of the study."""

    name: str
    """Path of the run directory below the study's ``out``, e.g. ``mnli/seed0/xvnli``."""
    phase: Phase
    seed: int
    stage: Stage
    run_dir: Path
    parent: Run | None = None
    """The run whose final weights this run starts from (``--model.init_from``)."""
    condition: str = ""
    target: str = ""


# ----------------------------------------------------------------------------------------------- parsing


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise StudyError(f"`{key}` must be a string or a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def _check_keys(entry: Any, valid: Sequence[str], where: str) -> dict[str, Any]:
    entry = {} if entry is None else entry
    if not isinstance(entry, dict):
        raise StudyError(f"`{where}` must be a mapping with keys {', '.join(valid)}; got {entry!r}")
    unknown = sorted(set(entry) - set(valid))
    if unknown:
        raise StudyError(f"Unknown key(s) {', '.join(map(repr, unknown))} in `{where}`. Valid keys: {', '.join(valid)}")
    return entry


def _check_tasks(tasks: tuple[str, ...], where: str) -> tuple[str, ...]:
    for task in tasks:
        try:
            get_task(task)
        except KeyError as err:
            raise StudyError(f"`{where}`: {err.args[0]}") from None
    return tasks


def _condition(name: str, entry: Any) -> Stage:
    entry = _check_keys(entry, CONDITION_KEYS, f"conditions.{name}")
    configs = _strings(entry.get("configs"), f"conditions.{name}.configs")
    tasks = _check_tasks(_strings(entry.get("tasks"), f"conditions.{name}.tasks"), f"conditions.{name}.tasks")
    if configs and not tasks:
        raise StudyError(
            f"`conditions.{name}` has configs but no `tasks`: list its intermediate tasks (overlap marks)."
        )
    control = str(entry.get("control") or "")
    if control and control not in CONTROLS:
        raise StudyError(f"`conditions.{name}.control` must be one of {', '.join(CONTROLS)}, got {control!r}")
    return Stage(configs, _strings(entry.get("overrides"), f"conditions.{name}.overrides"), tasks, control=control)


def _target(name: str, entry: Any) -> Stage:
    entry = _check_keys(entry, TARGET_KEYS, f"targets.{name}")
    task = str(entry.get("task", name))
    _check_tasks((task,), f"targets.{name}.task")
    train = entry.get("train_tasks", [task])
    train_tasks = _check_tasks(_strings(train, f"targets.{name}.train_tasks"), f"targets.{name}.train_tasks")
    configs = _strings(entry.get("configs"), f"targets.{name}.configs")
    if not configs:
        raise StudyError(f"`targets.{name}` needs `configs` (e.g. configs/target/{task}.yaml)")
    return Stage(configs, _strings(entry.get("overrides"), f"targets.{name}.overrides"), train_tasks, task)


def _check_names(conditions: Mapping[str, Stage], targets: Mapping[str, Stage]) -> None:
    """Names become directories: ``<out>/<condition>/seed<k>/<target>`` next to ``start`` and ``intermediate``."""
    for kind, names, reserved in (("condition", conditions, "start"), ("target", targets, "intermediate")):
        for name in names:
            if name == reserved or not name or "/" in name or name.startswith("."):
                raise StudyError(f"Invalid {kind} name {name!r}: names are directory names; "
                                 f"{reserved!r}, '/' and a leading '.' are not allowed.")  # fmt: skip


def _seeds(value: Any) -> tuple[int, ...]:
    seeds = [value] if isinstance(value, int) else value
    if not seeds or not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"`seeds` must be a non-empty list of integers, got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"`seeds` lists a seed twice: {seeds}")
    return tuple(seeds)


def parse_study(data: Mapping[str, Any], default_name: str = "study") -> Study:
    """Validate a study mapping (the parsed YAML); errors name the key and the fix."""
    data = _check_keys(data, STUDY_KEYS, "<study>")
    name = str(data.get("name", default_name))
    conditions = {str(k): _condition(str(k), v) for k, v in (data.get("conditions") or {}).items()}
    targets = {str(k): _target(str(k), v) for k, v in (data.get("targets") or {}).items()}
    if not conditions or not targets:
        raise StudyError("A study needs `conditions` and `targets` (mappings of name -> entry).")
    _check_names(conditions, targets)
    baseline = str(data.get("baseline", "none"))
    if baseline not in conditions:
        raise StudyError(f"Baseline condition {baseline!r} is not under `conditions` ({', '.join(conditions)}); "
                         f"add `{baseline}: {{}}` (no intermediate phase) or set `baseline:`.")  # fmt: skip
    start = None
    if data.get("start") is not None:
        entry = _check_keys(data["start"], START_KEYS, "start")
        start = Stage(
            _strings(entry.get("configs"), "start.configs"), _strings(entry.get("overrides"), "start.overrides")
        )
        if not start.configs:
            raise StudyError("`start` needs `configs` (the phase-1 run's config files); remove `start` to skip it.")
    train_cmd = data.get("train_cmd")
    significance = _check_keys(data.get("significance"), SIGNIFICANCE_KEYS, "significance")
    if significance.get("correction", "holm") not in ("holm", "bh"):
        raise StudyError(f"`significance.correction` must be holm or bh, got {significance['correction']!r}")
    budget = _check_keys(data.get("budget"), BUDGET_KEYS, "budget")
    if any(not isinstance(v, int) or v <= 0 for v in budget.values()):
        raise StudyError(f"`budget` values must be positive integers, got {budget}")
    return Study(
        name=name,
        out=Path(data.get("out", f"runs/studies/{name}")),
        base=_strings(data.get("base"), "base"),
        overrides=_strings(data.get("overrides"), "overrides"),
        seeds=_seeds(data.get("seeds", [0])),
        baseline=baseline,
        start=start,
        conditions=conditions,
        targets=targets,
        train_cmd=tuple(shlex.split(train_cmd)) if isinstance(train_cmd, str) else _strings(train_cmd, "train_cmd"),
        significance=significance,
        budget=budget,
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study YAML."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"Study config {str(path)!r} not found (see configs/studies/ for the shipped studies).")
    return parse_study(yaml.safe_load(path.read_text()) or {}, default_name=path.stem)


# ----------------------------------------------------------------------------------------------- planning


def plan(study: Study, only: Sequence[str] = (), targets: Sequence[str] = ()) -> list[Run]:
    """The runs in execution order: start runs, then per condition and seed its intermediate run and targets.

    Each (condition, seed) intermediate run appears once and is the parent of every target run of that pair.

    Args:
        study: the parsed study.
        only: restrict to these conditions (all if empty).
        targets: restrict to these targets (all if empty).
    """
    conditions = _select(only, study.conditions, "--only")
    target_names = _select(targets, study.targets, "--targets")
    runs: list[Run] = []
    starts: dict[int, Run] = {}
    if study.start:
        for seed in study.seeds:
            starts[seed] = Run(f"start/seed{seed}", "start", seed, study.start, study.out / "start" / f"seed{seed}")
            runs.append(starts[seed])
    for condition in conditions:
        stage = study.conditions[condition]
        for seed in study.seeds:
            parent = starts.get(seed)
            prefix = f"{condition}/seed{seed}"
            if stage.configs:
                run_dir = study.out / prefix / "intermediate"
                parent = Run(f"{prefix}/intermediate", "intermediate", seed, stage, run_dir, parent, condition)
                runs.append(parent)
            for target in target_names:
                run_dir = study.out / prefix / target
                stage_t = study.targets[target]
                runs.append(Run(f"{prefix}/{target}", "target", seed, stage_t, run_dir, parent, condition, target))
    return runs


def _select(names: Sequence[str], valid: Mapping[str, Any], flag: str) -> list[str]:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise StudyError(f"{flag}: unknown name(s) {', '.join(unknown)}. Valid: {', '.join(valid)}")
    return [n for n in valid if not names or n in names]


def train_command(study: Study) -> list[str]:
    """``$MMSTILTS_TRAIN_CMD``, else the YAML's ``train_cmd``, else ``python train.py`` (next to study.py)."""
    if os.environ.get(TRAIN_CMD_ENV):
        return shlex.split(os.environ[TRAIN_CMD_ENV])
    if study.train_cmd:
        return list(study.train_cmd)
    return [sys.executable, str(Path(__file__).resolve().with_name("train.py"))]


def run_args(study: Study, run: Run, init_from: str | None) -> list[str]:
    """The ``fit`` arguments of one run: stacked configs, overrides, then the run's own settings."""
    args = ["fit"]
    for config in (*study.base, *run.stage.configs):
        args += ["--config", config]
    args += [*study.overrides, *run.stage.overrides]
    if run.phase == "intermediate" and study.budget:  # equal budgets: last, so no condition config can differ
        if "intermediate_steps" in study.budget:
            args += ["--trainer.max_steps", str(study.budget["intermediate_steps"])]
        if "batch_size" in study.budget:
            args += ["--data.batch_size", str(study.budget["batch_size"])]
    args += ["--trainer.default_root_dir", str(run.run_dir), "--seed_everything", str(run.seed), "--phase", run.phase]
    if init_from:
        args += ["--model.init_from", init_from]
    return args + ["--test_after_fit", "true" if run.phase == "target" else "false"]


def run_env(study: Study, run: Run) -> dict[str, str]:
    """The environment of a run: W&B group = study, job type = phase, run name = the run's path."""
    env = dict(os.environ)
    env.update(WANDB_RUN_GROUP=study.name, WANDB_JOB_TYPE=run.phase, WANDB_NAME=f"{study.name}/{run.name}")
    tags = [t for t in (run.condition, run.target, f"seed{run.seed}") if t]
    env["WANDB_TAGS"] = ",".join(filter(None, [env.get("WANDB_TAGS", ""), *tags]))
    return env


# ----------------------------------------------------------------------------------------------- running


def finished(run: Run) -> dict[str, Any] | None:
    """The run's ``finished.json`` if it exists (the run completed), else None."""
    path = run.run_dir / "finished.json"
    return json.loads(path.read_text()) if path.is_file() else None


def final_weights(run: Run) -> str:
    """The ``last_ckpt`` named by a finished run's ``finished.json`` (resolved against cwd, then the run dir)."""
    info = finished(run)
    if info is None:
        raise StudyError(f"{run.name} has not finished: no {run.run_dir / 'finished.json'}")
    ckpt = info.get("last_ckpt")
    if not ckpt:
        raise StudyError(f"{run.run_dir / 'finished.json'} has no `last_ckpt`: {info}")
    for candidate in (Path(ckpt), run.run_dir / ckpt):
        if candidate.exists():
            return str(candidate)
    raise StudyError(f"{run.run_dir / 'finished.json'} names last_ckpt {ckpt!r}, which does not exist.")


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s" if minutes else f"{seconds:.1f}s"


def _log_tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _last_epoch_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(EPOCH_PREFIX)]
    return f": {lines[-1]}" if lines else ""


def execute(study: Study, run: Run, heartbeat: float) -> float:
    """Run one training subprocess, its output captured to ``<run dir>/train.log``; returns its duration.

    Raises:
        StudyError: the run exited with an error or did not write ``finished.json``.
    """
    if run.run_dir.exists():  # an earlier attempt that did not finish: keep it for inspection, start clean
        aside = run.run_dir.with_name(run.run_dir.name + ".incomplete")
        shutil.rmtree(aside, ignore_errors=True)
        run.run_dir.rename(aside)
        print(f"    earlier unfinished attempt moved to {aside}", flush=True)
    run.run_dir.mkdir(parents=True)
    cmd = train_command(study) + run_args(study, run, final_weights(run.parent) if run.parent else None)
    log = run.run_dir / "train.log"
    t0 = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=run_env(study, run))
        try:
            while True:
                try:
                    rc = proc.wait(timeout=heartbeat)
                    break
                except subprocess.TimeoutExpired:
                    latest = _last_epoch_line(log)  # the run's own progress (EpochLine), if any yet
                    print(f"    ... {run.name} running for {_duration(time.monotonic() - t0)}{latest}", flush=True)
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if rc != 0 or finished(run) is None:
        why = f"exited with status {rc}" if rc != 0 else "exited without writing finished.json"
        raise StudyError(f"Run {run.name} {why}.\n  run dir: {run.run_dir}\n  log: {log}\n"
                         f"--- last lines of {log} ---\n{_log_tail(log)}\n"
                         "Fix the cause and run the same command again: finished runs are skipped.")  # fmt: skip
    return time.monotonic() - t0


def run_all(study: Study, runs: Sequence[Run], heartbeat: float = 60.0) -> None:
    """Run every unfinished run in order, printing progress; stops at the first failure (StudyError)."""
    t0 = time.monotonic()
    for i, run in enumerate(runs, 1):
        head = f"[{i}/{len(runs)}] {run.name} ({run.phase})"
        if finished(run) is not None:
            print(f"{head}: skip (finished)", flush=True)
            continue
        print(f"{head}: start (study elapsed {_duration(time.monotonic() - t0)})", flush=True)
        took = execute(study, run, heartbeat)
        (run.run_dir / budgets.TIME_FILE).write_text(json.dumps({"seconds": took}) + "\n")
        print(f"{head}: done in {_duration(took)}", flush=True)


# ----------------------------------------------------------------------------------------------- report


def collect(study: Study) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Results of every finished target run of the whole study, the missing run names and the selection keys."""
    results, missing, selection = [], [], []
    for run in plan(study):
        if run.phase != "target":
            continue
        path = run.run_dir / "results.json"
        if finished(run) is None or not path.is_file():
            missing.append(run.name)
            continue
        data = json.loads(path.read_text())
        monitor = (data.get("selection") or {}).get("monitor") if isinstance(data, dict) else None
        if monitor and monitor not in selection:
            selection.append(monitor)
        rows = data["rows"] if isinstance(data, dict) else data
        results.append({"condition": run.condition, "target": run.target, "seed": run.seed, "rows": rows,
                        "run_dir": str(run.run_dir)})  # fmt: skip
    return results, missing, selection


def write_report(study: Study) -> dict[str, Path]:
    """Collect the finished target runs and write the study report into ``study.out``."""
    results, missing, selection = collect(study)
    overlaps = study.overlaps()
    table = reports.study_table(results, baseline=study.baseline, overlaps=overlaps)
    controls = {n: c.control for n, c in study.conditions.items() if c.control}
    settings = study.significance or {}
    tests = significance.significance_rows(results, study.baseline, controls=controls,
                                           target_tasks={n: t.task for n, t in study.targets.items()},
                                           correction=settings.get("correction", "holm"),
                                           resamples=settings.get("resamples", 2000))  # fmt: skip
    table = reports.attach_significance(table, tests)
    meta = {
        "seeds": list(study.seeds),
        "conditions": {n: {"configs": list(c.configs), "tasks": list(c.tasks), "control": c.control}
                       for n, c in study.conditions.items()},  # fmt: skip
        "significance": tests,
        "controls": controls,
        "budgets": budgets.condition_budgets(plan(study)),
        "power": _power(study, results),
        "targets": {
            n: {"task": t.task, "train_tasks": list(t.tasks), "configs": list(t.configs)}
            for n, t in study.targets.items()
        },  # fmt: skip
        "overlaps": overlaps,
        "selection": selection,
        "missing": missing,
    }
    return reports.write_study_report(study.out, table, name=study.name, baseline=study.baseline, meta=meta)


def _power(study: Study, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seeds the grid needs per target, from the baseline's finished runs (empty before any has run)."""
    comparisons = (len(study.conditions) - 1) * len(study.targets) * len(significance.TESTED_AGGREGATES)
    effects = (study.significance or {}).get("effects", (1.0, 2.0, 5.0))
    return significance.power_estimate(results, study.baseline, comparisons=comparisons, effects=effects)


# ----------------------------------------------------------------------------------------------- CLI


def _print_plan(study: Study, runs: Sequence[Run]) -> None:
    cmd = train_command(study)
    for i, run in enumerate(runs, 1):
        status = "finished" if finished(run) else "to run"
        init = f"{run.parent.run_dir}/<last_ckpt>" if run.parent else None
        print(
            f"[{i}/{len(runs)}] {run.name} ({run.phase}, {status})\n    {shlex.join(cmd + run_args(study, run, init))}"
        )
    overlaps = study.overlaps()
    if overlaps:
        print("overlap marks (†): " + "; ".join(f"{c} -> {', '.join(t)}" for c, t in overlaps.items()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", required=True, help="study YAML, e.g. configs/studies/iglue.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their commands; run nothing")
    parser.add_argument("--only", nargs="+", default=[], metavar="CONDITION", help="run only these conditions")
    parser.add_argument("--targets", nargs="+", default=[], metavar="TARGET", help="run only these targets")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="seconds between 'still running' lines")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status (0 ok, 1 a run failed, 2 the study definition is wrong)."""
    args = parse_args(argv)
    try:
        study = load_study(args.config)
        runs = plan(study, args.only, args.targets)
        missing = [c for c in study.config_files() if not Path(c).is_file()]
        if args.dry_run:
            _print_plan(study, runs)
        if missing and not args.report_only:
            raise StudyError("Config file(s) not found (paths are relative to the working directory): "
                             + ", ".join(missing))  # fmt: skip
        if args.dry_run:
            return 0
    except StudyError as err:
        print(f"study: {err}", file=sys.stderr)
        return 2
    power = _power(study, collect(study)[0])
    if power and not args.report_only:
        print("power (from the baseline's finished runs):\n  " + "\n  ".join(significance.power_lines(power)))
    try:
        if not args.report_only:
            run_all(study, runs, args.heartbeat)
    except StudyError as err:
        print(f"study: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("study: interrupted; run the same command again to resume (finished runs are skipped)", file=sys.stderr)
        return 130
    paths = write_report(study)
    print(paths["md"].read_text())
    print("report: " + ", ".join(str(p) for p in paths.values()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
