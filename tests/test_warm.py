"""Warm-started runs (``studies/warm.py``): each run is a child forked from a server that imported train.py once.
They must behave as ``python train.py`` runs do for the runner: a killed runner takes them with it."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import kill_process_group, start_process_group, subprocess_env

REPO = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc: parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver + PR_SET_PDEATHSIG: Linux")
def test_a_killed_runner_takes_its_warm_runs_with_it(tmp_path: Path, demo_dir: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir)
    spec = {
        "name": "warm",
        "out": "runs/warm",
        "base": [str(REPO / "configs/base.yaml"), str(REPO / "configs/demo/base.yaml")],
        "overrides": ["--trainer.max_steps=100000", "--data.num_workers=1", "--trainer.logger=false"],
        "conditions": {"none": {}},
        "targets": {"demo_ve": {"configs": [str(REPO / "configs/demo/target_ve.yaml")]}},
    }
    (tmp_path / "warm.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in subprocess_env().items() if k not in ("MMSTILTS_TRAIN_CMD", "MMSTILTS_WARM")}
    runner = start_process_group([sys.executable, str(REPO / "study.py"), "--config", "warm.yaml"], tmp_path, env)
    try:
        log = tmp_path / "runs/warm/none/seed0/demo_ve/train.log"
        deadline = time.monotonic() + 120
        while "preflight" not in (log.read_text() if log.exists() else ""):  # the run is training
            assert runner.poll() is None and time.monotonic() < deadline, log.read_text() if log.exists() else ""
            time.sleep(0.5)
        below = descendants(runner.pid)
        assert len(below) >= 2  # the fork server and the run (and its loader worker)
        os.kill(runner.pid, signal.SIGKILL)  # the runner only, not its process group
        deadline = time.monotonic() + 30
        while any(alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in below if alive(p)], "warm runs outlived their runner"
    finally:
        kill_process_group(runner)
