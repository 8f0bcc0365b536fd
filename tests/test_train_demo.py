"""The walking skeleton end to end: a tiny fit + zero-shot test of the demo task through train.py on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shards.manifest import load_manifest, sample_count
from train import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]


def run_train(*overrides: str, subcommand: str = "fit", configs: list[Path] = CONFIGS) -> None:
    args = [subcommand]
    for config in configs:
        args += ["--config", str(config)]
    cli_main(args=[*args, *overrides])


def test_fit_then_zero_shot_test_writes_results(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "skeleton"
    run_train(
        "--trainer.max_steps=6",
        "--data.steps_per_epoch=3",
        "--data.num_workers=0",
        "--test_after_fit=true",
        f"--trainer.default_root_dir={root}",
    )

    assert (root / "checkpoints" / "best.ckpt").is_file() and (root / "checkpoints" / "last.ckpt").is_file()
    finished = json.loads((root / "finished.json").read_text())
    assert finished["phase"] == "target" and finished["best_ckpt"].endswith("best.ckpt")
    results = json.loads((root / "results.json").read_text())
    assert results["selection"]["monitor"] == "val/demo_ve/en/acc"
    rows = {(r["task"], r["lang"], r["split"], r["metric"]): r["value"] for r in results["rows"]}
    # A 6-step run from random weights sits at chance (33 %), so the scores are checked against the
    # predictions of the same best checkpoint instead: the reported accuracy is the share of right answers.
    run_train(
        f"--trainer.default_root_dir={root}",
        "--data.eval_num_workers=0",
        f"--ckpt_path={finished['best_ckpt']}",
        subcommand="predict",
    )
    predictions = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    for lang in ("en", "de", "es", "ru"):
        mine = [p["prediction"] == p["label"] for p in predictions if p["lang"] == lang]
        assert mine and rows[("demo_ve", lang, "test", "acc")] == pytest.approx(100.0 * sum(mine) / len(mine))
    assert ("demo_ve", "avg_xling", "test", "acc") in rows
    assert (root / "results.md").read_text().count("| ru |") == 1
    assert (root / "results_demo_ve.png").stat().st_size > 0
    # two commands in one folder (fit with its test, then predict) keep separate configs: nothing collides
    assert sorted(p.name for p in root.glob("config-*.yaml")) == ["config-fit-0.yaml", "config-predict-0.yaml"]
    assert (root / "wandb").is_dir() and (root / "csv").is_dir()


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_scores_every_sample_exactly_once(demo_cwd: Path, workers: int) -> None:
    root = demo_cwd / "runs" / f"exact{workers}"
    run_train(
        f"--trainer.default_root_dir={root}",
        f"--data.eval_num_workers={workers}",
        "--data.eval_batch_size=5",
        subcommand="test",
    )
    counts = json.loads((root / "test_counts.json").read_text())
    manifest = load_manifest(demo_cwd / "data" / "demo" / "demo_ve")
    expected = {f"demo_ve/{lang}": sample_count(manifest, "test", lang=lang) for lang in ("en", "de", "es", "ru")}
    assert counts == expected
    assert all(n > 0 for n in expected.values())


def test_unknown_task_fails_before_training_with_valid_names(demo_cwd: Path) -> None:
    with pytest.raises(ValueError, match=r"data.tasks\[\*\].name: Unknown task 'demo_vee'. Valid tasks: .*demo_ve"):
        run_train("--data.tasks=[{name: demo_vee, shards: data/demo/demo_ve, train_split: train}]", subcommand="fit")


def test_missing_shard_dir_names_the_key_and_the_fix(demo_cwd: Path) -> None:
    with pytest.raises(ValueError, match=r"data.tasks\[demo_ve\].shards: No shard manifest .*python -m shards build"):
        run_train("--data.tasks=[{name: demo_ve, shards: data/nowhere, train_split: train}]", subcommand="fit")


def test_predict_writes_one_line_per_test_sample(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "predict"
    run_train(f"--trainer.default_root_dir={root}", "--data.eval_num_workers=0", subcommand="predict")
    lines = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    manifest = load_manifest(demo_cwd / "data" / "demo" / "demo_ve")
    assert len(lines) == sample_count(manifest, "test")
    assert {k for k in lines[0]} == {"task", "key", "lang", "prediction", "label", "prediction_name", "label_name"}
    assert len({r["key"] for r in lines}) == len(lines)


def test_fit_without_training_data_scores_dev_then_test(demo_cwd: Path) -> None:
    """BUCC/Tatoeba targets have no training data: fit validates (BUCC tunes its threshold) then tests."""
    root = demo_cwd / "runs" / "evalonly"
    tasks = "[{name: demo_tatoeba, shards: data/demo/demo_tatoeba, val_split: dev, val_langs: [de], test_split: test}]"
    # without target_ve.yaml: jsonargparse merges a second data.tasks list into the first item by item
    run_train(
        f"--trainer.default_root_dir={root}", f"--data.tasks={tasks}", "--data.eval_num_workers=0", configs=CONFIGS[:2]
    )
    rows = json.loads((root / "results.json").read_text())["rows"]
    assert {r["lang"] for r in rows if r["metric"] == "tatoeba_acc"} >= {"de", "es", "ru"}
    assert json.loads((root / "finished.json").read_text())["subcommand"] == "fit"
    assert not (root / "checkpoints").exists()  # nothing trained, nothing saved
