"""WebDataset pipelines: shard URLs -> decoded task samples -> batches.

Training (infinite, resampled)::

    ResampledShardStream  rank/worker partition of the shard list, shards drawn with a seeded RNG
    ShardReader           tar members grouped by __key__; a broken, empty or duplicate-key shard is counted
    shuffle               raw bytes in the buffer: decoding happens after the shuffle
    SafeDecoder           json + JPEG (draft mode) only; corrupt samples counted in sample["skipped"]
    batched + Collator    tokenization in the worker

Evaluation (finite, exact)::

    SimpleShardList -> split by rank (from the trainer) -> split by worker -> ShardReader(strict)
    -> SafeDecoder(strict) -> batched(partial=True) + Collator

In evaluation every problem raises ``DataError`` naming the shard and the key, and a shard that yields a
different number of samples than its manifest entry is an error too (a silently shorter test set is a
wrong result). Skip reasons in training (logged as ``data/skipped/<reason>``): ``bad_tar``, ``empty_shard``,
``duplicate_key``, ``missing_json``, ``bad_json``, ``missing_field``, ``bad_label``, ``missing_image``,
``bad_image``.

Nothing from a shard is ever unpickled: only ``json`` and ``jpg`` members are read out of a tar at all;
any other member (``.pyd``, ``.pth``, ``.pkl``, ...) is passed over unread.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from shards.manifest import TarReadError, tar_samples

# A training stream that skips this many samples (or reads this many shards without a good sample) in a
# row is broken, not noisy: it fails instead of spinning forever.
MAX_CONSECUTIVE_SKIPS = 1000
MAX_CONSECUTIVE_EMPTY_SHARDS = 100


class DataError(ValueError):
    """A sample or shard that cannot be read, named by shard and key; ``reason`` is the skip-count name."""

    def __init__(self, message: str, reason: str = "other") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # keep the reason when a worker sends the error back
        return (DataError, (str(self), self.reason))


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


class split_by_rank:  # noqa: N801 - a pipeline stage named like WebDataset's split_by_node
    """Evaluation shard split; rank and world size come from the trainer (spawned workers lack RANK).

    A class, not a closure, so the pipeline pickles into ``spawn``/``forkserver`` workers.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        for i, item in enumerate(src):
            if i % self.world_size == self.rank:
                yield item


class ShardReader:
    """Shard urls -> raw samples ``{"__key__", "__url__", "json": bytes, "jpg": bytes, ...}``.

    ``strict`` (evaluation): a truncated tar, an empty shard, a duplicate key or a count that differs from
    ``expected[url]`` raises ``DataError`` naming the shard (and the key where there is one). Otherwise
    (training) the problem is counted through ``count`` and the rest of the shard is read where possible.
    """

    def __init__(self, count: Callable[[str], None], *, strict: bool, expected: Mapping[str, int] | None = None
                 ) -> None:  # fmt: skip
        self.count, self.strict, self.expected = count, strict, dict(expected or {})
        self.empty_in_a_row = 0

    def problem(self, message: str, reason: str) -> None:
        if self.strict:
            raise DataError(message, reason)
        self.count(reason)

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in src:
            url = str(item["url"])
            n = 0
            for sample in self.read(url):
                n += 1
                yield sample
            self.check_count(url, n)

    def check_count(self, url: str, n: int) -> None:
        if n == 0:
            self.problem(f"shard {url}: no samples (empty or unreadable); rebuild it with `python -m shards build`",
                         "empty_shard")  # fmt: skip
            self.empty_in_a_row += 1
            if self.empty_in_a_row >= MAX_CONSECUTIVE_EMPTY_SHARDS:
                raise DataError(f"{self.empty_in_a_row} shards in a row gave no sample (last: {url}); check them "
                                "with `python -m shards verify <dir>`", "empty_shard")  # fmt: skip
            return
        self.empty_in_a_row = 0
        want = self.expected.get(url)
        if self.strict and want is not None and n != want:
            raise DataError(f"shard {url}: read {n} samples but its manifest says {want}; the shard changed after "
                            "writing: check it with `python -m shards verify <dir>`", "bad_tar")  # fmt: skip

    def read(self, url: str) -> Iterator[dict[str, Any]]:
        """The samples of one shard, in tar order (``shards.manifest.tar_samples``); problems counted or raised."""

        def duplicate(key: str) -> None:
            self.problem(f"shard {url}, key {key!r}: duplicate key (a second sample with this key); rebuild the "
                         "shard with unique keys", "duplicate_key")  # fmt: skip

        try:
            yield from tar_samples(url, duplicate=duplicate)
        except TarReadError as err:
            # The sample being read when the tar broke is incomplete: dropped; report where it happened.
            where = f", key {err.key!r}" if err.key else ""
            self.problem(f"shard {url}{where}: unreadable or truncated tar ({err.cause}); rebuild it", "bad_tar")


