"""Per-sample outcomes of the test metrics, so two runs on one test set can be compared item by item.

Every metric class keeps, next to its sums, one row per test item (``OutcomeStates``): the item's key (a
stable 64-bit hash, plus the string where this rank saw it) and a few numbers whose sums over items give
the metric back through the formulas of ``lightning_modules.stats`` (``outcome_formulas()``):

============================  ==========================================  =====================================
family                        one row per                                 columns
============================  ==========================================  =====================================
classification, image_pair,   sample                                      ``correct``, ``total`` (1)
multiple_choice
tagging (``acc``)             sentence                                    ``correct``, ``total`` (words)
tagging (``span_f1``)         sentence                                    ``tp``, ``n_pred``, ``n_gold``
vqa                           question                                    ``score``, ``total``
span_qa                       question                                    ``em``, ``f1``, ``total``
retrieval                     query: each text (IR), each image (TR)      ``rank``, ``ir``, ``tr``
Tatoeba                       source sentence                             ``correct``, ``total``, ``rank``
BUCC                          source sentence                             ``tp``, ``n_pred``, ``n_gold``
============================  ==========================================  =====================================

The rows are list states synced across DDP ranks by the same ``gather_ragged`` as the metric's own, so
after a sync every item counts exactly once. ``write_outcomes`` writes them to ``outcomes.jsonl`` next to
``results.json``: one JSON line per item ``{"task", "lang", "key", "key_hash", ...columns}``, then one line
per (task, language) with ``"formulas"`` (the metric name -> formula map), so the file explains itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_modules.atomic import atomic_open
from lightning_modules.metrics.sync import cat_state, hash_ids
from lightning_modules.stats import OUTCOMES_FILE, read_outcomes  # noqa: F401  (re-exported: the file's reader)


@contextlib.contextmanager
def synced(metric: Any) -> Iterator[None]:
    """Every rank's states inside the block (as ``compute`` sees them), the local ones restored after: a
    collective, so every rank must call it, in the same order as ``compute``."""
    with metric.sync_context(dist_sync_fn=metric.dist_sync_fn, should_sync=metric._to_sync, should_unsync=True):
        yield


class OutcomeStates:
    """Mixin for a ``torchmetrics.Metric``: per-item key hashes and numeric columns as ``cat`` list states.

    Call ``_init_outcomes(columns)`` in ``__init__`` (after ``super().__init__``) and ``_record(keys, ...)``
    in ``update``; ``outcomes()`` returns the synced rows, or None when some update had no usable keys.
    """

    outcome_columns: tuple[str, ...] = ()

    def _init_outcomes(self, columns: Sequence[str]) -> None:
        self.outcome_columns = tuple(columns)
        self.add_state("out_key", [], dist_reduce_fx="cat")
        for col in self.outcome_columns:
            self.add_state(f"out_{col}", [], dist_reduce_fx="cat")
        self.add_state("out_missing", torch.tensor(0), dist_reduce_fx="sum")
        self._key_names: dict[int, str] = {}

    def _record(self, keys: Sequence[str] | None, **columns: Tensor | Sequence[float]) -> None:
        """One row per key; an update without keys (or with a mismatched count) marks the outcomes incomplete."""
        lengths = {len(v) for v in columns.values()}
        if keys is None or lengths != {len(keys)}:
            self.out_missing += 1
            return
        hashes = hash_ids(keys)
        self._key_names.update(zip(hashes.tolist(), map(str, keys)))
        self.out_key.append(hashes.to(self.device))
        for col in self.outcome_columns:
            value = columns[col]
            value = value if isinstance(value, Tensor) else torch.tensor(list(value), dtype=torch.float64)
            getattr(self, f"out_{col}").append(value.detach().to(self.device, torch.float64).reshape(-1))

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._key_names = {}

    def outcome_formulas(self) -> dict[str, tuple]:
        """Metric name -> formula over the outcome columns (``lightning_modules.stats``)."""
        raise NotImplementedError

    def outcomes(self) -> dict[str, list] | None:
        """``{"key": [...], "key_hash": [...], column: [...]}`` over every rank's items; None if incomplete."""
        with synced(self):
            return self._local_outcomes()

    def _local_outcomes(self) -> dict[str, list] | None:
        if int(self.out_missing) > 0:
            return None
        empty = torch.empty(0, dtype=torch.float64, device=self.device)
        hashes = cat_state(self.out_key, torch.empty(0, dtype=torch.long, device=self.device)).tolist()
        out: dict[str, list] = {"key": [self._key_names.get(h) for h in hashes], "key_hash": hashes}
        for col in self.outcome_columns:
            out[col] = cat_state(getattr(self, f"out_{col}"), empty).tolist()
        return out


def outcome_lines(task: str, lang: str, outcomes: Mapping[str, list], formulas: Mapping[str, tuple]) -> list[dict]:
    """The JSON lines of one (task, language): one per item, then its formulas line."""
    columns = [c for c in outcomes if c not in ("key", "key_hash")]
    lines = [
        {"task": task, "lang": lang, "key": outcomes["key"][i], "key_hash": outcomes["key_hash"][i],
         **{c: outcomes[c][i] for c in columns}}
        for i in range(len(outcomes["key_hash"]))
    ]  # fmt: skip
    lines.append({"task": task, "lang": lang, "formulas": {k: list(v) for k, v in formulas.items()}})
    return lines


def write_outcomes(run_dir: str | Path, per_set: Iterable[tuple[str, str, Mapping[str, list], Mapping[str, tuple]]],
                   extra: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``outcomes.jsonl`` into ``run_dir`` from ``(task, lang, outcomes, formulas)`` per test set.

    ``extra`` (e.g. the run's seed and controls) is added to every line.
    """
    path = Path(run_dir) / OUTCOMES_FILE
    with atomic_open(path) as f:  # whole or not at all
        for task, lang, outcomes, formulas in per_set:
            for line in outcome_lines(task, lang, outcomes, formulas):
                f.write(json.dumps({**line, **(extra or {})}) + "\n")
    return path
