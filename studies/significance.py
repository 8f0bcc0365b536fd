"""Study-level significance: each condition's delta against the baseline, tested on paired test items.

For every (condition, target, language aggregate) the runs' ``outcomes.jsonl`` are paired by item key (the
items every compared run scored) and by seed (seed k of a condition and of the baseline share their start
weights), and ``stats.paired_bootstrap`` gives the delta of the target's primary metric, its 95 % interval
and p-value. The aggregates are those of the study table: ``en``, ``avg_xling`` (mean over the non-English
languages) and ``avg_all``; an aggregate's bootstrap resamples the items of each language separately and
averages the per-language metrics, as the table does. The p-values of the whole grid are then adjusted
(Holm–Bonferroni by default, or Benjamini–Hochberg) and a delta *survives* when its adjusted p < alpha.

How many seeds the grid would need is ``studies/power.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contracts.catalogue import TASKS
from contracts.outcomes import OUTCOMES_FILE, read_outcomes
from studies import stats

ENGLISH = "en"
TESTED_AGGREGATES = (ENGLISH, "avg_xling", "avg_all")
ALPHA = 0.05
NOT_COLUMNS = ("key", "key_hash", "seed")  # outcome row fields that are not metric components
SIGNIFICANCE_FIELDS = (
    "target",
    "task",
    "metric",
    "lang",
    "condition",
    "control",
    "delta",
    "low",
    "high",
    "p",
    "p_adj",
    "correction",
    "significant",
    "n_items",
    "n_seeds",
    "resamples",
)

Result = Mapping[str, Any]  # {"condition", "target", "seed", "rows", "run_dir"}


def aggregate_langs(aggregate: str, langs: Sequence[str]) -> list[str]:
    """The languages an aggregate averages: ``en`` alone, the non-English ones, or all of them."""
    if aggregate == ENGLISH:
        return [ENGLISH] if ENGLISH in langs else []
    if aggregate == "avg_xling":
        return [lang for lang in langs if lang != ENGLISH]
    return list(langs)


def run_outcomes(result: Result) -> dict[tuple[str, str], dict[str, Any]]:
    path = Path(result.get("run_dir", "")) / OUTCOMES_FILE
    return read_outcomes(path) if result.get("run_dir") and path.is_file() else {}


def primary_of(task: str) -> str:
    return TASKS[task].primary if task in TASKS else ""


def _block(
    runs: Sequence[dict[tuple[str, str], dict[str, Any]]], task: str, lang: str, formula: tuple
) -> np.ndarray | None:
    """Components (runs, common items, K) of one (task, language) over ``runs``; None when one lacks it."""
    entries = [r.get((task, lang)) for r in runs]
    if any(e is None or not e["rows"] for e in entries):
        return None
    common = sorted(set.intersection(*(set(e["rows"]) for e in entries)))
    if not common:
        return None
    arrays = []
    for e in entries:
        columns = {c: [e["rows"][k][c] for k in common] for c in e["rows"][common[0]] if c not in NOT_COLUMNS}
        arrays.append(stats.components(columns, formula))
    return np.stack(arrays)


def significance_rows(
    results: Sequence[Result],
    baseline: str,
    *,
    controls: Mapping[str, str] | None = None,
    target_tasks: Mapping[str, str] | None = None,
    correction: str = "holm",
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """Paired-bootstrap rows for every (target, condition != baseline, aggregate) with outcomes on both sides.

    Args:
        results: finished target runs with their ``run_dir`` (``study.collect``).
        baseline: the reference condition.
        controls: condition -> ``positive`` / ``negative`` (shown in their own block; still corrected with the
            grid, so the family of tests is every delta the report shows).
        target_tasks: target -> its evaluated task (default: the target's name if its runs tested it, else
            the first task in its outcomes).
        correction: ``holm`` or ``bh``.
        resamples: bootstrap resamples per delta.
        seed: resampling seed.
        alpha: level at which an adjusted p-value counts as significant.
    """
    controls = dict(controls or {})
    loaded: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)  # (condition, target) -> seed -> outcomes
    tasks: dict[str, str] = {}
    for res in results:
        outcomes = run_outcomes(res)
        if outcomes:
            loaded[(res["condition"], res["target"])][res["seed"]] = outcomes
            tested = sorted({t for t, _ in outcomes})
            wanted = (target_tasks or {}).get(res["target"], res["target"])
            tasks.setdefault(res["target"], wanted if wanted in tested else tested[0])
    rows = []
    for target, task in tasks.items():
        metric = primary_of(task)
        base = loaded.get((baseline, target), {})
        for (condition, tgt), by_seed in loaded.items():
            if tgt != target or condition == baseline:
                continue
            seeds = sorted(set(by_seed) & set(base))
            if not seeds:
                continue
            sample = by_seed[seeds[0]]
            formula = next((e["formulas"].get(metric) for (t, _), e in sample.items() if t == task), None)
            if formula is None:
                continue
            langs = sorted({lang for t, lang in sample if t == task}, key=lambda lg: (lg != ENGLISH, lg))
            for agg in TESTED_AGGREGATES:
                row = _test(
                    task,
                    aggregate_langs(agg, langs),
                    formula,
                    [base[s] for s in seeds],
                    [by_seed[s] for s in seeds],
                    resamples,
                    seed,
                )
                if row is not None:
                    rows.append(
                        {
                            "target": target,
                            "task": task,
                            "metric": metric,
                            "lang": agg,
                            "condition": condition,
                            "control": controls.get(condition, ""),
                            **row,
                        }
                    )
    adjusted = stats.adjust([r["p"] for r in rows], correction)
    for r, p_adj in zip(rows, adjusted):
        r.update(p_adj=p_adj, correction=correction, significant=bool(p_adj < alpha))
    return rows


def _test(
    task: str,
    langs: Sequence[str],
    formula: tuple,
    base: Sequence[dict],
    cond: Sequence[dict],
    resamples: int,
    seed: int,
) -> dict[str, Any] | None:
    blocks_b, blocks_c = [], []
    for lang in langs:
        block = _block([*base, *cond], task, lang, formula)
        if block is None:
            return None
        blocks_b.append(block[: len(base)])
        blocks_c.append(block[len(base) :])
    if not blocks_b:
        return None
    result = stats.paired_bootstrap(blocks_b, blocks_c, formula, resamples=resamples, seed=seed)
    return result.as_dict()
