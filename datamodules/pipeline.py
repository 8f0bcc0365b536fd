"""WebDataset pipelines: shard URLs -> decoded task samples -> batches.

Training (infinite, resampled)::

    ResampledShardStream  rank/worker partition of the shard list, shards drawn with a seeded RNG
    ShardReader           tar members grouped by __key__; a broken, empty or duplicate-key shard is counted
    shuffle               raw bytes in the buffer: decoding happens after the shuffle
    SafeDecoder           json + JPEG (libjpeg-turbo, DCT-scaled to the crop) only; corrupt samples counted
    batched + Collator    tokenization in the worker

Evaluation (finite, exact)::

    SimpleShardList -> split by rank (from the trainer) -> split by worker -> ShardReader(strict)
    -> SafeDecoder(strict) -> batched(partial=True) + Collator

In evaluation every problem raises ``DataError`` naming the shard and the key, and a shard that yields a
different number of samples than its manifest entry is an error too (a silently shorter test set is a
wrong result). Skip reasons in training (logged as ``data/skipped/<reason>``): ``bad_tar``, ``empty_shard``,
``duplicate_key``, ``missing_json``, ``bad_json``, ``missing_field``, ``bad_label``, ``missing_image``,
``bad_image``.

Nothing from a shard is ever unpickled: only ``json``, ``jpg`` and ``txt`` members are read out of a tar at all;
any other member (``.pyd``, ``.pth``, ``.pkl``, ...) is passed over unread.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import simplejpeg
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

    def __init__(
        self, count: Callable[[str], None], *, strict: bool, expected: Mapping[str, int] | None = None
    ) -> None:
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
            self.problem(
                f"shard {url}: no samples (empty or unreadable); rebuild it with `python -m shards build`",
                "empty_shard",
            )
            self.empty_in_a_row += 1
            if self.empty_in_a_row >= MAX_CONSECUTIVE_EMPTY_SHARDS:
                raise DataError(
                    f"{self.empty_in_a_row} shards in a row gave no sample (last: {url}); check them "
                    "with `python -m shards verify <dir>`",
                    "empty_shard",
                )
            return
        self.empty_in_a_row = 0
        want = self.expected.get(url)
        if self.strict and want is not None and n != want:
            raise DataError(
                f"shard {url}: read {n} samples but its manifest says {want}; the shard changed after "
                "writing: check it with `python -m shards verify <dir>`",
                "bad_tar",
            )

    def read(self, url: str) -> Iterator[dict[str, Any]]:
        """The samples of one shard, in tar order (``shards.manifest.tar_samples``); problems counted or raised."""

        def duplicate(key: str) -> None:
            self.problem(
                f"shard {url}, key {key!r}: duplicate key (a second sample with this key); rebuild the "
                "shard with unique keys",
                "duplicate_key",
            )

        try:
            yield from tar_samples(url, duplicate=duplicate)
        except TarReadError as err:
            # The sample being read when the tar broke is incomplete: dropped; report where it happened.
            where = f", key {err.key!r}" if err.key else ""
            self.problem(f"shard {url}{where}: unreadable or truncated tar ({err.cause}); rebuild it", "bad_tar")


# How far libjpeg-turbo's DCT scaling may go. "eighths" picks the smallest of 1/8 .. 8/8 that still covers
# the target; "halves" only 1/2, 1/4, 1/8 (PIL's draft mode). Measured on 384-px shards for a 224-px model
# (benchmarks.loader, decode_limit): 6/8 saves resize work, but its IDCT has no SIMD path and it decodes at
# ~60% of the full-size speed, so "halves" wins there (docs/performance.md has the figures).
DCT_SCALING: Literal["eighths", "halves"] = "halves"
DCT_SCALES = {"eighths": tuple(m / 8 for m in range(1, 9)), "halves": (1 / 8, 1 / 4, 1 / 2, 1.0)}


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone (simplejpeg for JPEG, PIL for anything else)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        return width, height
    except ValueError:  # not a JPEG libjpeg-turbo reads (PNG, CMYK, ...): PIL reads the header lazily
        return Image.open(io.BytesIO(data)).size


def decode_rgb(data: bytes, scale: float = 1.0, scaling: Literal["eighths", "halves"] = DCT_SCALING) -> np.ndarray:
    """Image bytes -> (H, W, 3) uint8 RGB, decoded at the smallest DCT scale ≥ ``scale`` of the stored size.

    JPEG goes through libjpeg-turbo (simplejpeg), which scales in the DCT domain while decoding; other
    formats, and JPEGs it refuses (CMYK, some corrupt files), go through PIL (draft mode: halves only).
    The output of one path is deterministic, so an evaluation sample always gives the same pixels.
    """
    factor = min((s for s in DCT_SCALES[scaling] if s >= min(scale, 1.0)), default=1.0)
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        # the output is ceil(side * m / 8): asking for ceil(side * factor) selects exactly m / 8 = factor
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_height=math.ceil(height * factor), min_width=math.ceil(width * factor)
        )
    except ValueError:
        img = Image.open(io.BytesIO(data))
        if img.format == "JPEG" and factor < 1:
            img.draft("RGB", (math.ceil(img.width * factor), math.ceil(img.height * factor)))
        return np.asarray(img.convert("RGB"))


def decode_image(data: bytes, size: int | None) -> Image.Image:
    """A PIL RGB image whose short side is at least ``size`` (when given), for transforms that take PIL."""
    if size is None:
        return Image.fromarray(decode_rgb(data))
    width, height = image_size(data)
    return Image.fromarray(decode_rgb(data, size / min(width, height)))


def resize_uint8(array: np.ndarray, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) uint8 resized to ``size`` = (h, w) with antialiasing (PIL's filters).

    torch's uint8 channels-last kernels do this ~3-5x faster than PIL's resize (measured on this VM:
    benchmarks.loader, decode_limit) and within a few grey levels of it.
    """
    if not (array.flags.c_contiguous and array.flags.writeable):  # a crop view, or PIL's read-only buffer
        array = np.array(array)
    pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W), channels-last in memory
    if pixels.shape[-2:] != size:
        pixels = torch.nn.functional.interpolate(pixels, size=size, mode=interpolation, antialias=True)
    return pixels[0]


