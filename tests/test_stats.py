"""Significance machinery against hand-computed cases: paired bootstrap, Holm, Benjamini-Hochberg, power."""

from __future__ import annotations

import numpy as np
import pytest

from studies.power import seeds_needed
from studies.stats import (
    benjamini_hochberg,
    components,
    holm,
    paired_bootstrap,
    reaggregate,
    resample_indices,
)

RATIO = ("ratio", "correct", "total")


def _accuracy_components(correct: list[int]) -> np.ndarray:
    return components({"correct": correct, "total": [1] * len(correct)}, RATIO)[None]  # (1 seed, N, 2)


def test_paired_bootstrap_hand_computed() -> None:
    # 4 items; the condition gets items 0-2 right, the baseline none: observed delta 75 points.
    base, cond = _accuracy_components([0, 0, 0, 0]), _accuracy_components([1, 1, 1, 0])
    # The five resamples seed 3 draws (pinned here, so the case below is computed from them by hand):
    items, seeds = resample_indices(4, 1, 5, seed=3)
    assert items.tolist() == [[3, 0, 0, 0], [0, 3, 3, 2], [0, 0, 1, 1], [2, 1, 1, 0], [2, 2, 0, 0]]
    assert seeds.tolist() == [[0]] * 5
    # Per resample, delta = 100 * (draws that are not item 3) / 4: 75, 50, 100, 100, 100.
    # Sorted 50, 75, 100, 100, 100: the 2.5 % quantile (linear) is 50 + 0.1 * 25 = 52.5, the 97.5 % is 100.
    # p: no resample has |d* - 75| >= 75, so p = (1 + 0) / (5 + 1).
    result = paired_bootstrap(base, cond, RATIO, resamples=5, seed=3)
    assert (result.delta, result.low, result.high) == pytest.approx((75.0, 52.5, 100.0))
    assert result.p == pytest.approx(1 / 6)
    assert (result.n_items, result.n_seeds) == (4, 1)


def test_no_difference_gives_p_one_and_zero_interval() -> None:
    same = _accuracy_components([1, 0, 1, 1, 0])
    result = paired_bootstrap(same, same, RATIO, resamples=200, seed=0)
    assert (result.delta, result.low, result.high, result.p) == (0.0, 0.0, 0.0, 1.0)


def test_seeds_are_resampled_and_paired() -> None:
    # Two seeds; the condition is +20 points on seed 0 and +0 on seed 1, identical items otherwise.
    base = np.concatenate([_accuracy_components([0] * 5), _accuracy_components([1, 1, 0, 0, 0])])
    cond = np.concatenate([_accuracy_components([1, 0, 0, 0, 0]), _accuracy_components([1, 1, 0, 0, 0])])
    result = paired_bootstrap(base, cond, RATIO, resamples=400, seed=1)
    assert result.delta == pytest.approx(10.0) and result.n_seeds == 2
    assert result.low <= 0.0 < result.high  # one seed shows nothing: the interval must include 0
    # Language blocks: the aggregate is the mean of the per-language deltas.
    two = paired_bootstrap([base, base], [cond, base], RATIO, resamples=50, seed=1)
    assert two.delta == pytest.approx(5.0) and two.n_items == 10


def test_paired_bootstrap_detects_a_clear_gain() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.5).astype(int)
    cond = np.where(rng.random(400) < 0.3, 1, base)  # fixes ~30 % of the errors: about +15 points
    result = paired_bootstrap(_accuracy_components(list(base)), _accuracy_components(list(cond)), RATIO, seed=0)
    assert result.low > 0 and result.p < 0.01


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="pair the runs by seed and item key"):
        paired_bootstrap(_accuracy_components([1, 0]), _accuracy_components([1, 0, 1]), RATIO)


def test_holm_and_bh_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    # Holm: sorted .01 .03 .04 .5 times 4 3 2 1 = .04 .09 .08 .5, made monotone: .04 .09 .09 .5
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # BH: sorted times 4/1 4/2 4/3 4/4 = .04 .06 .0533 .5, cumulative min from the top: .04 .0533 .0533 .5
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert holm([0.2, float("nan")])[1] != holm([0.2, float("nan")])[1]  # NaN stays NaN
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_formulas_reaggregate() -> None:
    assert (
        reaggregate(
            {"rank": [0, 3, 0, 12], "ir": [1, 1, 0, 0], "tr": [0, 0, 1, 1]}, ("mean_recall", "rank", 1, "ir", "tr")
        )
        == 50.0
    )
    assert reaggregate({"tp": [1, 0], "n_pred": [2, 0], "n_gold": [1, 1]}, ("f1", "tp", "n_pred", "n_gold")) == 50.0
    with pytest.raises(ValueError, match="lack column 'total'"):
        reaggregate({"correct": [1]}, RATIO)


def test_seeds_needed_by_hand() -> None:
    # 8 items of 0/100 with 5 hits: item var = 100^2 * (5*3/8) / 7 ... computed by numpy below by definition.
    scores = np.array([100, 0, 100, 0, 100, 100, 0, 100.0])
    item_var = scores.var(ddof=1)
    var_one = 2 * 2.0**2 + 2 * item_var / 8  # seed sd 2 (values 60, 62.828...)
    expected = int(np.ceil((1.959963984540054 + 0.8416212335729143) ** 2 * var_one / 10**2))
    power = seeds_needed(scores, 10.0, seed_values=[60.0, 60.0 + 2.0 * 2**0.5])
    assert power.seeds == expected and power.seed_sd == pytest.approx(2.0)
    assert seeds_needed(scores, 20.0).seeds < power.seeds  # bigger effects need fewer seeds
    assert seeds_needed(scores, 10.0).seed_sd is None  # one seed: no seed variance known
    with pytest.raises(ValueError, match="effect"):
        seeds_needed(scores, 0.0)


def test_resamples_without_a_query_kind_are_left_out_not_nan() -> None:
    """A small retrieval gallery: a resample that draws no image query has no image R@1. It made the study's
    interval [+nan, +nan] and its p-value count it as not extreme (issue 22's rehearsal)."""
    formula = ("mean_recall", "rank", 1, "ir", "tr")
    ir, tr = [1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]  # one image query among six
    base = components({"rank": [0, 0, 3, 3, 0, 3], "ir": ir, "tr": tr}, formula)[None]
    cond = components({"rank": [0, 0, 0, 0, 0, 3], "ir": ir, "tr": tr}, formula)[None]
    result = paired_bootstrap(base, cond, formula, resamples=500, seed=1)
    assert np.isfinite([result.low, result.high, result.p]).all()
    assert 100 < result.resamples < 500  # about (5/6)^6 = 33 % of the resamples drew no image query
    assert result.low <= result.delta <= result.high
