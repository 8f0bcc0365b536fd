"""Range checks of numeric settings, run where the settings are read (module and datamodule construction).

A value outside its range fails at config time with the key and the valid range, instead of training by gradient
ascent (``lr < 0``), failing in a loader worker (negative batch size, ``max_length`` not a multiple of 8) or being
silently meaningless (a warm-up longer than the run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# (minimum, maximum, minimum is exclusive); None: unbounded on that side
Range = tuple[float | None, float | None, bool]
POSITIVE: Range = (0, None, True)
NON_NEGATIVE: Range = (0, None, False)
AT_LEAST_ONE: Range = (1, None, False)

# model groups (lightning_modules/module.py): key under model.<group>. -> range
MODEL_RANGES: dict[str, dict[str, Range]] = {
    "optimizer": {"lr": POSITIVE, "head_lr": POSITIVE, "weight_decay": NON_NEGATIVE},
    "schedule": {"warmup_steps": NON_NEGATIVE, "warmup_fraction": (0, 1, False)},
    "freezing": {"text_layers": NON_NEGATIVE},
}
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


def check_model_groups(groups: Mapping[str, Mapping[str, Any]]) -> None:
    """``check_ranges`` over the model's setting groups (``{"optimizer": {...}, "schedule": {...}, ...}``)."""
    for group, ranges in MODEL_RANGES.items():
        check_ranges(f"model.{group}.", groups.get(group) or {}, ranges)


def check_warmup(warmup: int, max_steps: int) -> None:
    """The warm-up (in steps) must end before the run does (``max_steps`` ≤ 0: not known yet, not checked)."""
    if max_steps > 0 and warmup >= max_steps:
        raise ValueError(f"model.schedule: the warm-up ({warmup} steps) must be shorter than trainer.max_steps="
                         f"{max_steps}; give fewer warmup_steps or a warmup_fraction < 1")  # fmt: skip
