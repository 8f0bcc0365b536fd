"""Multi-task mixing: one task per optimizer step, the same task on every rank.

The task of step ``t`` is a pure function of (seed, t, weights): every rank computes it alone, so DDP ranks
always run the same head, and resuming at step ``t`` continues the same sequence. The state saved in a
checkpoint is just that triple.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

SamplerKind = Literal["uniform", "proportional", "temperature", "fixed"]


def task_weights(
    kind: SamplerKind,
    sizes: Mapping[str, int],
    *,
    temperature: float = 2.0,
    example_cap: int | None = None,
    fixed: Mapping[str, float | None] | None = None,
) -> dict[str, float]:
    """Sampling probabilities per task (jiant's temperature sampling: ``min(n, cap) ** (1 / T)``)."""
    if kind == "uniform":
        raw = {name: 1.0 for name in sizes}
    elif kind == "proportional":
        raw = {name: float(n) for name, n in sizes.items()}
    elif kind == "temperature":
        cap = example_cap or max(sizes.values())
        raw = {name: float(min(n, cap)) ** (1.0 / temperature) for name, n in sizes.items()}
    elif kind == "fixed":
        fixed = fixed or {}
        missing = [name for name in sizes if fixed.get(name) is None]
        if missing:
            raise ValueError(
                f"data.sampler=fixed needs data.tasks[*].weight for every training task; missing: {missing}"
            )
        raw = {name: float(fixed[name]) for name in sizes}
    else:
        raise ValueError(f"data.sampler={kind!r}; valid: uniform, proportional, temperature, fixed")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"data.sampler={kind}: the task weights sum to {total}; give positive sizes or weights")
    return {name: w / total for name, w in raw.items()}


class TaskSampler:
    """Stateless task choice per step: ``task_at(t)`` depends only on the seed, ``t`` and the weights."""

    def __init__(self, weights: Mapping[str, float], seed: int = 0) -> None:
        self.names: list[str] = sorted(weights)
        self.weights = [weights[n] for n in self.names]
        self.seed = seed

    def task_at(self, step: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        return random.Random(f"task-{self.seed}-{step}").choices(self.names, self.weights)[0]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "names": self.names, "weights": self.weights}


class MultiTaskLoader:
    """The training 'dataloader': ``steps_per_epoch`` homogeneous batches, task chosen per step.

    Each task has its own (infinite) DataLoader. Its iterator is created once and kept across epochs, so
    worker processes and shuffle buffers survive epoch boundaries and the shard order never restarts.
    """

    def __init__(
        self, loaders: Mapping[str, Iterable], sampler: TaskSampler, steps_per_epoch: int, accumulate: int = 1
    ) -> None:
        self.loaders, self.sampler = dict(loaders), sampler
        self.steps_per_epoch, self.accumulate = steps_per_epoch, accumulate
        self.batch_index = 0  # batches handed out so far (restored on resume)
        self._iters: dict[str, Iterator] = {}

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _ in range(self.steps_per_epoch):
            task = self.sampler.task_at(self.batch_index // self.accumulate)
            if task not in self._iters:
                self._iters[task] = iter(self.loaders[task])
            self.batch_index += 1
            yield next(self._iters[task])
