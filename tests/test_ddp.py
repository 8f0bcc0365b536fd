"""Two-process DDP fits on CPU (gloo), each a ``python train.py fit`` subprocess under a hard timeout.

Multi-task with two different heads and a text-only task (the vision tower unused on its steps): the run finishes,
both ranks take the same steps with the same task sequence and end with the same weights. Single-task: the
module's ``find_unused_parameters=False`` reaches DDP and the run still finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import finish_process_group, kill_process_group, start_process_group
from lightning.pytorch.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TIMEOUT_S = 240
pytestmark = pytest.mark.slow  # two DDP fits in subprocesses: minutes on 2 CPU cores


class RankRecord(Callback):
    """Writes ``rank<r>.json`` in the run directory: the task of every step, the step count, DDP's
    ``find_unused_parameters`` and a fingerprint of the final weights. Loaded by class path in the subprocess."""

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: dict[str, Any], batch_idx: int) -> None:
        self.tasks.append(batch["task"])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        weights = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])
        record = {
            "tasks": self.tasks,
            "global_step": trainer.global_step,
            "find_unused_parameters": trainer.strategy.model.find_unused_parameters,  # the DDP wrapper's
            "weights": [weights.sum().item(), weights.norm().item()],
        }
        Path(trainer.default_root_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def _start(cwd: Path, demo_dir: Path, data: dict[str, Any], *overrides: str) -> subprocess.Popen:
    """Starts ``train.py fit`` with 2 CPU processes in ``cwd``; the launcher starts rank 1 in its own session."""
    (cwd / "data").mkdir(parents=True)
    (cwd / "data" / "demo").symlink_to(demo_dir)
    config = {
        "trainer": {
            "accelerator": "cpu",
            "devices": 2,
            "strategy": "ddp",
            "enable_model_summary": False,
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}],
        },
        "data": {"num_workers": 0, "batch_size": 8, "eval_batch_size": 24, **data},
    }
    (cwd / "ddp.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, str(ROOT / "train.py"), "fit"]
    for c in (CONFIGS / "base.yaml", CONFIGS / "demo" / "base.yaml", cwd / "ddp.yaml"):
        cmd += ["--config", str(c)]
    cmd += ["--trainer.default_root_dir", "runs/ddp", "--trainer.callbacks+=test_ddp.RankRecord", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    return start_process_group(cmd, cwd, env)


def _finish(proc: subprocess.Popen, cwd: Path, deadline: float) -> list[dict[str, Any]]:
    out = finish_process_group(proc, deadline - time.monotonic(), f"DDP fit in {cwd}").stdout
    assert proc.returncode == 0, out[-3000:]
    return [json.loads((cwd / "runs" / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]


def _seed_covering(tasks: list[str], steps: int) -> int:
    """The first seed whose first ``steps`` tasks include every task (uniform sampler)."""
    from datamodules.mixing import TaskSampler, task_weights

    weights = task_weights("uniform", dict.fromkeys(tasks, 1))
    return next(s for s in range(100) if {TaskSampler(weights, s).task_at(t) for t in range(steps)} == set(tasks))


MULTI_TASKS = [
    {"name": "demo_ve", "shards": "data/demo/demo_ve", "train_split": "train", "val_split": "dev"},
    {"name": "demo_nlvr", "shards": "data/demo/demo_nlvr", "train_split": "train", "batch_size": 4},
    {"name": "demo_nli", "shards": "data/demo/demo_nli", "train_split": "train", "val_split": "dev"},
]
STEPS = 6


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Both fits run at once (they are mostly start-up time); each yields one record per rank."""
    multi, single = tmp_path_factory.mktemp("multi"), tmp_path_factory.mktemp("single")
    seed = _seed_covering([t["name"] for t in MULTI_TASKS], STEPS)
    procs = {
        "multi": (
            multi,
            _start(
                multi,
                demo_dir,
                {"tasks": MULTI_TASKS, "sampler": "uniform", "steps_per_epoch": STEPS},
                "--trainer.max_steps",
                str(STEPS),
                "--seed_everything",
                str(seed),
            ),
        ),
        "single": (
            single,
            _start(
                single,
                demo_dir,
                {"tasks": MULTI_TASKS[:1], "steps_per_epoch": 3},
                "--trainer.max_steps",
                "3",
                "--trainer.limit_val_batches",
                "0",
            ),
        ),
    }
    deadline = time.monotonic() + TIMEOUT_S
    try:
        return {name: _finish(proc, cwd, deadline) for name, (cwd, proc) in procs.items()}
    finally:
        for _, proc in procs.values():
            kill_process_group(proc)


def test_multi_task_ddp_fit(ranks: dict[str, list[dict[str, Any]]]) -> None:
    r0, r1 = ranks["multi"]
    assert r0["global_step"] == r1["global_step"] == STEPS
    assert r0["tasks"] == r1["tasks"] and set(r0["tasks"]) == {t["name"] for t in MULTI_TASKS}
    assert r0["find_unused_parameters"] is True  # other heads and, on text steps, the vision tower are unused
    assert r0["weights"] == r1["weights"]  # gradients were all-reduced: the replicas did not drift


def test_single_task_ddp_skips_the_unused_parameter_search(ranks: dict[str, list[dict[str, Any]]]) -> None:
    r0, r1 = ranks["single"]
    assert [r0["find_unused_parameters"], r1["find_unused_parameters"]] == [False, False]
    assert r0["global_step"] == r1["global_step"] == 3 and r0["weights"] == r1["weights"]
