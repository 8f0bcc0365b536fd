"""The study report: every finished target run (zero-shot) and protocol run (translate-test, few-shot per shot
count) in one study table; study.md gets the three protocols side by side per condition."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studies import budgets, significance
from studies.plan import Run, plan
from studies.power import power_estimate
from studies.runs import diverged_at, finished
from studies.spec import Study
from studies.table import attach_significance, study_table, write_study_report


def column(run: Run) -> str:
    """The study-table target column of a run: ``xvnli``, ``xvnli [translate-test]``, ``xvnli [5-shot]``."""
    if run.phase == "translate_test":
        return f"{run.target} [translate-test]"
    if run.phase == "few_shot":
        return f"{run.target} [{run.shots}-shot]"
    return run.target


def _split(study: Study, run: Run) -> str:
    t = study.targets[run.target]
    if run.phase == "translate_test":
        return t.translate_test.split
    if run.phase == "few_shot":
        return t.few_shot.test_split
    return "test"


def collect(
    study: Study, runs: Sequence[Run] | None = None
) -> tuple[dict[str, list[dict]], list[str], dict[str, dict[str, int]]]:
    """Results per tabulated split of every finished evaluated run, the missing run names, and per target the
    selection monitor its finished runs recorded ("" = none) with how many runs.

    A run's rows are those of its own test (split ``test`` in its results.json, whatever split its data came from),
    filed under its protocol's split: ``test`` (zero-shot), the translate-test split, the few-shot test split.
    Few-shot runs of one (condition, seed, target, shots) are one result: each tested one language. A finished
    run that contributes no row is listed in ``missing`` as ``<run> (finished, no test rows)``.
    """
    by_split: dict[str, dict[tuple, dict[str, Any]]] = defaultdict(dict)
    missing: list[str] = []
    selected: dict[str, dict[str, int]] = {}
    for run in plan(study) if runs is None else runs:
        if run.phase not in ("target", "translate_test", "few_shot"):
            continue
        path = run.run_dir / "results.json"
        if finished(run) is None or not path.is_file():
            diverged = diverged_at(run)
            missing.append(f"{run.name} (diverged: {diverged})" if diverged else run.name)
            continue
        data = json.loads(path.read_text())
        monitor = (data.get("selection") or {}).get("monitor") if isinstance(data, dict) else None
        if run.phase == "target":
            counts = selected.setdefault(run.target, {})
            counts[monitor or ""] = counts.get(monitor or "", 0) + 1
        rows = [
            dict(r, split=_split(study, run))
            for r in (data["rows"] if isinstance(data, dict) else data)
            if r.get("split") == "test"
        ]
        if not rows:
            missing.append(f"{run.name} (finished, no test rows)")
            continue
        key = (run.condition, column(run), run.seed)
        entry = by_split[_split(study, run)].setdefault(
            key, {"condition": run.condition, "target": column(run), "seed": run.seed, "rows": []}
        )
        if run.phase == "target":  # its outcomes.jsonl pairs it with the baseline (significance)
            entry["run_dir"] = str(run.run_dir)
        entry["rows"] += rows
    return {split: list(entries.values()) for split, entries in by_split.items()}, missing, selected


def protocol_breaks(study: Study) -> list[str]:
    """Finished zero-shot target runs whose own protocol record (results.json ``protocol``) says they were not
    zero-shot with English-only selection: "<run>: <headline>" each. Runs evaluated without selection
    (evaluation-only targets) count only when their record lists a break."""
    breaks = []
    for run in plan(study):
        path = run.run_dir / "results.json"
        if run.phase != "target" or finished(run) is None or not path.is_file():
            continue
        data = json.loads(path.read_text())
        record = data.get("protocol") if isinstance(data, dict) else None
        if record and (record.get("breaks") or not record.get("zero_shot", True)):
            breaks.append(f"{run.name}: {record.get('headline', 'zero-shot protocol broken')}")
    return breaks


def study_rows(study: Study, results: dict[str, list[dict]]) -> list[dict]:
    """One study table over every protocol (its ``target`` column names the protocol)."""
    overlaps = {c: [col for t in targets for col in _columns(study, t)] for c, targets in study.overlaps().items()}
    table = []
    for split, entries in results.items():
        rows = study_table(entries, baseline=study.baseline, overlaps=overlaps, split=split)
        table += [dict(r, protocol=_protocol(r["target"])) for r in rows]
    return table


def _columns(study: Study, target: str) -> list[str]:
    t = study.targets[target]
    cols = [target]
    if t.translate_test:
        cols.append(f"{target} [translate-test]")
    if t.few_shot:
        cols += [f"{target} [{n}-shot]" for n in t.few_shot.shots]
    return cols


def _protocol(column_name: str) -> str:
    if column_name.endswith("[translate-test]"):
        return "translate_test"
    return "few_shot" if column_name.endswith("-shot]") else "zero_shot"


def protocols_markdown(study: Study, table: Sequence[dict]) -> str:
    """Per condition, each target's zero-shot, translate-test and N-shot ``avg_xling`` of its primary metric."""
    cols = [c for t in study.targets for c in _columns(study, t) if any(r["target"] == c for r in table)]
    if not any(_protocol(c) != "zero_shot" for c in cols):
        return ""
    cell = {(r["condition"], r["target"]): r for r in table if r["primary"] and r["lang"] == "avg_xling"}
    lines = [
        "## Zero-shot, translate-test and few-shot side by side",
        "",
        "avg_xling of each target's primary metric (mean over seeds; Δ vs the baseline). Zero-shot and "
        "translate-test select on English dev; few-shot selects on the target language's few-shot dev split "
        "and averages over the languages it ran.",
        "",
        "| condition | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for condition in study.conditions:
        cells = []
        for c in cols:
            r = cell.get((condition, c))
            delta = "" if r is None or r["delta"] is None or condition == study.baseline else f" ({r['delta']:+.2f})"
            cells.append("–" if r is None else f"{r['mean']:.2f}{delta}")
        if any(x != "–" for x in cells):
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def analysis_inputs(study: Study) -> tuple[list[dict], list[dict]]:
    """The finished zero-shot target runs and the study table: what ``studies.analysis`` reads."""
    results, _, _ = collect(study)
    return results.get("test", []), study_rows(study, results) if results else []


def significance_tests(study: Study, results: Sequence[dict], controls: dict[str, str]) -> list[dict]:
    """Paired-bootstrap rows of every zero-shot (condition, target, aggregate) delta vs the baseline."""
    zero_shot = [r for r in results if r["target"] in study.targets]
    return significance.significance_rows(
        zero_shot,
        study.baseline,
        controls=controls,
        target_tasks={n: t.task for n, t in study.targets.items()},
        correction=study.significance.correction,
        resamples=study.significance.resamples,
    )


def power(study: Study, results: Sequence[dict]) -> list[dict]:
    """Seeds the grid needs per target, from the baseline's finished runs (empty before any has run)."""
    comparisons = (len(study.conditions) - 1) * len(study.targets) * len(significance.TESTED_AGGREGATES)
    zero_shot = [r for r in results if r["target"] in study.targets]
    return power_estimate(zero_shot, study.baseline, comparisons=comparisons, effects=study.significance.effects)


def write_report(study: Study) -> dict[str, Path]:
    """Collect the finished runs and write the study report into ``study.out``; study.md ends with the
    protocols side by side when translate-test or few-shot runs exist."""
    results, missing, selected = collect(study)
    selection = list(dict.fromkeys(m for monitors in selected.values() for m in monitors if m))
    table = study_rows(study, results)
    controls = {n: c.control for n, c in study.conditions.items() if c.control}
    tests = significance_tests(study, results.get("test", []), controls)
    table = attach_significance(table, tests)
    meta = {
        "seeds": list(study.seeds),
        "conditions": {
            n: {"configs": c.configs, "tasks": c.tasks, "control": c.control, **c.meta}
            for n, c in study.conditions.items()
        },
        "significance": tests,
        "controls": controls,
        "budgets": budgets.condition_budgets(plan(study)),
        "power": power(study, results.get("test", [])),
        "targets": {
            n: {
                "task": t.task,
                "train_tasks": t.train_tasks,
                "configs": t.configs,
                "translate_test": t.translate_test.split if t.translate_test else None,
                "few_shot": t.few_shot.shots if t.few_shot else None,
            }
            for n, t in study.targets.items()
        },
        "overlaps": study.overlaps(),
        "start": {"base": list(study.base), "start": list(study.start.configs) if study.start else []},
        "selection": selection,
        "selection_by_target": selected,
        "protocol_breaks": protocol_breaks(study),
        "missing": missing,
    }
    paths = write_study_report(study.out_dir, table, name=study.name, baseline=study.baseline, meta=meta)
    extra = protocols_markdown(study, table)
    if extra:
        with paths["md"].open("a") as f:
            f.write("\n" + extra)
    if study.analysis.enabled:  # why it transfers: analysis.md, its headings one level down in study.md
        from studies.analysis import write_analysis

        analysis = write_analysis(study, results.get("test", []), table)
        with paths["md"].open("a") as f:
            f.write(
                "\n"
                + "\n".join(
                    "#" + line if line.startswith("#") else line for line in analysis["md"].read_text().splitlines()
                )
                + "\n"
            )
        paths.update({f"analysis_{k}": v for k, v in analysis.items()})
    return paths
