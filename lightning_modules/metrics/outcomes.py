"""Per-sample outcomes of the test metrics, so two runs on one test set can be compared item by item.

Every metric class keeps, next to its sums, one row per test item (``OutcomeStates``): the item's key (a
stable 64-bit hash, plus the string where this rank saw it) and a few numbers whose sums over items give
the metric back through the formulas of ``studies.stats`` (``outcome_formulas()``):

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
after a sync every item counts exactly once. ``contracts.outcomes.write_outcomes`` writes them to
``outcomes.jsonl`` next to ``results.json`` (the file's format is described there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_modules.metrics.sync import cat_state, hash_ids


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
        """Metric name -> formula over the outcome columns (``studies.stats``)."""
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
