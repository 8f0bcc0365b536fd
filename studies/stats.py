"""Significance for study deltas: paired bootstrap, multiple-comparison corrections, seeds needed.

Pure numpy over **per-item components** (no Lightning import). A test run's per-sample outcomes
(``outcomes.jsonl``, ``contracts/outcomes.py``) give each test item a few numbers;
a metric is a *formula* over their sums over items, so resampling items and re-summing reproduces the
metric exactly:

- ``("ratio", num, den)``: ``100 * sum(num) / sum(den)`` — accuracy (``correct``, ``total``), VQA accuracy
  (``score``, ``total``), EM/F1 of span QA, Tatoeba accuracy, word-level tagging accuracy;
- ``("recall", rank, k, query)``: ``100 * sum(query * (rank < k)) / sum(query)`` — retrieval recall@K of one
  direction, each query's rank being the number of strictly better candidates;
- ``("mean_recall", rank, k, ir, tr)``: the mean of the two directions' recall@K (``mean_r1``);
- ``("f1", tp, n_pred, n_gold)``: entity span F1 and BUCC F1 (``100 * 2 tp / (n_pred + n_gold)``).

``paired_bootstrap`` compares two conditions on the same items (and the same seeds where there are
several): each resample draws items (and seeds) with replacement, identically for both sides, and recomputes
the delta. The interval is the percentile interval; the p-value is the two-sided test of "no difference"
(the bootstrap distribution shifted to mean zero). ``holm`` and ``benjamini_hochberg`` adjust a family of
p-values. How many seeds detect an effect is ``studies/power.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Formula = tuple
CORRECTIONS = ("holm", "bh")
CORRECTION_NAMES = {"holm": "Holm–Bonferroni (family-wise error)", "bh": "Benjamini–Hochberg (false discovery rate)"}


def components(outcomes: Mapping[str, Sequence[float]], formula: Formula) -> np.ndarray:
    """Per-item component matrix (N, K) of ``formula`` from outcome columns (one value per item each)."""
    kind = formula[0]
    col = {k: np.asarray(v, dtype=np.float64) for k, v in outcomes.items() if k not in ("key", "key_hash")}
    try:
        if kind == "ratio":
            return np.stack([col[formula[1]], col[formula[2]]], axis=-1)
        if kind == "recall":
            _, rank, k, query = formula
            return np.stack([col[query] * (col[rank] < k), col[query]], axis=-1)
        if kind == "mean_recall":
            _, rank, k, first, second = formula
            hit = col[rank] < k
            return np.stack([col[first] * hit, col[first], col[second] * hit, col[second]], axis=-1)
        if kind == "f1":
            return np.stack([col[name] for name in formula[1:]], axis=-1)
    except KeyError as err:
        raise ValueError(f"Outcomes lack column {err.args[0]!r} needed by {formula}; they have {sorted(col)}") from None
    raise ValueError(f"Unknown formula {formula!r}; kinds: ratio, recall, mean_recall, f1")


def formula_value(sums: np.ndarray, formula: Formula) -> np.ndarray:
    """The metric (%) from component sums (..., K); NaN where the denominator is 0."""
    sums = np.asarray(sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if formula[0] in ("ratio", "recall"):
            return 100.0 * sums[..., 0] / sums[..., 1]
        if formula[0] == "mean_recall":
            return 50.0 * (sums[..., 0] / sums[..., 1] + sums[..., 2] / sums[..., 3])
        tp, n_pred, n_gold = sums[..., 0], sums[..., 1], sums[..., 2]
        return np.where(tp > 0, 100.0 * 2 * tp / (n_pred + n_gold), 0.0)


def reaggregate(outcomes: Mapping[str, Sequence[float]], formula: Formula) -> float:
    """The metric of a whole outcome set: what the metric object computed, recomputed from its samples."""
    return float(formula_value(components(outcomes, formula).sum(axis=0), formula))


@dataclass(frozen=True)
class Bootstrap:
    """A paired-bootstrap comparison: condition minus baseline."""

    delta: float
    low: float
    high: float
    p: float
    n_items: int
    n_seeds: int
    resamples: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _block_deltas(
    baseline: np.ndarray, condition: np.ndarray, formula: Formula, item_idx: np.ndarray, seed_idx: np.ndarray
) -> np.ndarray:
    """Per resample: metric(condition) - metric(baseline), averaged over the resampled seeds. Arrays (S, N, K),
    indices (B, N) and (B, S); the items' resample counts are applied in chunks so memory stays O(chunk * N)."""
    out = np.empty(len(item_idx))
    n_items = baseline.shape[1]
    for start in range(0, len(item_idx), 256):
        idx = item_idx[start : start + 256]
        counts = np.zeros((len(idx), n_items))
        np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1.0)  # (b, N): how often each item was drawn
        sums_c = np.einsum("bn,snk->bsk", counts, condition)
        sums_b = np.einsum("bn,snk->bsk", counts, baseline)
        per_seed = formula_value(sums_c, formula) - formula_value(sums_b, formula)  # (b, S)
        out[start : start + len(idx)] = np.take_along_axis(per_seed, seed_idx[start : start + 256], axis=1).mean(1)
    return out


