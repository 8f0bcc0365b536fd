"""The multi-task sampler: frequencies per kind, one sequence in every process, exact continuation on resume."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch.callbacks import Callback

import train
from datamodules.mixing import TaskSampler, task_weights
from lightning_modules.checkpoints import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SIZES = {"a": 1000, "b": 4000, "c": 20000}


@pytest.mark.parametrize(
    ("kind", "kwargs", "expected"),
    [
        ("uniform", {}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
        ("proportional", {}, {"a": 1 / 25, "b": 4 / 25, "c": 20 / 25}),
        (
            "temperature",
            {"temperature": 2.0, "example_cap": 5000},
            {  # jiant: min(n, cap) ** (1 / T)
                "a": math.sqrt(1000),
                "b": math.sqrt(4000),
                "c": math.sqrt(5000),
            },
        ),
        ("fixed", {"fixed": {"a": 2.0, "b": 3.0, "c": 5.0}}, {"a": 0.2, "b": 0.3, "c": 0.5}),
    ],
)
def test_frequencies_match_the_distribution(kind: str, kwargs: dict[str, Any], expected: dict[str, float]) -> None:
    total = sum(expected.values())
    expected = {k: v / total for k, v in expected.items()}
    weights = task_weights(kind, SIZES, **kwargs)
    assert weights == pytest.approx(expected)
    n = 20_000
    counts = Counter(TaskSampler(weights, seed=3).task_at(t) for t in range(n))
    for task, p in expected.items():  # 5 standard deviations
        assert abs(counts[task] / n - p) < 5 * math.sqrt(p * (1 - p) / n), (task, counts[task] / n, p)


def test_fixed_sampler_needs_every_weight() -> None:
    with pytest.raises(ValueError, match=r"tasks\[\*\]\.weight.*\['b'\]"):
        task_weights("fixed", {"a": 1, "b": 1}, fixed={"a": 1.0, "b": None})


def test_same_seed_same_sequence_in_separate_processes() -> None:
    code = (
        "from datamodules.mixing import TaskSampler\n"
        "print(','.join(TaskSampler({'a': 0.2, 'b': 0.3, 'c': 0.5}, seed=7).task_at(t) for t in range(300)))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        ).stdout.strip()
        for hash_seed in (1, 2)
    ]
    here = ",".join(TaskSampler({"a": 0.2, "b": 0.3, "c": 0.5}, seed=7).task_at(t) for t in range(300))
    assert runs[0] == runs[1] == here
    assert here != ",".join(TaskSampler({"a": 0.2, "b": 0.3, "c": 0.5}, seed=8).task_at(t) for t in range(300))


# -- resume -------------------------------------------------------------------------------------------------------
class TaskLog(Callback):
    def __init__(self) -> None:
        self.tasks: list[str] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: dict[str, Any], batch_idx: int) -> None:
        self.tasks.append(batch["task"])


MULTI_TASK = {
    "phase": "intermediate",
    "trainer": {
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}],
        "limit_val_batches": 0,
        "enable_model_summary": False,
    },
    "data": {
        "num_workers": 0,
        "batch_size": 4,
        "steps_per_epoch": 2,
        "sampler": "uniform",
        "tasks": [
            {"name": "demo_nli", "shards": "data/demo/demo_nli", "train_split": "train"},
            {"name": "demo_tagging", "shards": "data/demo/demo_tagging", "train_split": "train"},
        ],
    },
}
SEED = 5  # its first 8 tasks mix both tasks in each half and do not repeat with period 4 (checked below)


@pytest.fixture
def workdir(tmp_path: Path, demo_dir: Path) -> Iterator[Path]:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir)
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump(MULTI_TASK))
    old, argv = os.getcwd(), sys.argv
    os.chdir(tmp_path)
    sys.argv = ["train.py"]
    try:
        yield tmp_path
    finally:
        os.chdir(old)
        sys.argv = argv


def _fit(max_steps: int, seed: int = SEED, ckpt_path: str | None = None) -> list[str]:
    configs = [CONFIGS / "base.yaml", CONFIGS / "demo" / "base.yaml", Path("multi.yaml")]
    args = [
        *(a for c in configs for a in ("--config", str(c))),
        "--trainer.default_root_dir",
        "runs/mt",
        "--trainer.max_steps",
        str(max_steps),
        "--seed_everything",
        str(seed),
    ]
    cli = train.cli_main(args=args, run=False)
    log = TaskLog()
    cli.trainer.callbacks.append(log)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return log.tasks


def test_resume_continues_the_task_sequence(workdir: Path) -> None:
    weights = {"demo_nli": 0.5, "demo_tagging": 0.5}
    expected = [TaskSampler(weights, SEED).task_at(t) for t in range(8)]
    assert set(expected[:4]) == set(expected[4:]) == set(weights) and expected[:4] != expected[4:], expected
    assert _fit(4) == expected[:4]
    last = workdir / "runs" / "mt" / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)["TransferDataModule"]
    assert state == {"batch_index": 4, "sampler": {"seed": SEED, "names": sorted(weights), "weights": [0.5, 0.5]}}
    assert _fit(8, ckpt_path=str(last)) == expected[4:]
    with pytest.raises(ValueError, match="task sampler"):  # another seed cannot continue this sequence
        _fit(8, seed=SEED + 1, ckpt_path=str(last))
