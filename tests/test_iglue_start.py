"""The real grid starts every condition from the same place: the shared start phase, run once per seed, comes
before every condition's first run (``study.py --dry-run`` on configs/studies/iglue.yaml), and the zero-shot
"what the start already knows" row is an evaluation-only run from the start itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

import study

ROOT = Path(__file__).resolve().parents[1]
IGLUE = ROOT / "configs" / "studies" / "iglue.yaml"


def test_dry_run_shows_the_start_before_every_condition() -> None:
    proc = subprocess.run([sys.executable, "study.py", "--config", str(IGLUE), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = re.findall(r"^\[(\d+)/\d+\] (\S+) \((\w+), [\w ]+\)\n    (.*)$", proc.stdout, flags=re.MULTILINE)
    assert runs, proc.stdout[:2000]
    position = {name: int(i) for i, name, _, _ in runs}
    s = study.load_study(IGLUE)
    assert [name for _, name, _, _ in runs[: len(s.seeds)]] == [f"start/seed{k}" for k in s.seeds]
    for _, name, phase, command in runs:
        if phase == "start":
            assert "--config configs/start/captions.yaml" in command and "--model.init_from" not in command
            continue
        condition, seed = name.split("/")[:2]
        parent = re.search(r"--model\.init_from '?([^' ]+)", command).group(1)
        # every condition's first run starts from its seed's start run; later runs from that intermediate run
        first = f"{condition}/{seed}/intermediate" if s.conditions[condition].configs else None
        expected = f"runs/studies/iglue/start/{seed}/<last_ckpt>" if phase == "intermediate" or first is None else (
            f"runs/studies/iglue/{first}/<last_ckpt>")  # fmt: skip
        assert parent == expected, (name, parent)
        assert position[f"start/{seed}"] < position[name]
    assert {name.split("/")[0] for _, name, _, _ in runs} == {"start", *s.conditions}


def test_every_run_uses_the_aligned_two_tower_core() -> None:
    s = study.load_study(IGLUE)
    model = yaml.safe_load((ROOT / s.base[-1]).read_text())["model"]
    assert model["text_embedding"]["modules"] and model.get("text_drop") is None  # the own heads are kept
    assert s.start is not None and s.start.configs == ("configs/start/captions.yaml",)


def test_the_start_row_is_an_evaluation_only_xflickrco_run() -> None:
    s = study.load_study(IGLUE)
    target = s.targets["xflickrco_start"]
    assert target.task == "xflickrco" and target.tasks == ()
    tasks = yaml.safe_load((ROOT / target.configs[0]).read_text())["data"]["tasks"]
    assert tasks == [{"name": "xflickrco", "shards": "data/xflickrco", "test_split": "test"}]  # nothing trains
    none_run = next(r for r in study.plan(s, only=["none"]) if r.target == "xflickrco_start")
    assert none_run.parent is not None and none_run.parent.phase == "start"  # the `none` row scores the start


def test_study_md_states_the_start_every_condition_had(tmp_path: Path) -> None:
    data = yaml.safe_load(IGLUE.read_text())
    paths = study.write_report(study.parse_study({**data, "out": str(tmp_path / "iglue")}))
    text = paths["md"].read_text()
    said = ("Start of every condition (the same per seed): `configs/base.yaml`, "
            "`configs/models/siglip_multilingual.yaml`, then the start phase `configs/start/captions.yaml`")
    assert said in text
    assert json.loads(paths["json"].read_text())["start"]["start"] == ["configs/start/captions.yaml"]
    without = study.write_report(study.parse_study({**data, "start": None, "out": str(tmp_path / "plain")}))
    assert "no shared start phase" in without["md"].read_text()
