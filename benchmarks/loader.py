"""Loader benchmark: image-text samples/s of the training pipeline (tar read -> libjpeg-turbo decode at the
smallest DCT scale that covers the resize -> antialiased uint8 resize + centre crop -> batched tokenization
-> collate, ``TransferDataModule.train_dataloader``) against

(a) a naive map-style loader over the same photos as individual JPEG files (original size, full PIL decode,
    timm's eval transform to normalised float, one tokenizer call per sample padded to max_length, default
    collate);
(b) the decode-only limit: decode the shard JPEGs from memory with the pipeline's decoder (``decode_rgb``)
    + resize them to the transform's scale size with its resize, in a tight loop on one core; the old PIL
    limit (draft decode + timm's Resize on a PIL image) is printed beside it;
(c) the standard WebDataset recipe over the same shards (webdataset's README, open_clip's
    ``get_wds_dataset``): ResampledShards -> tarfile_to_samples -> shuffle -> decode("pilrgb") -> timm's eval
    transform -> one tokenizer call per sample -> batched (default collation).

Per worker count 0, 1, 2. Targets: pipeline ≥ 2.0× (a) and (c) per CPU-second; ≥ 0.85× (b) per core;
1 → 2 workers ≥ 1.8×. Each figure is given as samples/s (wall) and samples per CPU-second of the main
process + its workers: on a shared machine the second does not count waiting for a core. Every loader
takes the real ViT-B/16 preprocessing (224 px, bicubic, crop_pct 0.9) and batch 32; every process runs one
torch thread. The training augmentation (``data.tasks[*].augment``: random resized crop + flip) is priced
on the same shards with 0 workers.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm.data
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as F
from transformers import AutoTokenizer

from benchmarks.common import BENCH_TASK, make_captions, make_photos, table, write_bench_shards, write_text_model
from datamodules.datamodule import TaskData, TransferDataModule
from datamodules.pipeline import EvalImageTransform, TrainImageTransform, decode_rgb, image_size, resize_uint8
from lightning_modules.core import vision_data_config

VISION_MODEL = "vit_base_patch16_224"  # the real configs' ViT-B/16 preprocessing (no weights are built)
BATCH_SIZE = 32
MAX_LENGTH = 64


@dataclass
class LoaderData:
    photos: list[Path]
    captions: list[str]
    shards: Path
    text_model: Path


def prepare(root: Path, n: int) -> LoaderData:
    captions = make_captions(n)
    photos = make_photos(root / "photos", n)
    text_model = write_text_model(root / "text_model", captions)
    shards = write_bench_shards(root / "shards", photos, captions, per_shard=max(16, n // 8))
    return LoaderData(photos, captions, shards, text_model)


# -- the loaders: pipeline, (a) naive, (c) recipe -------------------------------------------------------------
def pipeline_loader(
    data: LoaderData, workers: int, steps: int, shuffle_buffer: int = 1000, augment: bool = False
) -> Iterable[dict[str, Any]]:
    """The real training loader (``MultiTaskLoader`` over one task); ``.loaders`` holds its DataLoader."""
    dm = TransferDataModule(
        [TaskData(BENCH_TASK, shards=str(data.shards), train_split="train", augment=augment)],
        tokenizer=str(data.text_model),
        image_config=vision_data_config(VISION_MODEL, {}),
        batch_size=BATCH_SIZE,
        max_length=MAX_LENGTH,
        num_workers=workers,
        steps_per_epoch=steps,
        shuffle_buffer=shuffle_buffer,
        pin_memory=False,  # no CUDA: pinning would only warn
    )
    return dm.train_dataloader()


class NaiveDataset(Dataset):
    """One file, one full decode, one tokenizer call per sample."""

    def __init__(self, data: LoaderData) -> None:
        self.photos, self.captions = data.photos, data.captions
        self.tokenizer = AutoTokenizer.from_pretrained(data.text_model)
        self.transform = timm.data.create_transform(**vision_data_config(VISION_MODEL, {}), is_training=False)

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        pixels = self.transform(Image.open(self.photos[i]).convert("RGB"))
        enc = self.tokenizer(
            self.captions[i], padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        return {
            "pixel_values": pixels,
            "input_ids": enc["input_ids"][0],
            "attention_mask": enc["attention_mask"][0],
            "labels": torch.tensor(i % 3),
        }


def naive_loader(data: LoaderData, workers: int, steps: int) -> Iterable[dict[str, Any]]:
    loader = DataLoader(
        NaiveDataset(data),
        batch_size=BATCH_SIZE,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )

    return Endless(loader)


class Endless:
    """Epoch after epoch of a DataLoader; ``.loaders`` as on ``MultiTaskLoader``."""

    def __init__(self, loader: DataLoader) -> None:
        self.loaders = {"loader": loader}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield from self.loaders["loader"]


class RecipeSample:
    """open_clip's per-sample work: the image through timm's eval transform, the text through one tokenizer
    call (a class, not a lambda, so it pickles into any worker start method)."""

    def __init__(self, data: LoaderData) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(data.text_model)
        self.transform = timm.data.create_transform(**vision_data_config(VISION_MODEL, {}), is_training=False)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        record = sample["json"]
        enc = self.tokenizer(
            record["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        return {
            "pixel_values": self.transform(sample["jpg"]),
            "input_ids": enc["input_ids"][0],
            "attention_mask": enc["attention_mask"][0],
            "labels": record["label"],
        }


def recipe_loader(data: LoaderData, workers: int, steps: int) -> Iterable[dict[str, Any]]:
    """(c) The standard WebDataset recipe (webdataset README, open_clip ``get_wds_dataset``) over the same shards."""
    urls = [str(p) for p in sorted(data.shards.glob("*.tar"))]
    dataset = wds.DataPipeline(
        wds.ResampledShards(urls),
        wds.tarfile_to_samples(),
        wds.shuffle(1000, initial=100),
        wds.decode("pilrgb"),
        wds.map(RecipeSample(data)),
        wds.batched(BATCH_SIZE, partial=False),
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return Endless(loader)


def decode_limit(data: LoaderData, seconds: float, op: str = "limit") -> tuple[float, float]:
    """(samples/s, samples per CPU-second) of one image op on one core, JPEG bytes from the shards in memory.

    ``limit`` (b): the pipeline's decoder (``decode_rgb``, DCT-scaled to the resize) + its resize to the scale
    size (timm's Resize); ``pil_limit``: the old limit, PIL draft decode + timm's Resize on the PIL image;
    ``eval_work`` / ``train_work``: the pipeline's whole image work (decode + resize + crop + uint8 tensor)
    without / with the training augmentation; ``eval_work_eighths``: ``eval_work`` with DCT scaling in
    eighths instead of halves.
    """
    config = vision_data_config(VISION_MODEL, {})
    fast, train = EvalImageTransform(config), TrainImageTransform(config)
    interpolation = F.InterpolationMode(config["interpolation"])

    def limit(blob: bytes) -> Any:
        w, h = image_size(blob)
        short = fast.scale_size
        size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)  # (h, w)
        return resize_uint8(decode_rgb(blob, short / min(w, h)), size, fast.interpolation)

    def pil_limit(blob: bytes) -> Any:
        img = Image.open(io.BytesIO(blob))
        img.draft("RGB", (fast.scale_size, fast.scale_size))
        return F.resize(img.convert("RGB"), fast.scale_size, interpolation=interpolation)

    def eval_eighths(blob: bytes) -> Any:  # the alternative DCT policy, for the record of why halves won
        w, h = image_size(blob)
        return fast.from_array(decode_rgb(blob, fast.scale_size / min(w, h), scaling="eighths"), (w, h))

    fn = {
        "limit": limit,
        "pil_limit": pil_limit,
        "eval_work": fast.from_bytes,
        "eval_work_eighths": eval_eighths,
        "train_work": train.from_bytes,
    }[op]
    blobs = _shard_jpegs(data.shards)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for blob in blobs:
            fn(blob)
        n += len(blobs)
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def _shard_jpegs(directory: Path) -> list[bytes]:
    from shards.manifest import tar_samples

    return [
        data
        for shard in sorted(directory.glob("*.tar"))
        for sample in tar_samples(shard)
        for ext, data in sample.items()
        if ext.endswith("jpg")
    ]


# -- measuring ---------------------------------------------------------------------------------------------
def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system) of this process and of the given (worker) processes so far."""
    total, tick = time.process_time(), os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def measure(batches: Any, warmup: int, n: int) -> tuple[float, float]:
    """(samples/s, samples per CPU-second of main + workers) over ``n`` batches after ``warmup`` (worker
    start, shuffle-buffer fill). CPU seconds do not count time spent waiting for a core on a shared machine."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    pids = [
        w.pid
        for loader in batches.loaders.values()
        if loader._iterator is not None
        for w in getattr(loader._iterator, "_workers", [])
    ]
    wall, cpu = time.perf_counter(), cpu_seconds(pids)
    samples = sum(len(next(it)["input_ids"]) for _ in range(n))
    wall, cpu = time.perf_counter() - wall, cpu_seconds(pids) - cpu
    del it
    return samples / wall, samples / cpu


def run(quick: bool = False, root: Path | None = None, workers: tuple[int, ...] = (0, 1, 2)) -> dict[str, Any]:
    n_photos, warmup, n_batches, limit_s = (128, 1, 3, 0.5) if quick else (480, 2, 32, 3.0)
    threads, load_before = torch.get_num_threads(), os.getloadavg()[0]
    torch.set_num_threads(1)  # 0 workers = one core; workers are single-threaded anyway
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(Path(root or tmp), n_photos)
            limits = [decode_limit(data, limit_s)]
            ops = {
                op: decode_limit(data, limit_s, op)
                for op in ("pil_limit", "eval_work", "eval_work_eighths", "train_work")
            }
            rows = []
            for n in workers:
                steps = warmup + n_batches
                naive = measure(naive_loader(data, n, steps), warmup, n_batches)
                recipe = measure(recipe_loader(data, n, steps), warmup, n_batches)
                pipe = measure(pipeline_loader(data, n, steps), warmup, n_batches)
                rows.append(
                    {
                        "workers": n,
                        "pipeline": pipe[0],
                        "naive": naive[0],
                        "recipe": recipe[0],
                        "pipeline_per_cpu_s": pipe[1],
                        "naive_per_cpu_s": naive[1],
                        "recipe_per_cpu_s": recipe[1],
                    }
                )
            augmented = measure(pipeline_loader(data, 0, warmup + n_batches, augment=True), warmup, n_batches)
            limits.append(decode_limit(data, limit_s))
            matched = None
            if not quick:  # the same photos bounded for 224-px models: what a tighter write-time bound buys
                shards = write_bench_shards(
                    Path(root or tmp) / "shards256",
                    data.photos,
                    data.captions,
                    per_shard=max(16, n_photos // 8),
                    max_side=256,
                )
                small = LoaderData(data.photos, data.captions, shards, data.text_model)
                matched = measure(pipeline_loader(small, 0, warmup + n_batches), warmup, n_batches)
    finally:
        torch.set_num_threads(threads)
    limit, limit_cpu = max(w for w, _ in limits), max(c for _, c in limits)  # the better of the runs before/after
    for row in rows:
        for base in ("naive", "recipe"):
            row[f"vs_{base}"] = row["pipeline"] / row[base]
            row[f"vs_{base}_cpu"] = row["pipeline_per_cpu_s"] / row[f"{base}_per_cpu_s"]
        row["per_core_vs_limit"] = row["pipeline"] / max(1, row["workers"]) / limit
        row["per_cpu_s_vs_limit"] = row["pipeline_per_cpu_s"] / limit_cpu
    load = (load_before, os.getloadavg()[0])
    print(
        table(
            f"Loader: batch {BATCH_SIZE}, {n_photos} photos 500x375..640x480 (shards: short side <= 384), ViT-B/16 "
            f"preprocessing. Decode-only limit (b) with the pipeline's decoder: {limit:.0f} samples/s, {limit_cpu:.0f} "
            f"per CPU-second (old PIL limit: {ops['pil_limit'][1]:.0f}; the pipeline's whole image work: "
            f"{ops['eval_work'][1]:.0f}, with DCT scaling in eighths {ops['eval_work_eighths'][1]:.0f}, "
            f"with augmentation {ops['train_work'][1]:.0f} per CPU-second). Load average "
            f"{load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} cores: wall figures share the cores, CPU-second "
            "figures do not",
            [
                "workers",
                "pipeline samples/s",
                "naive (a)",
                "recipe (c)",
                "wall: / (a)",
                "wall: / (c)",
                "per CPU-s: / (a) (>= 2.0)",
                "per CPU-s: / (c) (>= 2.0)",
                "per CPU-s / (b) (>= 0.85)",
            ],
            [
                [
                    r["workers"],
                    r["pipeline"],
                    r["naive"],
                    r["recipe"],
                    r["vs_naive"],
                    r["vs_recipe"],
                    r["vs_naive_cpu"],
                    r["vs_recipe_cpu"],
                    r["per_cpu_s_vs_limit"],
                ]
                for r in rows
            ],
        )
    )
    print(
        f"per CPU-second: pipeline {rows[0]['pipeline_per_cpu_s']:.0f}, naive (a) {rows[0]['naive_per_cpu_s']:.0f}, "
        f"recipe (c) {rows[0]['recipe_per_cpu_s']:.0f} (0 workers)"
    )
    print(
        f"with augmentation (random resized crop + flip), 0 workers: {augmented[0]:.0f} samples/s, "
        f"{augmented[1]:.0f} per CPU-second = {augmented[1] / rows[0]['recipe_per_cpu_s']:.2f}x the recipe (c)"
    )
    if matched:
        print(
            f"shards bounded at 256 px instead of 384, 0 workers: {matched[0]:.0f} samples/s, {matched[1]:.0f} per "
            f"CPU-second = {matched[1] / rows[0]['naive_per_cpu_s']:.2f}x the naive loader per CPU-second"
        )
    result = {
        "rows": rows,
        "decode_limit": limit,
        "decode_limit_per_cpu_s": limit_cpu,
        "decode_limits": limits,
        "image_ops": ops,
        "augmented": augmented,
        "photos": n_photos,
        "batch_size": BATCH_SIZE,
        "batches_timed": n_batches,
        "load_average": load,
        "pipeline_max_side_256": matched,
    }
    by_workers = {r["workers"]: r for r in rows}
    if 1 in by_workers and 2 in by_workers:
        scaling = by_workers[2]["pipeline"] / by_workers[1]["pipeline"]
        cpu_scaling = by_workers[2]["pipeline_per_cpu_s"] / by_workers[1]["pipeline_per_cpu_s"]
        print(
            f"1 -> 2 workers: {scaling:.2f}x samples/s (target >= 1.8); samples per CPU-second {cpu_scaling:.2f}x "
            "(1.0 = the second worker adds no overhead, so 2 free cores would give ~2x)"
        )
        result.update(scaling_1_to_2=scaling, cpu_efficiency_1_to_2=cpu_scaling)
    return result


def gpu_run(dry_run: bool = False, workers: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    """Loader scaling on the GPU machine's cores: the pipeline and the recipe (c) at 1/2/4/8 workers.

    Each worker count gets enough batches that every worker delivers several (the first batch of each is
    its start-up). ``dry_run``: the same plan with a handful of batches; its figures mean nothing.
    """
    n_photos = 128 if dry_run else 480
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(Path(tmp), n_photos)  # n // 8 per shard: 8 shards, one per worker at 8 workers
            for n in workers:
                warmup, timed = (n, n) if dry_run else (2 * n, max(32, 8 * n))
                pipe = measure(pipeline_loader(data, n, warmup + timed), warmup, timed)
                recipe = measure(recipe_loader(data, n, warmup + timed), warmup, timed)
                rows.append(
                    {
                        "workers": n,
                        "pipeline": pipe[0],
                        "pipeline_per_cpu_s": pipe[1],
                        "recipe": recipe[0],
                        "recipe_per_cpu_s": recipe[1],
                        "vs_recipe": pipe[0] / recipe[0],
                    }
                )
                print(f"loader scaling: {n} workers: pipeline {pipe[0]:.0f} samples/s", flush=True)
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        row["speedup_vs_1"] = row["pipeline"] / rows[0]["pipeline"]
    print(
        table(
            f"Loader scaling on {os.cpu_count()} cores{' (dry run)' if dry_run else ''}: batch {BATCH_SIZE}, ViT-B/16 "
            "preprocessing, 384-px shards",
            ["workers", "pipeline samples/s", "x vs 1 worker", "recipe (c) samples/s", "pipeline / (c)"],
            [[r["workers"], r["pipeline"], r["speedup_vs_1"], r["recipe"], r["vs_recipe"]] for r in rows],
        )
    )
    return {"rows": rows, "photos": n_photos, "cpus": os.cpu_count(), "dry_run": dry_run}


if __name__ == "__main__":
    run()
