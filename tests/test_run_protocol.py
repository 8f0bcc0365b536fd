"""Reports state what actually happened (issues 14.2, 23.3) and re-evaluating a finished run works (issue 14.3).

Tiny demo runs through train.py: which weights a test scored, what they were trained and selected on (the monitor
of the checkpoint callback actually used; a NaN score selects nothing), protocol breaks in the first line of
results.md, nothing trained is an error, a checkpoint evaluates itself after its parent moved, an evaluation-only
config tests a checkpoint, finished.json keeps the fit's record, and a test by hand gets its own W&B run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import checkpoint_config

from lightning_modules import protocol
from train import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]
FAST = ["--data.num_workers=0", "--data.eval_num_workers=0"]


def run_train(*overrides: str, subcommand: str = "fit", configs: list[Path] = CONFIGS, run: bool = True):
    args = [subcommand] if run else []  # run=False parses without a subcommand
    for config in configs:
        args += ["--config", str(config)]
    return cli_main(args=[*args, *FAST, *overrides], run=run)


def results(root: Path) -> tuple[dict, str]:
    return json.loads((root / "results.json").read_text()), (root / "results.md").read_text()


# -- 14.2: reports ----------------------------------------------------------------------------------------------


def test_selected_checkpoint_report_names_it_and_its_english_selection(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "sel"
    run_train(
        "--trainer.max_steps=4",
        "--data.steps_per_epoch=2",
        "--test_after_fit=true",
        f"--trainer.default_root_dir={root}",
    )
    data, md = results(root)
    proto = data["protocol"]
    assert proto["checkpoint"].endswith("best.ckpt") and proto["zero_shot"] and not proto["breaks"]
    assert proto["selected_on"] == {"monitor": "val/demo_ve/en/acc", "task": "demo_ve", "split": "dev", "langs": ["en"]}
    assert proto["trained_on"] == [{"task": "demo_ve", "split": "train", "langs": ["en"]}]
    assert data["selection"]["monitor"] == "val/demo_ve/en/acc"
    assert (
        md.splitlines()[0] == "# Results — Zero-shot protocol kept: no test data and no non-English data of a "
        "tested task was trained or selected on."
    )
    assert "Checkpoint selected on: `val/demo_ve/en/acc` (demo_ve dev [en])" in md


def test_no_validation_report_says_last_weights_and_no_selection(demo_cwd: Path) -> None:
    """max_steps < steps_per_epoch: no validation ran, no best.ckpt; the weights at the end of fit are tested."""
    root = demo_cwd / "runs" / "noval"
    run_train(
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=5",
        "--test_after_fit=true",
        f"--trainer.default_root_dir={root}",
    )
    data, md = results(root)
    assert data["protocol"]["checkpoint"] is None and data["protocol"]["selected_on"] is None
    assert data["selection"]["monitor"] is None
    assert "the weights at the end of this fit (step 2): no validation selected a checkpoint" in md
    assert "Checkpoint selected on: none" in md and "English dev data only" not in md


def test_training_on_test_data_is_a_protocol_break_in_the_first_line(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "leak"
    tasks = "[{name: demo_ve, shards: data/demo/demo_ve, train_split: test, val_split: dev, test_split: test}]"
    run_train(
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        "--test_after_fit=true",
        f"--data.tasks={tasks}",
        f"--trainer.default_root_dir={root}",
        configs=CONFIGS[:2],
    )
    data, md = results(root)
    first = md.splitlines()[0]
    assert first.startswith("# Results — **ZERO-SHOT PROTOCOL BROKEN**: trained on test data (demo_ve test)"), first
    assert "trained on non-English data of a tested task (demo_ve test: de, es, ru)" in first
    assert data["protocol"]["zero_shot"] is False


def test_checkpoint_callback_on_german_data_is_named_and_a_break(demo_cwd: Path) -> None:
    """The report reads the monitor of the checkpoint callback that chose the tested file. Before: a callback
    monitoring German validation data gave "Zero-shot protocol kept" and ``selection.monitor: null`` (the record
    held the module's own selection key, ``val/none`` here). The demo has no German dev split: German test data is
    validated on, which breaks the protocol twice."""
    root = demo_cwd / "runs" / "de_selection"
    tasks = (
        "[{name: demo_ve, shards: data/demo/demo_ve, train_split: train, val_split: test, val_langs: [de], "
        "test_split: test}]"
    )
    config = checkpoint_config(demo_cwd / "german.yaml", "val/demo_ve/de/acc")
    run_train(
        "--trainer.max_steps=4",
        "--data.steps_per_epoch=2",
        "--test_after_fit=true",
        f"--data.tasks={tasks}",
        f"--trainer.default_root_dir={root}",
        configs=[*CONFIGS, config],
    )
    data, md = results(root)
    german = {"monitor": "val/demo_ve/de/acc", "task": "demo_ve", "split": "test", "langs": ["de"]}
    assert data["protocol"]["checkpoint"].endswith("best.ckpt") and data["protocol"]["selected_on"] == german
    assert data["selection"] == {"monitor": "val/demo_ve/de/acc", "data": "demo_ve test [de]"}
    assert md.splitlines()[0] == (
        "# Results — **ZERO-SHOT PROTOCOL BROKEN**: checkpoint selected on test data "
        "(demo_ve test); checkpoint selected on non-English data (val/demo_ve/de/acc)."
    )
    assert "Checkpoint selected on: `val/demo_ve/de/acc` (demo_ve test [de])" in md


def test_nan_selection_scores_select_nothing(demo_cwd: Path) -> None:
    """Validation only on German test data: ``val/selection`` (English dev) is NaN at every validation, and
    Lightning keeps the first such file as "best" (score -inf). Before: that step-3 file was tested and reported as
    "(selected on validation, step 3)" next to "Checkpoint selected on: none". Now nothing was selected: the test
    scores the weights at the end of fit and finished.json has no best checkpoint."""
    root = demo_cwd / "runs" / "nan_selection"
    tasks = (
        "[{name: demo_ve, shards: data/demo/demo_ve, train_split: train, val_split: test, val_langs: [de], "
        "test_split: test}]"
    )
    run_train(
        "--trainer.max_steps=6",
        "--data.steps_per_epoch=3",
        "--test_after_fit=true",
        f"--data.tasks={tasks}",
        f"--trainer.default_root_dir={root}",
    )
    data, md = results(root)
    assert "selected on validation" not in md and "Checkpoint selected on: none" in md
    assert data["protocol"]["checkpoint"] is None and data["protocol"]["selected_on"] is None
    assert "the weights at the end of this fit (step 6): no validation selected a checkpoint" in md
    finished = json.loads((root / "finished.json").read_text())
    assert (finished["best_ckpt"], finished["best_step"], finished["final_step"]) == ("", None, 6), finished
    assert finished["final_ckpt"].endswith("last.ckpt")


def test_an_earlier_phase_on_translated_target_data_breaks_the_targets_protocol(demo_cwd: Path) -> None:
    """intermediate on demo_ve translate_train (de, es, ru) -> English-only demo_ve target: the target's own run is
    clean, but its weights saw non-English demo_ve data; the report says so (the demo's positive control)."""
    inter, target = demo_cwd / "runs" / "tt", demo_cwd / "runs" / "tt_target"
    tasks = "[{name: demo_ve, shards: data/demo/demo_ve, train_split: translate_train}]"
    run_train(
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        "--phase=intermediate",
        f"--data.tasks={tasks}",
        f"--trainer.default_root_dir={inter}",
        configs=CONFIGS[:2],
    )
    run_train(
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        "--test_after_fit=true",
        f"--model.init_from={inter / 'checkpoints' / 'last.ckpt'}",
        f"--trainer.default_root_dir={target}",
    )
    data, md = results(target)
    proto = data["protocol"]
    assert proto["trained_on"] == [{"task": "demo_ve", "split": "train", "langs": ["en"]}]  # this run: English only
    assert proto["earlier_phases"][0]["trained_on"] == [
        {"task": "demo_ve", "split": "translate_train", "langs": ["de", "es", "ru"]}
    ]
    assert len(proto["earlier_phases"]) == 1  # the intermediate phase started from fresh weights
    first = md.splitlines()[0]
    assert first.startswith(
        "# Results — **ZERO-SHOT PROTOCOL BROKEN**: trained on non-English data of a tested task "
        "(demo_ve translate_train: de, es, ru) in an earlier phase (intermediate: "
    ), first
    assert proto["zero_shot"] is False
    assert "- Earlier phase intermediate trained on: demo_ve translate_train [de, es, ru]." in md


def test_earlier_phases_follow_the_lineage_chain() -> None:
    tested = [{"task": "xvnli", "split": "test", "langs": ["en", "ar"]}]
    grandparent = {
        "path": "start.ckpt",
        "phase": "start",
        "trained_on": [{"task": "captions", "split": "train", "langs": ["en", "ar"]}],
        "lineage": {"phase": "start", "parent": None},
    }
    parent = {
        "path": "inter.ckpt",
        "phase": "intermediate",
        "trained_on": None,  # saved before records existed
        "lineage": {"phase": "intermediate", "parent": grandparent},
    }
    earlier = protocol.earlier_phases({"phase": "target", "parent": parent})
    assert [(p["path"], p["phase"]) for p in earlier] == [("inter.ckpt", "intermediate"), ("start.ckpt", "start")]
    english = {"trained_on": [{"task": "xvnli", "split": "train", "langs": ["en"]}], "selected_on": None}
    assert protocol.protocol_breaks(english, tested, earlier) == []  # captions in Arabic: not a tested task
    grandparent["trained_on"].append({"task": "xvnli", "split": "test", "langs": ["ar"]})
    assert protocol.protocol_breaks(english, tested, protocol.earlier_phases({"parent": parent})) == [
        "trained on test data (xvnli test) in an earlier phase (start: start.ckpt)",
        "trained on non-English data of a tested task (xvnli test: ar) in an earlier phase (start: start.ckpt)",
    ]


def test_selection_on_test_or_non_english_data_is_a_break() -> None:
    tested = [{"task": "xvnli", "split": "test", "langs": ["en", "ar"]}]
    english = [{"task": "xvnli", "split": "train", "langs": ["en"]}]
    on_test = {
        "trained_on": english,
        "selected_on": {"monitor": "val/xvnli/en/acc", "task": "xvnli", "split": "test", "langs": ["en"]},
    }
    assert protocol.protocol_breaks(on_test, tested) == ["checkpoint selected on test data (xvnli test)"]
    on_ar = {
        "trained_on": english,
        "selected_on": {"monitor": "val/xvnli/ar/acc", "task": "xvnli", "split": "dev", "langs": ["ar"]},
    }
    assert protocol.protocol_breaks(on_ar, tested) == ["checkpoint selected on non-English data (val/xvnli/ar/acc)"]
    mlm = {"trained_on": [{"task": "mlm", "split": "train", "langs": ["de", "en"]}], "selected_on": None}
    assert protocol.protocol_breaks(mlm, tested) == []  # non-English data of an untested task: stated, not a break


def test_evaluation_only_report_says_nothing_was_trained_or_selected(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "evalonly"
    tasks = "[{name: demo_tatoeba, shards: data/demo/demo_tatoeba, val_split: dev, val_langs: [de], test_split: test}]"
    run_train(f"--trainer.default_root_dir={root}", f"--data.tasks={tasks}", configs=CONFIGS[:2])
    data, md = results(root)
    assert data["protocol"]["trained_on"] == [] and data["selection"]["monitor"] is None
    assert "the starting weights (the model's initial weights): nothing was trained in this command" in md
    assert "val/none" not in md


def test_nothing_trained_is_an_error(demo_cwd: Path) -> None:
    root = demo_cwd / "runs" / "nothing"
    with pytest.raises(RuntimeError, match=r"Nothing was trained \(global step 0"):
        run_train("--trainer.limit_train_batches=0", "--test_after_fit=true", f"--trainer.default_root_dir={root}")
    assert not (root / "finished.json").exists() and not (root / "results.json").exists()


# -- 14.3: re-evaluating a finished run --------------------------------------------------------------------------


@pytest.fixture
def child_run(demo_cwd: Path) -> Path:
    """A parent fit, then a child fit started from it with init_from; the parent then moves away."""
    parent, child = demo_cwd / "runs" / "parent", demo_cwd / "runs" / "child"
    run_train("--trainer.max_steps=2", "--data.steps_per_epoch=2", f"--trainer.default_root_dir={parent}")
    run_train(
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        f"--trainer.default_root_dir={child}",
        f"--model.init_from={parent / 'checkpoints' / 'last.ckpt'}",
    )
    shutil.move(parent, demo_cwd / "runs" / "parent-moved")
    return child


def test_checkpoint_evaluates_itself_after_its_parent_moved(child_run: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = child_run / "checkpoints" / "best.ckpt"
    run_train(f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={child_run}", subcommand="test")
    data, md = results(child_run)
    assert data["protocol"]["checkpoint"] == str(ckpt) and data["protocol"]["selected_on"]["langs"] == ["en"]
    assert data["protocol"]["parent"]["path"].endswith("parent/checkpoints/last.ckpt")  # lineage from the checkpoint
    out = capsys.readouterr().out
    assert "DataLoader" not in out and "Test metric" not in out  # no per-loader dump, one compact table instead
    table = [line for line in out.splitlines() if line.startswith("lang ") or line[:3] in ("en ", "de ", "ru ")]
    assert table[0].split() == ["lang", "demo_ve", "test", "acc"] and len(table) >= 4, out
    finished = json.loads((child_run / "finished.json").read_text())
    assert finished["last_ckpt"].endswith("last.ckpt"), "a later test erased the fit's record"
    assert [h["subcommand"] for h in finished["history"]] == ["fit", "test"]
    run_train(
        f"--ckpt_path={ckpt}",
        f"--trainer.default_root_dir={child_run}",
        "--model.init_from=null",
        subcommand="validate",
    )
    history = json.loads((child_run / "finished.json").read_text())["history"]
    assert [h["subcommand"] for h in history] == ["fit", "test", "validate"]


def test_evaluation_only_config_tests_a_trained_checkpoint(child_run: Path, demo_cwd: Path) -> None:
    """Before: "task sampler differs" (a checkpoint's sampler state checked although nothing resumes)."""
    ckpt = child_run / "checkpoints" / "best.ckpt"
    root = demo_cwd / "runs" / "evaltest"
    tasks = "[{name: demo_ve, shards: data/demo/demo_ve, test_split: test}]"
    run_train(
        f"--ckpt_path={ckpt}",
        f"--trainer.default_root_dir={root}",
        f"--data.tasks={tasks}",
        configs=CONFIGS[:2],
        subcommand="test",
    )
    assert {r["lang"] for r in results(root)[0]["rows"]} >= {"en", "de", "es", "ru"}


def test_test_by_hand_gets_its_own_wandb_run(demo_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fit's W&B run is continued by a resumed fit only; a test gets a new run: same group, job type eval."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    root = demo_cwd / "runs" / "wb"
    root.mkdir(parents=True)
    (root / "wandb_id.txt").write_text("fitrun123456")
    fit = run_train(f"--trainer.default_root_dir={root}", run=False)  # no subcommand: configured as a fit
    (fit_logger,) = [lg for lg in fit.trainer.loggers if isinstance(lg, WandbLogger)]
    assert fit_logger._wandb_init["id"] == "fitrun123456"
    seen = []
    monkeypatch.setattr(pl.Trainer, "test", lambda self, *a, **k: seen.extend(self.loggers))  # W&B starts lazily
    run_train(f"--trainer.default_root_dir={root}", subcommand="test")
    (init,) = [lg._wandb_init for lg in seen if isinstance(lg, WandbLogger)]
    assert init["id"] != "fitrun123456" and init["job_type"] == "eval" and init["group"] == "wb"
    assert init["config"]["fit_run_id"] == "fitrun123456"


def test_finished_json_is_appended_not_overwritten(tmp_path: Path) -> None:
    protocol.append_finished(tmp_path, {"subcommand": "fit", "last_ckpt": "a.ckpt"})
    protocol.append_finished(tmp_path, {"subcommand": "test"})
    record = protocol.append_finished(tmp_path, {"subcommand": "validate"})
    assert record["last_ckpt"] == "a.ckpt" and record["subcommand"] == "fit"
    assert [h["subcommand"] for h in record["history"]] == ["fit", "test", "validate"]


def test_few_shot_run_names_its_protocol_not_a_break() -> None:
    """IGLUE few-shot runs train and select on target-language data by design: said so, not called broken."""
    weights = {"trained_on": [{"task": "xvnli", "split": "train_1", "langs": ["ar"]}], "selected_on": None}
    record = protocol.run_protocol(weights, [{"task": "xvnli", "split": "test", "langs": ["ar"]}], None, few_shot=True)
    assert record["headline"].startswith("IGLUE few-shot protocol (not zero-shot): trained on non-English data")
    assert record["zero_shot"] is False and record["protocol"] == "few_shot"
