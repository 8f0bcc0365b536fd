"""A diverged fit fails: it names step, task and learning rate, exits non-zero and reports no result (issue 23.2).

Before: with ``model.optimizer.lr=1000`` the training loss was NaN from step 3, the command exited 0, and results.md
said "Zero-shot protocol kept" above an accuracy in every language.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from conftest import run_process_group, subprocess_env

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]
TIMEOUT_S = 240


def test_huge_learning_rate_fails_the_run_and_reports_nothing(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "diverged"
    configs = [a for config in CONFIGS for a in ("--config", str(config))]
    args = [
        *configs,
        "--model.optimizer.lr=1000",
        "--trainer.max_steps=8",
        "--data.steps_per_epoch=4",
        "--test_after_fit=true",
        "--data.num_workers=0",
        "--data.eval_num_workers=0",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
    ]
    done = run_process_group(
        [sys.executable, str(REPO / "train.py"), "fit", *args],
        demo_cwd,
        subprocess_env(),
        TIMEOUT_S,
        "train.py fit with lr 1000",
    )
    assert done.returncode != 0, done.stdout[-3000:]
    match = re.search(
        r"Training diverged at step (\d+) \(task demo_ve\): the training loss is (nan|inf)\. Learning "
        r"rate: model\.optimizer\.lr=1000 ",
        done.stdout,
    )
    assert match, done.stdout[-3000:]
    assert not (root / "finished.json").exists(), "a diverged run must not look finished to the study runner"
    assert not (root / "results.json").exists() and not (root / "results.md").exists()
    record = json.loads((root / "diverged.json").read_text())
    assert record["step"] == int(match[1]) and record["task"] == "demo_ve" and record["lr"] == 1000
    assert record["message"] in done.stdout
