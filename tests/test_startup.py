"""Start-up: ``train.py --help`` imports neither timm (torchvision's model zoo, W&B) nor transformers, and torchmetrics
comes without its unused torchvision/transformers/matplotlib/scipy parts; a run still gets them when it builds a
model. Behaviour only: the times are in ``make bench`` (benchmarks/startup.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("timm", "torchvision", "transformers", "wandb", "scipy", "matplotlib")
PROBE = """
import json, runpy, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["train.py", *json.loads(sys.argv[1])]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def _loaded(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    cmd = [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_help_imports_no_vision_zoo_no_transformers() -> None:
    assert _loaded(["fit", "--help"]) == []


def test_lean_torchmetrics_is_off_on_request() -> None:
    import os

    env = {**os.environ, "MMSTILTS_LEAN_IMPORTS": "0"}
    assert {"torchvision", "transformers"} <= set(_loaded(["--help"], env))


def test_lazy_timm_is_the_module_once_used() -> None:
    from lightning_modules import core

    assert core.timm.create_model.__module__.startswith("timm")
    assert core.vision_data_config is not None
