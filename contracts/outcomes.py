"""The per-sample outcomes file ``outcomes.jsonl``: its one writer and its one reader.

A test run writes, next to ``results.json``, one JSON line per test item::

    {"task": ..., "lang": ..., "key": <the sample's key>, "key_hash": <its 64-bit hash>, <column>: <number>, ...}

then one line per (task, language) with ``"formulas"`` (metric name -> formula over the columns, see
``studies/stats.py``), so the file explains itself. The columns are the metric's outcome columns
(``lightning_modules/metrics/outcomes.py``); extra fields given to the writer (the run's seed, its controls) are
on every line. The study's significance tests (``studies/significance.py``) and the demo's per-kind scores
(``shards/demo/rules.py``) read it through ``read_outcomes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contracts.files import atomic_open

OUTCOMES_FILE = "outcomes.jsonl"


def outcome_lines(task: str, lang: str, outcomes: Mapping[str, list], formulas: Mapping[str, tuple]) -> list[dict]:
    """The JSON lines of one (task, language): one per item, then its formulas line."""
    columns = [c for c in outcomes if c not in ("key", "key_hash")]
    lines = [
        {
            "task": task,
            "lang": lang,
            "key": outcomes["key"][i],
            "key_hash": outcomes["key_hash"][i],
            **{c: outcomes[c][i] for c in columns},
        }
        for i in range(len(outcomes["key_hash"]))
    ]
    lines.append({"task": task, "lang": lang, "formulas": {k: list(v) for k, v in formulas.items()}})
    return lines


def write_outcomes(
    run_dir: str | Path,
    per_set: Iterable[tuple[str, str, Mapping[str, list], Mapping[str, tuple]]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``outcomes.jsonl`` into ``run_dir`` from ``(task, lang, outcomes, formulas)`` per test set.

    ``extra`` (e.g. the run's seed and controls) is added to every line.
    """
    path = Path(run_dir) / OUTCOMES_FILE
    with atomic_open(path) as f:  # whole or not at all
        for task, lang, outcomes, formulas in per_set:
            for line in outcome_lines(task, lang, outcomes, formulas):
                f.write(json.dumps({**line, **(extra or {})}) + "\n")
    return path


def read_outcomes(path: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(task, lang): {"rows": {key_hash: {"key": ..., "key_hash": ..., column: value}}, "formulas": {...}}}``
    from an ``outcomes.jsonl`` (a row keeps the ``extra`` fields it was written with, e.g. ``seed``)."""
    sets: dict[tuple[str, str], dict[str, Any]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            entry = sets.setdefault((row["task"], row["lang"]), {"rows": {}, "formulas": {}})
            if "formulas" in row:
                entry["formulas"] = {k: tuple(v) for k, v in row["formulas"].items()}
                continue
            entry["rows"][row["key_hash"]] = {k: v for k, v in row.items() if k not in ("task", "lang")}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}:{n}: not an outcomes line ({err}); rerun the test to rewrite it") from None
    return sets
