"""A family added from one module (``tests/toy_family.py``): converted by the generic converter, trained for two
steps, validated, with a shuffled-label control; the files it takes are those docs/tasks.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import toy_family

from datamodules.datamodule import TaskData, TransferDataModule
from lightning_modules.module import CoreConfig, TransferModule
from shards.converters import CONVERTERS

ROOT = Path(__file__).resolve().parents[1]
WORDS = "red blue green circle square the a left right".split()


def write_rows(path: Path, sizes: dict[str, int]) -> Path:
    rows = []
    for split, n in sizes.items():
        for i in range(n):
            words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + i % 5)]
            parity = "even" if len(words) % 2 == 0 else "odd"
            rows.append({"uid": f"{split}-{i}", "part": split, "sentence": " ".join(words), "parity": parity})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# workers=1 with spawn: the loader worker starts from a fresh interpreter where the family is in no table (register
# ran in this process only); the collator carries the family's entry, unpickled from this module's functions.
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "spawned-worker"])
def test_a_family_from_one_module_trains_a_step(
    tmp_path: Path, tiny_model: dict[str, str], monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    toy_family.register(monkeypatch.setitem)
    out = tmp_path / "shards"
    fields = {"task": toy_family.TASK, "id": "uid", "split": "part", "text": "sentence", "label": "parity"}
    src = write_rows(tmp_path / "parity.jsonl", {"train": 24, "dev": 10})
    CONVERTERS["jsonl"](out=out, src=src, fields=fields, progress=False)  # python -m shards build jsonl --field ...
    task = TaskData(toy_family.TASK, str(out), train_split="train", val_split="dev", shuffle_labels=True)
    dm = TransferDataModule(
        [task],
        tokenizer=tiny_model["text_model"],
        batch_size=4,
        eval_batch_size=5,
        num_workers=workers,
        multiprocessing_context="spawn" if workers else None,
        steps_per_epoch=2,
        shuffle_buffer=8,
        pin_memory=False,
    )
    model = TransferModule(
        CoreConfig(tiny_model["text_model"], pretrained=False),
        tasks=dm.task_info,
        evaluation=dm.evaluation,
        max_steps=2,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2
    assert type(model.heads["word_parity"]).__name__ == "WordParityHead"
    assert f"val/{toy_family.TASK}/en/acc" in trainer.callback_metrics
    assert trainer.callback_metrics[f"val/{toy_family.TASK}/en/count"] == 10


def test_docs_list_the_files_the_toy_family_takes() -> None:
    """docs/tasks.md's "Adding a family" names the module, its converter and its test, as the toy family has them."""
    text = (ROOT / "docs" / "tasks.md").read_text()
    section = text[text.index("## Adding a family") :]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    assert {"tests/toy_family.py", "tests/test_toy_family.py", "shards/converters/generic.py"} <= named, named
