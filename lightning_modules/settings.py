"""Range checks of numeric settings, run where the settings are read (module and datamodule construction).

A value outside its range fails at config time with the key and the valid range, instead of training by gradient
ascent (``lr < 0``), failing in a loader worker (negative batch size, ``max_length`` not a multiple of 8) or being
silently meaningless (a warm-up longer than the run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# key suffix -> (minimum, maximum, minimum is exclusive); None: unbounded on that side
Range = tuple[float | None, float | None, bool]
POSITIVE: Range = (0, None, True)
NON_NEGATIVE: Range = (0, None, False)
AT_LEAST_ONE: Range = (1, None, False)

MODEL_RANGES: dict[str, Range] = {
    "lr": POSITIVE, "head_lr": POSITIVE, "weight_decay": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE,
    "freeze_text_layers": NON_NEGATIVE,
}  # fmt: skip
DATA_RANGES: dict[str, Range] = {
    "batch_size": AT_LEAST_ONE, "eval_batch_size": AT_LEAST_ONE, "num_workers": NON_NEGATIVE,
    "eval_num_workers": NON_NEGATIVE, "steps_per_epoch": AT_LEAST_ONE, "temperature": POSITIVE,
    "example_cap": AT_LEAST_ONE, "shuffle_buffer": NON_NEGATIVE,
}  # fmt: skip
TASK_RANGES: dict[str, Range] = {"batch_size": AT_LEAST_ONE, "weight": POSITIVE, "loss_weight": NON_NEGATIVE}
PAD_MULTIPLE = 8  # datamodules/collate.py pads every batch to a multiple of 8 tokens (tensor-core friendly)


def describe(bounds: Range) -> str:
    low, high, exclusive = bounds
    parts = []
    if low is not None:
        parts.append(f"{'>' if exclusive else '≥'} {low:g}")
    if high is not None:
        parts.append(f"≤ {high:g}")
    return " and ".join(parts)


def check_range(key: str, value: float | None, bounds: Range) -> None:
    """Raise ``ValueError`` naming ``key`` and the valid range when ``value`` (None: unset, allowed) is outside it."""
    if value is None:
        return
    low, high, exclusive = bounds
    bad = isinstance(value, float) and math.isnan(value)
    bad |= low is not None and (value <= low if exclusive else value < low)
    bad |= high is not None and value > high
    if bad:
        raise ValueError(f"{key}={value}: out of range, must be {describe(bounds)}")


def check_ranges(prefix: str, values: Mapping[str, Any], ranges: Mapping[str, Range]) -> None:
    """``check_range`` for every key of ``ranges`` present in ``values`` (``prefix``: e.g. ``model.``)."""
    for name, bounds in ranges.items():
        check_range(prefix + name, values.get(name), bounds)


def check_max_length(max_length: int) -> None:
    if max_length < PAD_MULTIPLE or max_length % PAD_MULTIPLE:
        up = max(PAD_MULTIPLE, math.ceil(max_length / PAD_MULTIPLE) * PAD_MULTIPLE)
        raise ValueError(f"data.max_length={max_length}: must be a positive multiple of {PAD_MULTIPLE} (batches are "
                         f"padded to multiples of {PAD_MULTIPLE} tokens); e.g. {up}")  # fmt: skip


def warmup_length(warmup_steps: float, max_steps: int) -> int:
    """Warm-up steps: ``warmup_steps`` itself, or a fraction of ``max_steps`` when below 1."""
    return int(warmup_steps * max_steps) if warmup_steps < 1 else int(warmup_steps)


def check_warmup(warmup_steps: float, max_steps: int) -> None:
    """The warm-up must end before the run does (``max_steps`` ≤ 0: not known yet, not checked)."""
    if max_steps > 0 and warmup_length(warmup_steps, max_steps) >= max_steps:
        raise ValueError(f"model.warmup_steps={warmup_steps}: the warm-up ({warmup_length(warmup_steps, max_steps)} "
                         f"steps) must be shorter than trainer.max_steps={max_steps}; give fewer steps or a fraction "
                         "< 1 of the run")  # fmt: skip