def resample_indices(n_items: int, n_seeds: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (items (B, N), seeds (B, S)) drawn with replacement; seeds are not resampled when there is one."""
    rng = np.random.default_rng(seed)
    item_idx = rng.integers(0, n_items, size=(resamples, n_items))
    seed_idx = rng.integers(0, n_seeds, size=(resamples, n_seeds)) if n_seeds > 1 else np.zeros((resamples, 1), int)
    return item_idx, seed_idx


def paired_bootstrap(
    baseline: np.ndarray | Sequence[np.ndarray],
    condition: np.ndarray | Sequence[np.ndarray],
    formula: Formula,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Bootstrap:
    """Paired bootstrap of ``metric(condition) - metric(baseline)`` over items and seeds.

    Args:
        baseline: components (S, N, K): S seeds x N items (same items, same order, as ``condition``); or a
            list of such blocks (one per language, each its own N), whose metrics are averaged (``avg_xling``).
        condition: the same shape(s); seed s of both sides is paired (same start, same data order).
        formula: the metric's formula (module docstring).
        resamples: bootstrap resamples B.
        seed: seed of the resampling (fixed: the same outcomes give the same interval and p).
        level: interval coverage.

    Returns:
        The observed delta (mean over seeds and blocks), its percentile interval and the two-sided p-value
        ``(1 + #{|d* - d| >= |d|}) / (B + 1)``. Each resample draws every block's items (block by block,
        ``resample_indices`` order for one block), then one set of seeds shared by all blocks. A resample whose
        metric is undefined (it drew no item a formula divides by) is left out; ``resamples`` counts those used.
    """
    blocks_b = [baseline] if isinstance(baseline, np.ndarray) else list(baseline)
    blocks_c = [condition] if isinstance(condition, np.ndarray) else list(condition)
    blocks_b = [np.asarray(b, np.float64) for b in blocks_b]
    blocks_c = [np.asarray(c, np.float64) for c in blocks_c]
    shapes = [(b.shape, c.shape) for b, c in zip(blocks_b, blocks_c)]
    if (
        len(blocks_b) != len(blocks_c)
        or not blocks_b
        or any(sb != sc or len(sb) != 3 for sb, sc in shapes)
        or len({sb[0] for sb, _ in shapes}) != 1
    ):
        raise ValueError(
            f"paired_bootstrap needs (seeds, items, K) arrays of one shape per block and one seed count, got "
            f"{shapes}: pair the runs by seed and item key first"
        )
    n_seeds = blocks_b[0].shape[0]
    observed = float(
        np.mean(
            [
                np.mean(formula_value(c.sum(1), formula) - formula_value(b.sum(1), formula))
                for b, c in zip(blocks_b, blocks_c)
            ]
        )
    )
    rng = np.random.default_rng(seed)
    item_idx = [rng.integers(0, b.shape[1], size=(resamples, b.shape[1])) for b in blocks_b]
    seed_idx = rng.integers(0, n_seeds, size=(resamples, n_seeds)) if n_seeds > 1 else np.zeros((resamples, 1), int)
    deltas = np.mean(
        [_block_deltas(b, c, formula, idx, seed_idx) for b, c, idx in zip(blocks_b, blocks_c, item_idx)], axis=0
    )
    # a resample can draw no item of a kind a formula divides by (retrieval: no image query of a small gallery):
    # its metric is undefined, and it is left out (counted in ``resamples``) instead of making the interval NaN
    deltas = deltas[np.isfinite(deltas)]
    n_items = sum(b.shape[1] for b in blocks_b)
    if not len(deltas) or not math.isfinite(observed):
        return Bootstrap(observed, math.nan, math.nan, math.nan, n_items, n_seeds, len(deltas))
    low, high = np.quantile(deltas, [(1 - level) / 2, (1 + level) / 2])
    extreme = int(np.sum(np.abs(deltas - observed) >= abs(observed) - 1e-12))
    return Bootstrap(
        observed, float(low), float(high), (1 + extreme) / (len(deltas) + 1), n_items, n_seeds, len(deltas)
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN entries stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full_like(p, np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (q-values, step-up, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full_like(p, np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 1.0
    for i in range(m - 1, -1, -1):
        running = min(running, m * p[order[i]] / (i + 1))
        out[order[i]] = min(1.0, running)
    return out.tolist()


def adjust(pvalues: Sequence[float], correction: str) -> list[float]:
    """``holm`` or ``bh`` adjusted p-values."""
    if correction not in CORRECTIONS:
        raise ValueError(f"Unknown correction {correction!r}; choose one of {list(CORRECTIONS)}")
    return holm(pvalues) if correction == "holm" else benjamini_hochberg(pvalues)
