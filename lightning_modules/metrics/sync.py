"""Shared pieces: percentages, stable id hashes, and the all-gather that tolerates empty ranks."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

NAN = float("nan")

SimBlocks = Callable[[], Iterator[tuple[int, Tensor]]]


def cosine_blocks(queries: Tensor, keys: Tensor, chunk: int = 4096) -> SimBlocks:
    """A re-iterable of ``(row_start, sim rows)``: cosine similarity queries x keys, ``chunk`` rows at once."""
    queries, keys = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
    return lambda: ((s, queries[s : s + chunk] @ keys.T) for s in range(0, queries.shape[0], chunk))


def percent(num: Tensor, den: Tensor) -> Tensor:
    """100 * num / den as float32, NaN when nothing was counted."""
    if den.item() == 0:
        return torch.tensor(NAN)
    return (100.0 * num.float() / den.float()).cpu()


def hash_ids(ids: Sequence[str | int]) -> Tensor:
    """Stable signed 64-bit hashes of ``str(id)`` (Python's ``hash`` is salted per process, so unusable)."""
    digests = [hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in ids]
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.long)


def gather_ragged(tensor: Tensor, group: Any | None = None) -> list[Tensor]:
    """All-gather tensors whose first dimension differs across ranks; empty ranks take the others' shape.

    Used as ``dist_sync_fn``: torchmetrics replaces the list state of a rank without samples by a float
    ``(0,)`` placeholder; here every empty state becomes ``(0, *shape[1:])`` with the dtype of a rank that
    has data, so all ranks send one shape and dtype.
    """
    group = group if group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    if tensor.ndim == 0:
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor.contiguous(), group=group)
        return out
    meta: list[Any] = [None] * world
    dist.all_gather_object(meta, (tuple(tensor.shape), tensor.dtype), group=group)
    preference = (
        [m for m in meta if math.prod(m[0]) > 0]  # has data
        + [m for m in meta if len(m[0]) > 1 or not m[1].is_floating_point]  # empty but not the placeholder
        + [(tuple(tensor.shape), tensor.dtype)]
    )
    ref_shape, ref_dtype = preference[0]
    sizes = [shape[0] if math.prod(shape) > 0 else 0 for shape, _ in meta]
    local = tensor if tensor.numel() > 0 else tensor.new_empty((0, *ref_shape[1:]), dtype=ref_dtype)
    if max(sizes) == 0:  # nothing anywhere: no communication needed
        return [local] * world
    padded = local.new_zeros((max(sizes), *ref_shape[1:]))
    padded[: local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return [o[:n] for o, n in zip(out, sizes)]


def cat_state(state: list[Tensor] | Tensor, empty: Tensor) -> Tensor:
    """Concatenate a list state (already synced or local); ``empty`` when no rank saw a sample."""
    if isinstance(state, Tensor):
        return state
    return dim_zero_cat(state) if state else empty


class RaggedMetric(Metric):
    """Base for metrics with list states: syncs through ``gather_ragged`` unless told otherwise."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)
        super().__init__(**kwargs)
