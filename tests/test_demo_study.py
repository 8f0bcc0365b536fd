"""The demo study end to end on the small demo world: a tiny study (1 seed, start + baseline + one
intermediate condition, one target, a few steps) with real ``train.py`` runs; the report files; resuming.

"Interrupted after its first runs" is a first invocation restricted to the baseline (``--only none``): the
start run and the baseline target finish, then the full study runs and must skip exactly those. The first
invocation goes through the SLURM executor with submitit's local cluster (one job per run, the target submitted
after its parent's job), the second through ``local-gpus`` with two fake devices.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import study as study_mod

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIGS = REPO / "configs" / "demo"
TINY = [
    "--trainer.max_steps=2",
    "--data.steps_per_epoch=2",
    "--data.batch_size=8",
    "--data.num_workers=0",
    "--trainer.limit_val_batches=1",
    "--trainer.log_every_n_steps=1",
]


@pytest.fixture()
def tiny_study(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped demo study's configs, shrunk: seed 0, conditions none + nli, target demo_ve."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir)  # the configs name data/demo/... relative to cwd
    shipped = yaml.safe_load((REPO / "configs" / "studies" / "demo.yaml").read_text())
    spec = {
        "name": "demo-tiny",
        "out": "runs/studies/demo-tiny",
        "base": [str(REPO / p) for p in shipped["base"]],
        "overrides": TINY,
        "seeds": [0],
        "baseline": "none",
        "start": {"configs": [str(DEMO_CONFIGS / "pretrain.yaml")]},
        "conditions": {
            "none": {},
            "nli": {"configs": [str(DEMO_CONFIGS / "intermediate_nli.yaml")], "tasks": ["demo_nli"]},
        },
        "targets": {"demo_ve": {"configs": [str(DEMO_CONFIGS / "target_ve.yaml")], "train_tasks": ["demo_ve"]}},
    }
    path = tmp_path / "demo-tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(study_mod.TRAIN_CMD_ENV, raising=False)  # the real train.py
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as make demo: two threads per run thrash on a busy 2-core machine
    return path


def test_shipped_demo_study_is_valid() -> None:
    study = study_mod.load_study(REPO / "configs" / "studies" / "demo.yaml")
    assert set(study.conditions) == {"none", "nli", "nlvr", "translate_train", "nlvr_shuffled"}
    assert set(study.targets) == {"demo_ve", "demo_vqa"}
    assert {n: c.control for n, c in study.conditions.items() if c.control} == {
        "translate_train": "positive",
        "nlvr_shuffled": "negative",
    }
    assert (study.budget.intermediate_steps, study.budget.batch_size) == (150, 32)
    assert study.start is not None and len(study.seeds) == 2
    assert all((REPO / c).is_file() for c in study.config_files())


@pytest.mark.slow
def test_tiny_demo_study_reports_and_resumes(tiny_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tiny_study.parent / "runs" / "studies" / "demo-tiny"
    # First invocation: the baseline only (start run + none/demo_ve), as if the study had stopped there.
    slurm = ["--executor", "slurm", "--cluster", "local"]
    assert study_mod.main(["--config", str(tiny_study), "--only", "none", *slurm]) == 0
    first = capsys.readouterr().out
    assert "submitted start/seed0 (start)" in first and "submitted none/seed0/demo_ve (target)" in first
    done_first = {"start/seed0", "none/seed0/demo_ve"}
    for name in done_first:
        assert (out / name / "finished.json").is_file(), first
    assert not (out / "nli").exists()
    stamps = {name: (out / name / "finished.json").stat().st_mtime_ns for name in done_first}

    # Second invocation: the whole study; the finished runs are skipped, the rest run.
    local_gpus = ["--executor", "local-gpus", "--gpus", "2", "--heartbeat", "600"]
    assert study_mod.main(["--config", str(tiny_study), *local_gpus]) == 0
    second = capsys.readouterr().out
    assert "nli/seed0/intermediate (intermediate): start on GPU 0" in second
    for name in done_first:
        assert f"{name} " in second and "skip (finished)" in second.split(f"{name} ", 1)[1].splitlines()[0]
        assert (out / name / "finished.json").stat().st_mtime_ns == stamps[name]
    for name in ("nli/seed0/intermediate", "nli/seed0/demo_ve"):
        assert (out / name / "finished.json").is_file()
    assert second.count("skip (finished)") == 2

    # Every target run's report, and the study report covering both conditions.
    for run in ("none/seed0/demo_ve", "nli/seed0/demo_ve"):
        results = json.loads((out / run / "results.json").read_text())
        assert results["selection"]["monitor"] == "val/demo_ve/en/acc"
        langs = {r["lang"] for r in results["rows"] if r["metric"] == "acc"}
        assert {"en", "de", "es", "ru"} <= langs
    payload = json.loads((out / "study.json").read_text())
    assert payload["missing"] == [] and payload["rows"]
    with (out / "study.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["condition"] for r in rows} == {"none", "nli"} and {r["target"] for r in rows} == {"demo_ve"}
    md = (out / "study.md").read_text()
    assert "nli" in md and "demo_ve" in md and md in second
    # per-sample outcomes of the real runs pair up: nli vs none tested on en, avg_xling, avg_all
    assert {(t["condition"], t["lang"]) for t in payload["significance"]} == {
        ("nli", "en"),
        ("nli", "avg_xling"),
        ("nli", "avg_all"),
    }
    assert all(t["n_items"] > 0 and t["correction"] == "holm" for t in payload["significance"])
    assert "## Significance" in md and second.index("power (from the baseline") < second.index("[1/")
    assert (out / "study_heatmap.png").stat().st_size > 0
