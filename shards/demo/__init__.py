"""The demo world: seeded pictures of coloured shapes with text in English, German, Spanish and Russian.

``build_demo(out)`` writes, in seconds and with no network::

    out/manifest.json          index: {"demo": true, "seed", "size", "tasks": {task: subdir}, "text_model", "vision"}
    out/<task>/                one shard directory per demo task (see shards.demo.tasks)
    out/text_model/            BPE tokenizer trained on all demo text + tiny XLMRobertaConfig
    out/vision.json            a tiny timm ViT spec

Same seed and size give byte-identical shards.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from shards.demo.tasks import DEMO_TASKS, TRANSLATED_SPLITS, DemoTask
from shards.demo.text_model import sample_texts, save_text_model, save_vision
from shards.writer import build_shards

# Items per split and language (train, dev, test) and samples per shard, so small still has several shards.
SIZES = {"small": ({"train": 64, "dev": 24, "test": 24}, 16), "full": ({"train": 2000, "dev": 200, "test": 200}, 500)}

__all__ = ["DEMO_TASKS", "build_demo", "demo_records"]


def demo_records(task: DemoTask, size: Literal["small", "full"], seed: int) -> list[dict]:
    """The writer records of one demo task: each split's items rendered in each of its languages."""
    counts, _ = SIZES[size]
    records = []
    for split, langs in task.splits.items():
        # A string seed goes through sha512 in `random`: stable across runs, unlike hash().
        source = TRANSLATED_SPLITS.get(split, split)  # translate_train: the train items, rendered in other languages
        items = task.make_items(random.Random(f"{seed}/{task.name}/{source}"), counts[source], source)
        for lang in langs:
            for i, item in enumerate(items):
                fields, images = task.render(item, lang)
                sample = {"task": task.name, "lang": lang, "id": item["uid"], **fields}
                records.append(
                    {"key": f"{split}-{lang}-{i:06d}", "split": split, "lang": lang, "json": sample, "images": images}
                )
    return records


def build_demo(
    out: Path, size: Literal["small", "full"] = "full", seed: int = 0, workers: int = 0, progress: bool = False
) -> Path:
    """Write the demo world to ``out`` and return ``out``.

    Args:
        out: Output directory.
        size: ``small`` (64 train / 24 dev / 24 test items per language: tests) or ``full`` (2000 / 200 / 200).
        seed: Seed of every random choice.
        workers: Processes writing shards (0: this process).
        progress: Show a progress bar over the tasks (the ``python -m shards build demo`` CLI does).
    """
    if size not in SIZES:
        raise ValueError(f"Unknown demo size {size!r}; choose one of {sorted(SIZES)}.")
    out = Path(out)
    start = time.perf_counter()
    texts: list[str] = []
    for task in tqdm(list(DEMO_TASKS.values()), desc="demo world", unit="task", disable=not progress):
        records = demo_records(task, size, seed)
        build_shards(
            out / task.name,
            records,
            dataset=task.name,
            tasks={task.name: task.meta()},
            max_per_shard=SIZES[size][1],
            workers=workers,
            progress=False,
        )
        texts.extend(t for r in records for t in sample_texts(r["json"]))
    save_text_model(out / "text_model", texts)
    save_vision(out / "vision.json")
    index = {
        "demo": True,
        "seed": seed,
        "size": size,
        "tasks": {name: name for name in DEMO_TASKS},
        "text_model": "text_model",
        "vision": "vision.json",
    }
    # Written last: its presence marks a complete build (the Makefile's target).
    (out / "manifest.json").write_text(json.dumps(index, indent=1) + "\n")
    print(
        f"demo world ({size}, seed {seed}): {len(DEMO_TASKS)} tasks in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )
    return out
