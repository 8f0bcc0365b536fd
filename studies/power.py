"""How many seeds a study needs: the power estimate, computed once, from the baseline's finished runs.

``seeds_needed`` is the formula (a two-sided paired test at ``alpha`` detecting a true delta of ``effect`` points,
from the baseline's seed and item variances); ``power_estimate`` applies it per target to the study's finished
baseline runs at Holm's worst-case alpha / number of comparisons; ``power_lines`` says it in words (study runner,
study.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from studies import stats
from studies.significance import ALPHA, NOT_COLUMNS, Result, aggregate_langs, primary_of, run_outcomes

Z_975 = 1.959963984540054  # two-sided 95 %
Z_POWER = {0.8: 0.8416212335729143, 0.9: 1.2815515655446004}


@dataclass(frozen=True)
class Power:
    """How many seeds a paired comparison needs to detect ``effect`` points."""

    effect: float
    item_sd: float
    seed_sd: float | None
    n_items: int
    alpha: float
    power: float
    seeds: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def seeds_needed(
    item_scores: np.ndarray,
    effect: float,
    *,
    seed_values: Sequence[float] = (),
    alpha: float = 0.05,
    power: float = 0.8,
) -> Power:
    """Seeds per condition so a two-sided test at ``alpha`` detects a true delta of ``effect`` points.

    The variance of one seed's delta is taken as ``2 * seed_var + 2 * item_var / N``: two independent
    training runs (seed variance of the baseline's metric, from ``seed_values``; 0 when only one seed has
    run, said so by ``seed_sd=None``) and the test items' sampling noise of each model, assuming the two
    models' per-item outcomes uncorrelated (conservative: real pairs are positively correlated).

    Args:
        item_scores: the baseline's per-item scores in points (N,), e.g. 100 * correct.
        effect: the delta to detect, in points.
        seed_values: the baseline's metric per seed (points).
        alpha: significance level (divide it by the number of comparisons for Holm's worst case).
        power: 0.8 or 0.9.
    """
    if effect <= 0:
        raise ValueError(f"effect must be > 0 points, got {effect}")
    if power not in Z_POWER:
        raise ValueError(f"power must be one of {sorted(Z_POWER)}, got {power}")
    scores = np.asarray(item_scores, dtype=np.float64)
    item_var = float(scores.var(ddof=1)) if len(scores) > 1 else 0.0
    seed_sd = float(np.std(seed_values, ddof=1)) if len(seed_values) > 1 else None
    var_one = 2 * (seed_sd or 0.0) ** 2 + 2 * item_var / max(len(scores), 1)
    z_alpha = _z(1 - alpha / 2)
    seeds = max(1, math.ceil(((z_alpha + Z_POWER[power]) ** 2) * var_one / effect**2))
    return Power(effect, math.sqrt(item_var), seed_sd, len(scores), alpha, power, seeds)


def _z(q: float) -> float:
    """Standard normal quantile by bisection on the CDF (no scipy needed)."""
    if abs(q - 0.975) < 1e-12:
        return Z_975
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def power_estimate(
    results: Sequence[Result],
    baseline: str,
    *,
    comparisons: int,
    effects: Sequence[float] = (1.0, 2.0, 5.0),
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """Seeds needed per target (``avg_xling`` of the primary metric) from the baseline's finished runs.

    Args:
        results: finished target runs (the baseline's are used).
        baseline: the baseline condition.
        comparisons: deltas in the grid (Holm's worst case tests the smallest p at alpha / comparisons).
        effects: deltas (points) to detect.
        alpha: family-wise level.
    """
    out = []
    by_target: dict[str, list[Result]] = defaultdict(list)
    for res in results:
        if res["condition"] == baseline:
            by_target[res["target"]].append(res)
    for target, runs in by_target.items():
        outcomes = [run_outcomes(r) for r in runs]
        outcomes = [o for o in outcomes if o]
        if not outcomes:
            continue
        task = next(iter({t for t, _ in outcomes[0]}))
        metric = primary_of(task)
        langs = aggregate_langs("avg_xling", sorted({lang for t, lang in outcomes[0] if t == task}))
        scores: list[float] = []
        for lang in langs:
            entry = outcomes[0].get((task, lang))
            formula = entry["formulas"].get(metric) if entry else None
            if formula is None or formula[0] not in ("ratio", "recall"):
                continue
            comp = stats.components(_all_columns(entry), formula)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_item = 100.0 * comp[:, 0] / comp[:, 1]
            scores += [float(v) for v in per_item if not math.isnan(v)]
        seed_values = [
            r["value"]
            for res in runs
            for r in res["rows"]
            if r.get("split") == "test" and r.get("metric") == metric and r.get("lang") == "avg_xling"
        ]
        if not scores:
            continue
        level = alpha / max(comparisons, 1)
        for effect in effects:
            power = seeds_needed(np.array(scores), effect, seed_values=seed_values, alpha=level)
            out.append(
                {"target": target, "metric": metric, "lang": "avg_xling", **power.as_dict(), "comparisons": comparisons}
            )
    return out


def _all_columns(entry: Mapping[str, Any]) -> dict[str, list]:
    rows = list(entry["rows"].values())
    return {c: [r[c] for r in rows] for c in rows[0] if c not in NOT_COLUMNS} if rows else {}


def power_lines(estimates: Sequence[Mapping[str, Any]]) -> list[str]:
    """Human-readable lines for the study runner and study.md."""
    lines = []
    for e in estimates:
        seed_sd = "seed sd unknown (one baseline seed)" if e["seed_sd"] is None else f"seed sd {e['seed_sd']:.2f}"
        lines.append(
            f"{e['target']} ({e['metric']}, {e['lang']}): to detect Δ = {e['effect']:g} points with power "
            f"{e['power']:.0%} at alpha {e['alpha']:.2g} (0.05 / {e['comparisons']} comparisons): {e['seeds']} "
            f"seed(s) per condition (item sd {e['item_sd']:.1f} over {e['n_items']} items, {seed_sd})"
        )
    return lines