def decode_image(data: bytes, size: int | None) -> Image.Image:
    """JPEG decode in draft mode: the DCT scales down by 2/4/8 straight to (at least) ``size``."""
    img = Image.open(io.BytesIO(data))
    if size is not None and img.format == "JPEG":
        img.draft("RGB", (size, size))
    return img.convert("RGB")


class EvalImageTransform:
    """timm's eval transform for a centre crop (resize the short side to ``input / crop_pct``, centre crop
    ``input``) with less work, returning **uint8** (C, H, W) pixels: the core normalises them on the device.

    PIL resamples only the region the crop keeps (``box``: the same output pixels, ~40% less resize work for
    ViT-B/16), and a uint8 batch is 4× smaller than a float one on its way from the workers (each batch
    goes through fresh shared memory: one page fault per 4 KiB) and to the GPU. ``scale_size`` is the short
    side the draft decode must reach.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.size = int(config["input_size"][-1])
        self.scale_size = int(self.size / config["crop_pct"])  # timm: math.floor(img_size / crop_pct)
        self.resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[config["interpolation"]]

    @staticmethod
    def supports(config: Mapping[str, Any]) -> bool:
        height, width = config["input_size"][-2:]
        return (height == width and config.get("crop_mode", "center") == "center" and 0 < config.get("crop_pct", 0) <= 1
                and config["interpolation"] in ("bicubic", "bilinear") and len(config["mean"]) == 3)  # fmt: skip

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        # torchvision's Resize(scale_size) then CenterCrop(size), as a source box of the same scale
        sw, sh = (self.scale_size, int(self.scale_size * h / w)) if w <= h else (int(self.scale_size * w / h),
                                                                                 self.scale_size)  # fmt: skip
        left, top = int(round((sw - self.size) / 2.0)), int(round((sh - self.size) / 2.0))
        fx, fy = w / sw, h / sh
        box = (left * fx, top * fy, (left + self.size) * fx, (top + self.size) * fy)
        img = img.resize((self.size, self.size), self.resample, box=box)
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W) uint8


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
        self.skipped_in_a_row = 0

    def count(self, reason: str) -> None:
        self.pending[reason] += 1

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for raw in src:
            try:
                sample = self.decode(raw)
            except DataError as err:
                if self.strict:
                    raise
                self.skip(err)
                continue
            self.skipped_in_a_row = 0
            if self.pending:
                sample["skipped"], self.pending = dict(self.pending), Counter()
            yield sample

    def skip(self, err: DataError) -> None:
        self.count(err.reason)
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= MAX_CONSECUTIVE_SKIPS:
            raise DataError(f"{self.skipped_in_a_row} samples in a row were corrupt (counts {dict(self.pending)}; "
                            f"last: {err}); the shards are broken, not noisy: `python -m shards verify <dir>`",
                            err.reason)  # fmt: skip

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
        if not isinstance(record, dict):
            raise DataError(f"{where}: json is a {type(record).__name__}, not an object", "bad_json")
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
        bad = [x for x in labels if isinstance(x, bool) or not isinstance(x, int) or x >= self.num_labels or x < -1]
        if bad:
            raise DataError(f"{where}: label(s) {bad} outside the vocabulary of {self.num_labels}", "bad_label")


def train_pipeline(urls: Sequence[str], *, collate: Callable, batch_size: int, decoder: SafeDecoder, seed: int,
                   rank: int, world_size: int, shuffle_buffer: int = 1000) -> wds.DataPipeline:  # fmt: skip
    return wds.DataPipeline(
        ResampledShardStream(urls, seed=seed, rank=rank, world_size=world_size),
        ShardReader(decoder.count, strict=False),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(f"shuffle-{seed}-{rank}")),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )


def eval_pipeline(urls: Sequence[str], *, collate: Callable, batch_size: int, decoder: SafeDecoder, rank: int,
                  world_size: int, expected: Mapping[str, int] | None = None) -> wds.DataPipeline:  # fmt: skip
    """``expected`` maps a shard url to its manifest sample count: a shard that reads otherwise is an error."""
    return wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        split_by_rank(rank, world_size),
        wds.split_by_worker,
        ShardReader(decoder.count, strict=True, expected=expected),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
