"""Negative controls as pipeline stages: the same images and texts, no task signal.

``shuffle_labels: true`` on a task (``data.tasks[*].shuffle_labels``) wraps its training collate in
``LabelShuffle``: within each batch, the samples' targets are permuted among the samples before
tokenization. The labels keep their distribution exactly (each batch holds the same multiset of targets),
the pictures and texts are untouched, and the pairing of a target with its input is broken, so a run on it
separates "the towers saw these images and texts" from "the model learnt the task". The permutations are a
fixed sequence per seed (and loader worker), so a rerun with the same seed shuffles identically.

What is permuted, per family: the class label (classification, image_pair, multiple_choice), the answer
with its soft scores (vqa), the captions of each image (retrieval): each family's ``shuffled`` fields in
``contracts/fields.py``. Other families have no target that can be moved between samples without changing the
input, and are refused.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from contracts.fields import FAMILY_FIELDS, family_fields


def shuffled_fields(task: str, family: str) -> tuple[str, ...]:
    """The json fields ``shuffle_labels`` permutes for ``family``; a clear error for families without them."""
    fields = family_fields(family).shuffled
    if not fields:
        supported = sorted(name for name, schema in FAMILY_FIELDS.items() if schema.shuffled)
        raise ValueError(
            f"data.tasks[{task}].shuffle_labels: the {family} family has no label that can be shuffled between "
            f"samples (supported: {supported}); remove shuffle_labels for {task}"
        )
    return fields


def permute_targets(samples: Sequence[dict[str, Any]], fields: Sequence[str], rng: random.Random) -> list[dict]:
    """Copies of ``samples`` whose ``json[field]`` values are permuted together across the samples."""
    order = list(range(len(samples)))
    rng.shuffle(order)
    out = []
    for sample, source in zip(samples, order):
        record = dict(sample["json"])
        for name in fields:
            if name in samples[source]["json"]:
                record[name] = samples[source]["json"][name]
            else:
                record.pop(name, None)
        out.append({**sample, "json": record})
    return out


class LabelShuffle:
    """A collate function that permutes the targets within each batch, then calls the real collate.

    Args:
        collate: the task's collate (samples -> batch).
        fields: json fields moved together (``shuffled_fields``).
        seed: the run's seed; with the loader worker's id it fixes the permutation sequence.
    """

    def __init__(self, collate: Callable[[list[dict]], dict], fields: Sequence[str], seed: int) -> None:
        self.collate, self.fields, self.seed = collate, tuple(fields), seed
        self._rng: random.Random | None = None

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if self._rng is None:  # created in the worker, so each worker has its own fixed sequence
            info = torch.utils.data.get_worker_info()
            self._rng = random.Random(f"shuffle-labels/{self.seed}/{info.id if info is not None else 0}")
        return self.collate(permute_targets(samples, self.fields, self._rng))
