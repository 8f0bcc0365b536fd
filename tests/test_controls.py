"""The label-shuffle negative control: same inputs, same label distribution, pairing broken, fixed per seed."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from conftest import vision_config

from datamodules.controls import LabelShuffle, permute_targets, shuffled_fields
from datamodules.datamodule import TaskData, TransferDataModule


def _samples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        answer = rng.choice(["red", "red", "blue", "yes"])  # skewed: the distribution must survive exactly
        out.append(
            {
                "__key__": f"k{i}",
                "images": {"jpg": f"picture-{i}"},
                "json": {"text": f"question {i}", "labels": [hash(answer) % 7], "scores": [1.0], "answer": answer},
            }
        )
    return out


def test_shuffle_keeps_distribution_and_breaks_pairing() -> None:
    samples = _samples(320)
    shuffle = LabelShuffle(lambda batch: batch, shuffled_fields("demo_vqa", "vqa"), seed=0)
    kept = 0
    for start in range(0, len(samples), 32):
        batch = samples[start : start + 32]
        out = shuffle(batch)
        assert Counter(s["json"]["answer"] for s in out) == Counter(s["json"]["answer"] for s in batch)
        for before, after in zip(batch, out):
            assert (after["__key__"], after["images"], after["json"]["text"]) == (
                before["__key__"],
                before["images"],
                before["json"]["text"],
            )
            # answer, labels and scores move together
            assert after["json"]["labels"] == [hash(after["json"]["answer"]) % 7]
            kept += after["json"]["answer"] == before["json"]["answer"]
    # chance agreement of a permutation under p = (.5, .25, .25) is .375; unshuffled it would be 1
    assert kept / len(samples) < 0.5
    assert all(s["json"]["answer"] for s in samples)  # the input samples are not modified


def test_same_seed_same_permutation_other_seed_differs() -> None:
    samples = _samples(64)
    labels = [
        [s["json"]["answer"] for s in permute_targets(samples, ("answer",), random.Random(f"s{seed}"))]
        for seed in (1, 1, 2)
    ]
    assert labels[0] == labels[1] != labels[2]


def test_family_without_movable_labels_is_refused() -> None:
    with pytest.raises(ValueError, match=r"data.tasks\[demo_qa\].shuffle_labels.*span_qa"):
        shuffled_fields("demo_qa", "span_qa")


def test_datamodule_shuffles_training_batches_only(demo_dir: Path, tiny_model: dict[str, str], tmp_path: Path) -> None:
    def batches(shuffle: bool) -> list[dict]:
        task = TaskData("demo_ve", str(demo_dir / "demo_ve"), train_split="train", shuffle_labels=shuffle)
        dm = TransferDataModule(
            [task],
            tokenizer=tiny_model["text_model"],
            image_config=vision_config(tiny_model["vision_model"]),
            batch_size=16,
            num_workers=0,
            steps_per_epoch=4,
            shuffle_buffer=8,
            pin_memory=False,
        )
        loader = dm.train_dataloader().loaders["demo_ve"]
        it = iter(loader)
        return [next(it) for _ in range(4)], dm

    (plain, _), (shuffled, dm) = batches(False), batches(True)
    assert dm.controls == {"demo_ve": {"shuffle_labels": True, "fields": ["label"], "seed": 0}}
    same = 0
    for a, b in zip(plain, shuffled):
        assert a["keys"] == b["keys"] and (a["input_ids"] == b["input_ids"]).all()  # same samples, same inputs
        assert sorted(a["labels"].tolist()) == sorted(b["labels"].tolist())
        same += int((a["labels"] == b["labels"]).sum())
    assert same < 0.6 * 64
    with pytest.raises(ValueError, match="shuffle_labels"):
        TransferDataModule(
            [TaskData("demo_qa", str(demo_dir / "demo_qa"), train_split="train", shuffle_labels=True)],
            tokenizer=tiny_model["text_model"],
        )
