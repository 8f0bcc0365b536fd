"""Settings checked where they are read (issue 14.4) and what the terminal and the charts show (issue 14.5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lightning_modules import reports
from shards.converters.common import read_jsonl
from train import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]
FAST = ["--data.num_workers=0", "--data.eval_num_workers=0"]


def run_train(*overrides: str, subcommand: str | None = "fit") -> object:
    args = [subcommand] if subcommand else []
    for config in CONFIGS:
        args += ["--config", str(config)]
    return cli_main(args=[*args, *FAST, *overrides], run=subcommand is not None)


# -- 14.4: range checks at config time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.optimizer.lr=0", r"model.optimizer.lr=0.0: out of range, must be > 0"),
        ("--model.optimizer.lr=-0.001", r"model.optimizer.lr=-0.001: out of range, must be > 0"),
        ("--model.optimizer.head_lr=-1", r"model.optimizer.head_lr=-1.0: out of range, must be > 0"),
        (
            "--model.schedule={warmup_steps: 500, warmup_fraction: null}",
            r"model.schedule: the warm-up \(500 steps\) must be shorter than trainer.max_steps=300",
        ),
        (
            "--model.schedule={warmup_steps: -5, warmup_fraction: null}",
            r"model.schedule.warmup_steps=-5: out of range, must be ≥ 0",
        ),
        ("--data.batch_size=-2", r"data.batch_size=-2: out of range, must be ≥ 1"),
        ("--data.eval_batch_size=0", r"data.eval_batch_size=0: out of range, must be ≥ 1"),
        ("--data.temperature=0", r"data.temperature=0.0: out of range, must be > 0"),
        ("--data.steps_per_epoch=0", r"data.steps_per_epoch=0: out of range, must be ≥ 1"),
        ("--data.max_length=60", r"data.max_length=60: must be a positive multiple of 8 .*e.g. 64"),
        ("--data.max_length=0", r"data.max_length=0: must be a positive multiple of 8"),
        (
            "--data.tasks=[{name: demo_ve, shards: data/demo/demo_ve, train_split: train, batch_size: -1}]",
            r"data.tasks\[demo_ve\].batch_size=-1: out of range, must be ≥ 1",
        ),
    ],
)
def test_out_of_range_setting_fails_at_config_time(demo_cwd: Path, override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_train(override, subcommand=None)


def test_no_logger_drops_the_lr_monitor(demo_cwd: Path) -> None:
    """``--trainer.logger false``: LearningRateMonitor raised 'Cannot use ... with Trainer that has no logger'."""
    root = demo_cwd / "runs" / "nolog"
    run_train(
        "--trainer.logger=false",
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        f"--trainer.default_root_dir={root}",
    )
    assert json.loads((root / "finished.json").read_text())["last_ckpt"].endswith("last.ckpt")


def test_invalid_utf8_in_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": "caf\xe9"}\n')
    where = re.escape(f"{path}:3")
    with pytest.raises(ValueError, match=rf"{where}: invalid UTF-8 .*re-save the file as UTF-8"):
        list(read_jsonl(path))


def test_task_fields_are_documented_in_help(demo_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli_main(args=["fit", "--config", str(CONFIGS[0]), "--data.tasks.help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "Split to train on",
        "Sampling weight when data.sampler=fixed",
        "Multiplies this task's loss",
        "Validation languages; default English only",
    ):
        assert text in out, text


# -- 14.5: terminal and charts ------------------------------------------------------------------------------------


def test_predict_says_where_and_writes_label_names(demo_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    root = demo_cwd / "runs" / "predict"
    run_train(f"--trainer.default_root_dir={root}", subcommand="predict")
    assert f"predictions: {root / 'predictions.jsonl'}" in capsys.readouterr().out
    lines = [json.loads(line) for line in (root / "predictions.jsonl").read_text().splitlines()]
    names = ["entailment", "neutral", "contradiction"]
    assert all(r["prediction_name"] == names[r["prediction"]] and r["label_name"] == names[r["label"]] for r in lines)


ROWS = [
    {"phase": "target", "task": "demo_ve", "lang": lang, "split": "test", "metric": "acc", "value": v, "seed": 3}
    for lang, v in {"en": 70.0, "de": 60.0, "ru": 50.0}.items()
]


def test_chart_has_chance_line_percent_axis_run_and_seed() -> None:
    fig = reports.language_chart(ROWS, "demo_ve", chance=100 / 3, run="demo-target-ve")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "acc (%)"
    assert ax.yaxis.get_major_formatter()(50, 0) == "50%"
    levels = [line.get_ydata()[0] for line in ax.get_lines()]
    assert any(abs(y - 100 / 3) < 1e-9 for y in levels), levels
    assert "run demo-target-ve, seed 3" in ax.get_title()
    assert reports.chance_levels({"demo_ve": 3, "demo_vqa": 40}) == {"demo_ve": pytest.approx(100 / 3)}


def test_compact_table_one_row_per_language() -> None:
    rows = ROWS + [{**r, "task": "demo_nli", "value": r["value"] - 10} for r in ROWS]
    lines = reports.compact_table(rows).splitlines()
    assert lines[0].split() == ["lang", "demo_ve", "test", "acc", "demo_nli", "test", "acc"]
    assert [line.split()[0] for line in lines[1:]] == ["en", "de", "ru", "avg_xling", "avg_all", "gap"]
    assert lines[2].split()[1:] == ["60.00", "50.00"]


def test_training_without_progress_bar_prints_one_line_per_epoch(
    demo_cwd: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The demo config turns the progress bar off; its training still shows progress."""
    root = demo_cwd / "runs" / "progress"
    with caplog.at_level("INFO"):
        run_train("--trainer.max_steps=4", "--data.steps_per_epoch=2", f"--trainer.default_root_dir={root}")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(",")[0] for line in lines] == ["epoch 0: step 2/4", "epoch 1: step 4/4"], lines
    assert all("train/loss" in line and "val/selection" in line for line in lines), lines
