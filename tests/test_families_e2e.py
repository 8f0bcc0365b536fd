"""Every head family end to end through ``train.py``: one multi-task fit over the ten demo tasks
(``configs/demo/all_tasks.yaml``, uniform sampler), then a test of every (task, language) test set."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from contracts.catalogue import get_task
from contracts.outcomes import read_outcomes
from datamodules.mixing import TaskSampler
from studies.stats import reaggregate
from train import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CSV_ONLY = "[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: csv}}]"


def demo_config(name: str, demo_dir: Path, out: Path) -> Path:
    """A demo config with its ``data/demo`` paths pointed at the session's demo world."""
    text = (CONFIGS / "demo" / name).read_text().replace("data/demo", str(demo_dir))
    path = out / name
    path.write_text(text)
    return path


def covering_run(tasks: list[str], max_steps: int = 40) -> tuple[int, int]:
    """(seed, steps) of the shortest uniform task sequence that draws every task at least once."""
    best = (0, max_steps + 1)
    for seed in range(20):
        sampler, seen = TaskSampler(dict.fromkeys(tasks, 1.0), seed), set()
        for step in range(best[1]):
            seen.add(sampler.task_at(step))
            if len(seen) == len(tasks):
                best = (seed, step + 1)
                break
    assert best[1] <= max_steps, f"no seed below 20 draws all {len(tasks)} tasks within {max_steps} steps"
    return best


@pytest.mark.slow
def test_all_families_train_and_test(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI reads args=..., not pytest's command line
    all_tasks = demo_config("all_tasks.yaml", demo_dir, tmp_path)
    entries = yaml.safe_load(all_tasks.read_text())["data"]["tasks"]
    names = [t["name"] for t in entries]
    assert {get_task(n).family for n in names} == {
        "classification",
        "image_pair",
        "vqa",
        "retrieval",
        "multiple_choice",
        "span_qa",
        "tagging",
        "mlm",
        "sentence_retrieval",
    }
    seed, steps = covering_run([t["name"] for t in entries if t.get("train_split")])
    root = tmp_path / "run"
    cli_main(
        args=[
            "fit",
            "--config",
            str(CONFIGS / "base.yaml"),
            "--config",
            str(demo_config("base.yaml", demo_dir, tmp_path)),
            "--config",
            str(all_tasks),
            "--seed_everything",
            str(seed),
            "--trainer.max_steps",
            str(steps),
            "--data.steps_per_epoch",
            str(steps),
            "--data.batch_size",
            "4",
            "--data.eval_batch_size",
            "24",
            "--data.num_workers",
            "0",
            "--trainer.log_every_n_steps",
            "1",
            "--test_after_fit",
            "true",
            "--trainer.default_root_dir",
            str(root),
            "--trainer.logger",
            CSV_ONLY,
        ]
    )

    # every task took at least one optimizer step
    with next(root.glob("csv/*/metrics.csv")).open() as f:
        logged = list(csv.DictReader(f))
    untrained = [n for n in names if not any(row.get(f"train/{n}/loss") for row in logged)]
    assert not untrained, f"tasks without a training step: {untrained}"

    # every (task, language, metric) of every test set is reported, with a value
    rows = json.loads((root / "results.json").read_text())["rows"]
    reported = {f"{r['split']}/{r['task']}/{r['lang']}/{r['metric']}": r["value"] for r in rows}
    counts = json.loads((root / "test_counts.json").read_text())
    expected_counts = {}
    for entry in entries:
        manifest = json.loads((demo_dir / entry["name"] / "manifest.json").read_text())
        for lang, n in manifest["counts"][entry["test_split"]].items():
            expected_counts[f"{entry['name']}/{lang}"] = n
            for metric in get_task(entry["name"]).metrics:
                key = f"test/{entry['name']}/{lang}/{metric}"
                assert key in reported, f"{key} missing from results.json"
                assert not math.isnan(reported[key]), f"{key} is NaN"
    assert counts == expected_counts
    assert json.loads((root / "finished.json").read_text())["subcommand"] == "fit"

    # per-sample outcomes next to results.json give every reported metric back (MLM has no per-sample rows)
    sets = read_outcomes(root / "outcomes.jsonl")
    assert {task for task, _ in sets} == set(names) - {"demo_mlm"}
    for (task, lang), entry in sets.items():
        if get_task(task).family != "retrieval":  # retrieval: one row per query, texts and images
            assert len(entry["rows"]) == counts[f"{task}/{lang}"], (task, lang)
        columns = {c: [r[c] for r in entry["rows"].values()] for c in next(iter(entry["rows"].values()))}
        for metric, formula in entry["formulas"].items():
            value = reported[f"test/{task}/{lang}/{metric}"]
            assert reaggregate(columns, formula) == pytest.approx(value, abs=1e-3), (task, lang, metric)