class EvalImageTransform:
    """timm's eval transform for a centre crop (resize the short side to ``input / crop_pct``, centre crop
    ``input``; normalisation happens in the core) returning **uint8** (C, H, W) pixels.

    ``from_bytes`` decodes at the smallest DCT scale that still covers the resize (``decode_rgb``) and keeps
    the geometry of the stored image, so the output is what timm's Resize + CenterCrop give on the full
    decode, up to the resampling of the smaller decode. A uint8 batch is 4× smaller than a float one on its
    way from the workers (each batch goes through fresh shared memory: one page fault per 4 KiB) and to the
    GPU. Deterministic: the same bytes give the same pixels in every process.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.size = int(config["input_size"][-1])
        self.scale_size = int(self.size / config["crop_pct"])  # timm: math.floor(img_size / crop_pct)
        self.interpolation = str(config["interpolation"])

    @staticmethod
    def supports(config: Mapping[str, Any]) -> bool:
        height, width = config["input_size"][-2:]
        return (
            height == width
            and config.get("crop_mode", "center") == "center"
            and 0 < config.get("crop_pct", 0) <= 1
            and config["interpolation"] in ("bicubic", "bilinear")
            and len(config["mean"]) == 3
        )

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """A decoded image (PIL or (H, W, 3) uint8) -> (3, size, size) uint8."""
        array = np.asarray(img.convert("RGB")) if isinstance(img, Image.Image) else img
        return self.from_array(array, (array.shape[1], array.shape[0]))

    def from_bytes(self, data: bytes) -> torch.Tensor:
        width, height = image_size(data)
        return self.from_array(decode_rgb(data, self.scale_size / min(width, height)), (width, height))

    def from_array(self, array: np.ndarray, stored: tuple[int, int]) -> torch.Tensor:
        """``array``: the image decoded at any scale; ``stored``: its (width, height) in the file."""
        w, h = stored
        # torchvision's Resize(scale_size): the short side to scale_size, the long side int(...) of the ratio
        sw, sh = (
            (self.scale_size, int(self.scale_size * h / w))
            if w <= h
            else (int(self.scale_size * w / h), self.scale_size)
        )
        pixels = resize_uint8(array, (sh, sw), self.interpolation)  # (3, sh, sw)
        top, left = int(round((sh - self.size) / 2.0)), int(round((sw - self.size) / 2.0))  # torchvision CenterCrop
        return pixels[:, top : top + self.size, left : left + self.size].contiguous()


class TrainImageTransform:
    """Training augmentation: timm's/torchvision's RandomResizedCrop (area ``scale``, aspect ``ratio``) to
    the model's input size, then a horizontal flip with probability ``hflip``; **uint8** (C, H, W) out.

    ``from_bytes`` draws the crop from the header's size first, then decodes at the smallest DCT scale at
    which the crop still has at least ``input`` pixels on each side (a small crop of a large image decodes
    at full size, the whole image of a large one at a half or less). libjpeg-turbo's region decoding is not
    exposed by simplejpeg, so the crop is taken from the decoded array (a view, no copy).

    Randomness: one ``random.Random`` per process, seeded from ``torch.initial_seed()`` (the DataLoader gives
    each worker its own), so runs with the same seed draw the same crops.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
    ) -> None:
        self.size = int(config["input_size"][-1])
        self.interpolation = str(config["interpolation"])
        self.scale, self.ratio, self.hflip = scale, ratio, hflip
        self._rng: random.Random | None = None
        self._pid = 0

    @property
    def rng(self) -> random.Random:
        if self._rng is None or self._pid != os.getpid():  # a forked worker must not repeat the parent's draws
            self._rng, self._pid = random.Random(torch.initial_seed()), os.getpid()
        return self._rng

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, w, h): torchvision ``RandomResizedCrop.get_params`` with this transform's RNG."""
        area, rng = width * height, self.rng
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, width - w), rng.randint(0, height - h), w, h
        aspect = width / height  # fallback after 10 misses: the centre crop, its aspect clamped into ratio
        w, h = width, height
        if aspect < self.ratio[0]:
            h = int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            w = int(round(height * self.ratio[1]))
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        array = np.asarray(img.convert("RGB")) if isinstance(img, Image.Image) else img
        height, width = array.shape[:2]
        return self.from_array(array, (width, height), self.crop_box(width, height))

    def from_bytes(self, data: bytes) -> torch.Tensor:
        width, height = image_size(data)
        box = self.crop_box(width, height)
        return self.from_array(decode_rgb(data, self.size / min(box[2], box[3])), (width, height), box)

    def from_array(self, array: np.ndarray, stored: tuple[int, int], box: tuple[int, int, int, int]) -> torch.Tensor:
        """``box`` in the stored image's pixels, mapped onto ``array`` (decoded at any scale)."""
        fx, fy = array.shape[1] / stored[0], array.shape[0] / stored[1]
        left, top, w, h = box
        x0, y0 = int(left * fx), int(top * fy)
        x1, y1 = max(x0 + 1, round((left + w) * fx)), max(y0 + 1, round((top + h) * fy))
        pixels = resize_uint8(array[y0:y1, x0:x1], (self.size, self.size), self.interpolation)
        if self.rng.random() < self.hflip:
            pixels = pixels.flip(-1)
        return pixels.contiguous()


