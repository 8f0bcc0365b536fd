"""WebDataset pipelines: shard URLs -> decoded task samples -> batches.

Training (infinite, resampled)::

    ResampledShardStream  rank/worker partition of the shard list, shards drawn with a seeded RNG
    tarfile_to_samples    tar members grouped by __key__ (a broken tar is counted, not fatal)
    shuffle               raw bytes in the buffer: decoding happens after the shuffle
    SafeDecoder           json + JPEG (draft mode) only; corrupt samples counted in sample["skipped"]
    batched + Collator    tokenization in the worker

Evaluation (finite, exact)::

    SimpleShardList -> split by rank (from the trainer) -> split by worker -> tarfile_to_samples
    -> SafeDecoder(strict) -> batched(partial=True) + Collator

Nothing from a shard is ever unpickled: only ``json`` and image members are decoded; any other member
(``.pyd``, ``.pth``, ``.pkl``, ...) is ignored.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import webdataset as wds
from PIL import Image

IMAGE_KEYS = ("jpg", "img0.jpg", "img1.jpg")


class DataError(ValueError):
    """A sample or shard that cannot be read, named by shard and key."""


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class ResampledShardStream(torch.utils.data.IterableDataset):
    """Infinite shard stream for training: this rank's and worker's share of the shards, resampled.

    Partitioning by rank then worker keeps the streams disjoint when there are enough shards (preflight
    requires workers × ranks); with fewer shards every worker resamples all of them with its own seed.
    The RNG depends on (seed, rank, worker), so a run is reproducible and the order never repeats.
    """

    def __init__(self, urls: Sequence[str], *, seed: int, rank: int, world_size: int) -> None:
        self.urls, self.seed, self.rank, self.world_size = list(urls), seed, rank, world_size

    def __iter__(self) -> Iterator[dict[str, str]]:
        worker, num_workers = _worker()
        streams = self.world_size * num_workers
        slot = self.rank * num_workers + worker
        mine = self.urls[slot::streams] if len(self.urls) >= streams else self.urls
        rng = random.Random(f"{self.seed}-{self.rank}-{worker}")
        while True:
            yield {"url": rng.choice(mine)}


def split_by_rank(rank: int, world_size: int) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Evaluation shard split; rank and world size come from the trainer (spawned workers lack RANK)."""

    def stage(src: Iterator[dict]) -> Iterator[dict]:
        for i, item in enumerate(src):
            if i % world_size == rank:
                yield item

    return stage


def decode_image(data: bytes, size: int | None) -> Image.Image:
    """JPEG decode in draft mode: the DCT scales down by 2/4/8 straight to (at least) ``size``."""
    img = Image.open(io.BytesIO(data))
    if size is not None and img.format == "JPEG":
        img.draft("RGB", (size, size))
    return img.convert("RGB")


class SafeDecoder:
    """Raw tar sample -> ``{"__key__", "__url__", "json", "images": [tensors]}``.

    ``strict`` (evaluation): a bad sample raises ``DataError`` naming the shard and the key.
    Otherwise (training) it is skipped and counted by reason; the counts ride on the next good sample.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor] | None, *, draft_size: int | None,
                 required: Sequence[str], num_images: int, num_labels: int = 0, strict: bool) -> None:  # fmt: skip
        self.transform, self.draft_size, self.required = transform, draft_size, tuple(required)
        self.num_images, self.num_labels, self.strict = num_images, num_labels, strict
        self.pending: Counter[str] = Counter()

    def count(self, reason: str) -> None:
        self.pending[reason] += 1

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for raw in src:
            try:
                sample = self.decode(raw)
            except DataError as err:
                if self.strict:
                    raise
                self.count(err.args[1] if len(err.args) > 1 else "other")
                continue
            if self.pending:
                sample["skipped"], self.pending = dict(self.pending), Counter()
            yield sample

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
        where = f"shard {url}, key {key!r}"
        if "json" not in raw:
            raise DataError(f"{where}: no json member (members: {sorted(k for k in raw if not k.startswith('__'))})",
                            "missing_json")  # fmt: skip
        try:
            record = json.loads(raw["json"])
        except ValueError as err:
            raise DataError(f"{where}: json does not parse ({err})", "bad_json") from None
        missing = [f for f in self.required if f not in record]
        if missing:
            raise DataError(f"{where}: json lacks field(s) {missing}; rebuild the shard", "missing_field")
        self.check_labels(record, where)
        images = []
        names = ["jpg"] if self.num_images == 1 else ["img0.jpg", "img1.jpg"][: self.num_images]
        for name in names:
            if name not in raw:
                raise DataError(f"{where}: image member {name!r} missing", "missing_image")
            try:
                img = decode_image(raw[name], self.draft_size)
            except Exception as err:  # noqa: BLE001 - PIL raises many types for corrupt data
                raise DataError(f"{where}: {name} is not a readable image ({err})", "bad_image") from None
            images.append(self.transform(img) if self.transform else img)
        return {"__key__": key, "__url__": url, "json": record, "images": images}

    def check_labels(self, record: dict[str, Any], where: str) -> None:
        if not self.num_labels:
            return
        labels = record.get("labels", [record["label"]] if "label" in record else [])
        if isinstance(labels, int):
            labels = [labels]
        bad = [x for x in labels if not isinstance(x, int) or x >= self.num_labels or x < -1]
        if bad:
            raise DataError(f"{where}: label(s) {bad} outside the vocabulary of {self.num_labels}", "bad_label")


def safe_member(name: str) -> bool:
    """Only json and JPEG members are read out of a tar at all; anything else never reaches memory."""
    return name.endswith((".json", ".jpg"))


def tar_handler(decoder: SafeDecoder, strict: bool) -> Callable[[Exception], bool]:
    """webdataset error handler: evaluation re-raises naming the shard; training counts and goes on."""

    def handle(exn: Exception) -> bool:
        if strict:
            raise DataError(f"cannot read shard: {exn}") from exn
        decoder.count("bad_tar")
        return True

    return handle


def train_pipeline(urls: Sequence[str], *, collate: Callable, batch_size: int, decoder: SafeDecoder, seed: int,
                   rank: int, world_size: int, shuffle_buffer: int = 1000) -> wds.DataPipeline:  # fmt: skip
    return wds.DataPipeline(
        ResampledShardStream(urls, seed=seed, rank=rank, world_size=world_size),
        wds.tarfile_to_samples(handler=tar_handler(decoder, strict=False), select_files=safe_member),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(f"shuffle-{seed}-{rank}")),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )


def eval_pipeline(urls: Sequence[str], *, collate: Callable, batch_size: int, decoder: SafeDecoder, rank: int,
                  world_size: int) -> wds.DataPipeline:  # fmt: skip
    return wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        split_by_rank(rank, world_size),
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=tar_handler(decoder, strict=True), select_files=safe_member),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
