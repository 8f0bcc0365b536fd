"""Ranges of numeric settings, declared on the dataclass field they check and checked where the value is made.

A value outside its range fails at config time with the key and the valid range, instead of training by gradient
ascent (``lr < 0``), failing in a loader worker (negative batch size, ``max_length`` not a multiple of 8) or being
silently meaningless (a warm-up longer than the run).

A setting's range lives on its field (``ranged``), and ``check_fields`` checks every ranged field of a dataclass,
so a renamed field keeps its check::

    @dataclass
    class Optimizer:
        lr: float = ranged(2e-5, POSITIVE)

    check_fields(optimizer, "model.optimizer.")  # where the module reads it

The check runs where the settings are read (module and data module construction), not in ``__post_init__``:
jsonargparse builds a dataclass while it parses (to validate a ``Group | None``), so an error raised there would
reach the user wrapped in its union-validation report instead of as one line. Plain ``__init__`` arguments (the
data module's) use ``check_ranges`` with a table beside the signature.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# (minimum, maximum, minimum is exclusive); None: unbounded on that side
Range = tuple[float | None, float | None, bool]
POSITIVE: Range = (0, None, True)
NON_NEGATIVE: Range = (0, None, False)
AT_LEAST_ONE: Range = (1, None, False)
FRACTION: Range = (0, 1, False)
PAD_MULTIPLE = 8
"""Every batch is padded to a multiple of 8 tokens (tensor-core friendly): ``data.max_length`` must be one too."""


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
    """``check_range`` for every key of ``ranges`` present in ``values`` (``prefix``: e.g. ``data.``)."""
    for name, bounds in ranges.items():
        check_range(prefix + name, values.get(name), bounds)


def ranged(default: Any, bounds: Range) -> Any:
    """A dataclass field with a default and a range (read by ``check_fields``)."""
    return dataclasses.field(default=default, metadata={"range": bounds})


def field_ranges(cls: Any) -> dict[str, Range]:
    """``{field name: range}`` of a dataclass (class or instance): the fields declared with ``ranged``."""
    return {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}


def check_fields(obj: Any, prefix: str) -> None:
    """``check_range`` for every ranged field of the dataclass ``obj`` (``prefix``: e.g. ``model.optimizer.``)."""
    check_ranges(prefix, vars(obj), field_ranges(obj))


def check_max_length(max_length: int) -> None:
    if max_length < PAD_MULTIPLE or max_length % PAD_MULTIPLE:
        up = max(PAD_MULTIPLE, math.ceil(max_length / PAD_MULTIPLE) * PAD_MULTIPLE)
        raise ValueError(
            f"data.max_length={max_length}: must be a positive multiple of {PAD_MULTIPLE} (batches are padded to "
            f"multiples of {PAD_MULTIPLE} tokens); e.g. {up}"
        )