class SafeDecoder:
    """Raw tar sample -> ``{"__key__", "__url__", "json", "images": [tensors]}``.

    ``strict`` (evaluation): a bad sample raises ``DataError`` naming the shard and the key.
    Otherwise (training) it is skipped and counted by reason; the counts ride on the next good sample.
    """

    def __init__(
        self,
        transform: Callable[[Image.Image], torch.Tensor] | None,
        *,
        draft_size: int | None,
        required: Sequence[str],
        num_images: int,
        num_labels: int = 0,
        strict: bool,
    ) -> None:
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
            raise DataError(
                f"{self.skipped_in_a_row} samples in a row were corrupt (counts {dict(self.pending)}; "
                f"last: {err}); the shards are broken, not noisy: `python -m shards verify <dir>`",
                err.reason,
            )

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
        where = f"shard {url}, key {key!r}"
        if "json" not in raw:
            raise DataError(
                f"{where}: no json member (members: {sorted(k for k in raw if not k.startswith('__'))})", "missing_json"
            )
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
                images.append(self.image(raw[name]))
            except Exception as err:  # noqa: BLE001 - PIL and simplejpeg raise many types for corrupt data
                raise DataError(f"{where}: {name} is not a readable image ({err})", "bad_image") from None
        return {"__key__": key, "__url__": url, "json": record, "images": images}

    def image(self, data: bytes) -> Any:
        """Image bytes -> the transform's pixels. ``EvalImageTransform``/``TrainImageTransform`` decode
        themselves (``from_bytes``: the DCT scale follows the crop); other transforms (timm's) get a PIL image."""
        from_bytes = getattr(self.transform, "from_bytes", None)
        if from_bytes is not None:
            return from_bytes(data)
        img = decode_image(data, self.draft_size)
        return self.transform(img) if self.transform else img

    def check_labels(self, record: dict[str, Any], where: str) -> None:
        if not self.num_labels:
            return
        labels = record.get("labels", [record["label"]] if "label" in record else [])
        if isinstance(labels, int):
            labels = [labels]
        bad = [x for x in labels if isinstance(x, bool) or not isinstance(x, int) or x >= self.num_labels or x < -1]
        if bad:
            raise DataError(f"{where}: label(s) {bad} outside the vocabulary of {self.num_labels}", "bad_label")


def train_pipeline(
    urls: Sequence[str],
    *,
    collate: Callable,
    batch_size: int,
    decoder: SafeDecoder,
    seed: int,
    rank: int,
    world_size: int,
    shuffle_buffer: int = 1000,
) -> wds.DataPipeline:
    return wds.DataPipeline(
        ResampledShardStream(urls, seed=seed, rank=rank, world_size=world_size),
        ShardReader(decoder.count, strict=False),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(f"shuffle-{seed}-{rank}")),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )


def eval_pipeline(
    urls: Sequence[str],
    *,
    collate: Callable,
    batch_size: int,
    decoder: SafeDecoder,
    rank: int,
    world_size: int,
    expected: Mapping[str, int] | None = None,
) -> wds.DataPipeline:
    """``expected`` maps a shard url to its manifest sample count: a shard that reads otherwise is an error."""
    return wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        split_by_rank(rank, world_size),
        wds.split_by_worker,
        ShardReader(decoder.count, strict=True, expected=expected),
        decoder,
        wds.batched(batch_size, collation_fn=collate, partial=True),
    )
