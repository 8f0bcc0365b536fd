"""Corrupt data, one test per class: training skips + counts (+ logs ``data/skipped/<reason>``) without
stalls; evaluation fails with an error naming the shard and the key; ``shards verify`` sees a changed shard."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
import webdataset as wds
from conftest import vision_config, write_task_shards

from datamodules.pipeline import DataError, SafeDecoder, eval_pipeline, train_pipeline
from shards.manifest import select_shards
from shards.verify import verify_dir

Sample = dict[str, bytes | str]
BAD_SHARD = 1  # which train shard gets corrupted (of 3)
BAD_INDEX = 1  # which sample in it


def read_tar(path: Path) -> list[Sample]:
    samples: list[Sample] = []
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            if not samples or samples[-1]["__key__"] != key:
                samples.append({"__key__": key})
            samples[-1][ext] = tar.extractfile(member).read()
    return samples


def write_tar(path: Path, samples: list[Sample]) -> None:
    with open(path, "wb") as stream:
        writer = wds.TarWriter(stream, encoder=False)
        for sample in samples:
            writer.write(sample)
        writer.close()


def edit_json(sample: Sample, change: Callable[[dict], None]) -> None:
    record = json.loads(sample["json"])
    change(record)
    sample["json"] = json.dumps(record).encode()


def _bad_image(samples: list[Sample]) -> list[Sample]:
    samples[BAD_INDEX]["jpg"] = b"this is not a JPEG"
    return samples


def _missing_field(samples: list[Sample]) -> list[Sample]:
    edit_json(samples[BAD_INDEX], lambda r: r.pop("label"))
    return samples


def _bad_label(samples: list[Sample]) -> list[Sample]:
    edit_json(samples[BAD_INDEX], lambda r: r.update(label=7))
    return samples


def _missing_json(samples: list[Sample]) -> list[Sample]:
    del samples[BAD_INDEX]["json"]
    return samples


def _duplicate_key(samples: list[Sample]) -> list[Sample]:
    return [*samples, dict(samples[BAD_INDEX])]  # the same key again, later in the shard


def _empty(samples: list[Sample]) -> list[Sample]:
    return []


SAMPLE_EDITS = {
    "bad_image": _bad_image,
    "missing_field": _missing_field,
    "bad_label": _bad_label,
    "missing_json": _missing_json,
    "duplicate_key": _duplicate_key,
    "empty_shard": _empty,
}
CLASSES = ["bad_tar", *SAMPLE_EDITS]


def corrupt(directory: Path, reason: str, split: str = "train") -> tuple[Path, str]:
    """Corrupt one shard of ``split`` in place; returns it and the key of the damaged sample."""
    shard = select_shards(directory, split)[BAD_SHARD]
    samples = read_tar(shard)
    key = str(samples[BAD_INDEX]["__key__"])
    if reason == "bad_tar":
        with tarfile.open(shard) as tar:
            image = tar.getmember(f"{key}.jpg")
        shard.write_bytes(shard.read_bytes()[: image.offset_data + image.size // 2])  # cut inside its image
    else:
        write_tar(shard, SAMPLE_EDITS[reason](samples))
    return shard, key


@pytest.fixture
def ve_dir(tmp_path: Path) -> Path:
    """demo_ve: 12 train samples in 3 shards, 12 test samples in 3 shards (4 per shard)."""
    write_task_shards(tmp_path / "ve", "demo_ve", {("train", "en"): 12, ("test", "en"): 12})
    return tmp_path / "ve"


def decoder(strict: bool) -> SafeDecoder:
    return SafeDecoder(None, draft_size=32, required=("text", "label"), num_images=1, num_labels=3, strict=strict)


def keys_and_skips(batch: list[dict]) -> dict:
    skipped: Counter[str] = Counter()
    for s in batch:
        skipped.update(s.get("skipped", {}))
    return {"keys": [s["__key__"] for s in batch], "skipped": skipped}


@pytest.mark.parametrize("reason", CLASSES)
def test_training_skips_and_counts(ve_dir: Path, reason: str) -> None:
    shard, bad_key = corrupt(ve_dir, reason)
    urls = [str(p) for p in select_shards(ve_dir, "train")]
    pipe = train_pipeline(
        urls,
        collate=keys_and_skips,
        batch_size=3,
        decoder=decoder(strict=False),
        seed=0,
        rank=0,
        world_size=1,
        shuffle_buffer=8,
    )
    skipped: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    batches = 0
    for batch in islice(iter(pipe), 40):
        batches += 1
        skipped.update(batch["skipped"])
        seen.update(batch["keys"])
    assert skipped[reason] > 0, f"{reason} not counted: {dict(skipped)}"
    assert set(skipped) == {reason}, f"only {reason} expected, counted {dict(skipped)}"
    if reason not in ("duplicate_key", "empty_shard"):
        assert bad_key not in seen, f"the corrupt sample {bad_key} reached a batch"
    assert batches == 40, f"the stream stopped after {batches} batches: skipping must not end it"


@pytest.mark.parametrize("reason", CLASSES)
def test_evaluation_error_names_shard_and_key(ve_dir: Path, reason: str) -> None:
    shard, bad_key = corrupt(ve_dir, reason, split="test")
    manifest = json.loads((ve_dir / "manifest.json").read_text())
    expected = {str(ve_dir / s["file"]): s["count"] for s in manifest["shards"]}
    urls = [str(p) for p in select_shards(ve_dir, "test")]
    pipe = eval_pipeline(
        urls,
        collate=keys_and_skips,
        batch_size=3,
        decoder=decoder(strict=True),
        rank=0,
        world_size=1,
        expected=expected,
    )
    with pytest.raises(DataError) as info:
        list(pipe)
    message = str(info.value)
    assert str(shard) in message, message
    if reason != "empty_shard":  # an empty shard has no key to name
        assert bad_key in message, message
    assert info.value.reason == reason


def test_pickled_data_error_keeps_reason() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DataError("shard x, key 'k': broken", "bad_image")))
    assert err.reason == "bad_image" and "key 'k'" in str(err)


def test_verify_detects_a_changed_shard(ve_dir: Path) -> None:
    assert verify_dir(ve_dir) == []
    shard = select_shards(ve_dir, "test")[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # one byte inside the first image: the tar still reads, the hash differs
    shard.write_bytes(bytes(data))
    problems = verify_dir(ve_dir)
    assert any(str(shard) in p and "sha256" in p for p in problems), problems


def test_fit_logs_skip_counts(ve_dir: Path, tiny_model: dict[str, str], tmp_path: Path) -> None:
    """A fit over shards with corrupt samples finishes and logs ``data/skipped/<reason>`` in the CSV metrics."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from datamodules.datamodule import TaskData, TransferDataModule
    from lightning_modules.module import CoreConfig, TransferModule

    shards = select_shards(ve_dir, "train")
    write_tar(shards[0], _bad_image(read_tar(shards[0])))
    write_tar(shards[2], _bad_label(read_tar(shards[2])))
    dm = TransferDataModule(
        [TaskData("demo_ve", str(ve_dir), train_split="train")],
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        batch_size=2,
        num_workers=0,
        steps_per_epoch=6,
        shuffle_buffer=4,
        pin_memory=False,
    )
    model = TransferModule(
        CoreConfig(tiny_model["text_model"], tiny_model["vision_model"], pretrained=False),
        tasks=dm.task_info,
        max_steps=12,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        logger=CSVLogger(tmp_path, name="csv"),
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 12
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"data/skipped/bad_image", "data/skipped/bad_label"} <= set(metrics), metrics
