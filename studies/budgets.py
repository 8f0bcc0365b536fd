"""What each study condition spent: intermediate steps, examples seen, and device time.

Read from the run directories after the fact, so the report states the budgets rather than assuming them:
``config-fit-0.yaml`` (the resolved config Lightning saves: ``trainer.max_steps``, ``data.batch_size``,
gradient accumulation, devices and nodes) and ``study_time.json`` (the wall time the study runner measured
for the run's subprocess). Device time = wall time x devices x nodes, labelled GPU or CPU by the accelerator.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

TIME_FILE = "study_time.json"
CONFIG_FILE = "config-fit-0.yaml"


def run_budget(run_dir: str | Path) -> dict[str, Any] | None:
    """``{steps, examples, seconds, device_seconds, device}`` of one finished run; None without its config."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return None
    config = yaml.safe_load(config_path.read_text()) or {}
    trainer, data = config.get("trainer") or {}, config.get("data") or {}
    steps = trainer.get("max_steps")
    devices = trainer.get("devices")
    devices = devices if isinstance(devices, int) and devices > 0 else len(devices) if isinstance(devices, list) else 1
    nodes = trainer.get("num_nodes") or 1
    per_step = (data.get("batch_size") or 0) * (trainer.get("accumulate_grad_batches") or 1) * devices * nodes
    time_path = run_dir / TIME_FILE
    seconds = json.loads(time_path.read_text())["seconds"] if time_path.is_file() else None
    accelerator = str(trainer.get("accelerator") or "auto")
    finished_path = run_dir / "finished.json"
    if finished_path.is_file():  # what the run ran on (train.py records it); the config may say only "auto"
        accelerator = json.loads(finished_path.read_text()).get("device") or accelerator
    return {
        "steps": steps,
        "examples": steps * per_step if isinstance(steps, int) and steps > 0 else None,
        "seconds": seconds,
        "device_seconds": None if seconds is None else seconds * devices * nodes,
        "device": {"cpu": "CPU", "auto": "device"}.get(accelerator, "GPU"),  # auto without a record: unknown
    }


def condition_budgets(runs: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per condition: its intermediate runs' steps and examples (per run) and mean device time per
    intermediate and per target run. ``runs``: the study plan (objects with ``phase``, ``condition``,
    ``run_dir``); unfinished runs are skipped."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.phase == "start":
            continue
        budget = run_budget(run.run_dir)
        if budget is not None:
            found[run.condition][run.phase].append(budget)
    out = {}
    for condition, phases in found.items():
        inter, target = phases.get("intermediate", []), phases.get("target", [])
        out[condition] = {
            "intermediate_runs": len(inter),
            "steps": _same([b["steps"] for b in inter]) if inter else 0,
            "examples": _same([b["examples"] for b in inter]) if inter else 0,
            "intermediate_device_seconds": _mean(b["device_seconds"] for b in inter),
            "target_device_seconds": _mean(b["device_seconds"] for b in target),
            "device": next((b["device"] for b in inter + target), ""),
        }
    return out


def _same(values: list[Any]) -> Any:
    """The value when every run agrees, else the list (an unequal budget is shown, not hidden)."""
    return values[0] if len(set(map(str, values))) == 1 else values


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None
