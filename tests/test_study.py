"""The study runner with a fake train command: planning, checkpoint reuse, skipping, overlap marks, report files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_fakes import make_fake_study

import study as study_mod

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fake_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A demo-like study (start phase, baseline + 2 conditions, 2 targets, 2 seeds) run by the fake trainer."""
    return make_fake_study(tmp_path, monkeypatch)


def _calls(cfg: Path) -> list[str]:
    path = cfg.parent / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_plan_runs_each_intermediate_once_and_reuses_it(fake_study: Path) -> None:
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    names = [r.name for r in runs]
    assert len(runs) == 2 + 2 * 2 + 3 * 2 * 2, names  # starts, intermediates, targets
    assert names[:2] == ["start/seed0", "start/seed1"]
    intermediates = [r for r in runs if r.phase == "intermediate"]
    assert sorted(r.name for r in intermediates) == sorted(
        f"{c}/seed{s}/intermediate" for c in ("nli", "ve") for s in (0, 1)
    )
    for run in runs:
        if run.phase == "target" and run.condition != "none":
            assert run.parent is not None and run.parent.name == f"{run.condition}/seed{run.seed}/intermediate"
        elif run.phase != "start":  # baseline targets and intermediates start from the start run of their seed
            assert run.parent is not None and run.parent.name == f"start/seed{run.seed}"
    assert [r.name for r in study_mod.plan(study, only=["ve"], targets=["demo_vqa"])] == [
        "start/seed0",
        "start/seed1",
        "ve/seed0/intermediate",
        "ve/seed0/demo_vqa",
        "ve/seed1/intermediate",
        "ve/seed1/demo_vqa",
    ]


def test_run_args_and_env(fake_study: Path) -> None:
    study = study_mod.load_study(fake_study)
    run = next(r for r in study_mod.plan(study) if r.name == "nli/seed1/demo_vqa")
    args = study_mod.run_args(study, run, "CKPT")
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert [Path(c).name for c in configs] == ["base.yaml", "target_vqa.yaml"]
    assert args.index("--trainer.max_steps=3") < args.index("--trainer.max_steps=4")  # target overrides win
    assert args[args.index("--model.init_from") + 1] == "CKPT"
    assert args[args.index("--test_after_fit") + 1] == "true"
    assert args[args.index("--phase") + 1] == "target" and args[args.index("--seed_everything") + 1] == "1"
    env = study_mod.run_env(study, run)
    assert env["WANDB_RUN_GROUP"] == "fake" and env["WANDB_JOB_TYPE"] == "target"


def test_study_runs_reuses_checkpoints_and_writes_report(fake_study: Path, capsys: pytest.CaptureFixture) -> None:
    assert study_mod.main(["--config", str(fake_study), "--heartbeat", "30"]) == 0
    out_dir = fake_study.parent / "out"
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    assert len(_calls(fake_study)) == len(runs)  # every run exactly once
    for run in runs:
        args = json.loads((run.run_dir / "args.json").read_text())
        expected = None if run.parent is None else str(run.parent.run_dir / "checkpoints/last.ckpt")
        assert args["init_from"] == expected, run.name
        assert args["env"]["WANDB_JOB_TYPE"] == run.phase
        assert (run.run_dir / "train.log").read_text().startswith("$ ")
    stdout = capsys.readouterr().out
    assert "# Study `fake`" in stdout  # study.md is printed at the end

    data = json.loads((out_dir / "study.json").read_text())
    assert data["missing"] == [] and data["selection"] == ["val/demo_ve/en/acc", "val/demo_vqa/en/acc"]
    assert data["overlaps"] == {"ve": ["demo_ve"]}
    cell = {(r["target"], r["condition"], r["lang"]): r for r in data["rows"] if r["metric"] == "acc"}
    # Fake scores: 50 + lang offset + seed + condition offset -> avg_xling over seeds 0, 1 = 50.5 + offset.
    assert cell[("demo_ve", "none", "avg_xling")]["mean"] == pytest.approx(50.5)
    assert cell[("demo_ve", "ve", "avg_xling")]["delta"] == pytest.approx(3.0)
    assert cell[("demo_vqa", "nli", "de")]["delta"] == pytest.approx(1.0)
    assert cell[("demo_vqa", "nli", "de")]["std"] == pytest.approx(2**-0.5)
    assert cell[("demo_ve", "ve", "en")]["overlap"] and not cell[("demo_vqa", "ve", "en")]["overlap"]
    assert not cell[("demo_ve", "nli", "en")]["overlap"]
    with (out_dir / "study.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(data["rows"])
    md = (out_dir / "study.md").read_text()
    assert "| ve† |" in md and "English dev data only" in md
    assert (out_dir / "study_heatmap.png").stat().st_size > 0


def test_study_md_says_first_which_target_runs_broke_the_protocol(fake_study: Path) -> None:
    """A target run whose own protocol record lists a break (e.g. selected on target-language dev) is named in
    study.md's first lines; the English-dev claim is kept only for the other runs."""
    assert study_mod.main(["--config", str(fake_study)]) == 0
    study = study_mod.load_study(fake_study)
    md = (study.out_dir / "study.md").read_text()
    assert "PROTOCOL BROKEN" not in md and "Every target run: checkpoint selected on English dev data only" in md
    run = next(r for r in study_mod.plan(study) if r.phase == "target" and r.condition == "nli")
    path = run.run_dir / "results.json"
    data = json.loads(path.read_text())
    headline = "ZERO-SHOT PROTOCOL BROKEN: selected on val/demo_ve/de/acc (non-English dev)"
    data["protocol"] = {"breaks": ["selected on non-English dev"], "zero_shot": False, "headline": headline}
    path.write_text(json.dumps(data))
    md = study_mod.write_report(study)["md"].read_text()
    first = md.split("\n\n")[1]
    assert first.startswith("**ZERO-SHOT PROTOCOL BROKEN in 1 target run(s)**") and f"{run.name}: {headline}" in md
    assert "Other target runs: Checkpoint selection as the target runs recorded it: demo_ve: `val/demo_ve/en/acc`" in md
    assert json.loads((study.out_dir / "study.json").read_text())["protocol_breaks"] == [f"{run.name}: {headline}"]


def test_crashed_study_resumes_and_skips_finished_runs(fake_study: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT", "2")  # the second run crashes
    assert study_mod.main(["--config", str(fake_study)]) == 1
    err = capsys.readouterr().err
    study = study_mod.load_study(fake_study)
    first, second = study_mod.plan(study)[:2]
    assert str(second.run_dir) in err and str(second.run_dir / "train.log") in err and "simulated crash" in err
    assert study_mod.finished(first) and not study_mod.finished(second)

    monkeypatch.delenv("FAKE_FAIL_AT")
    assert study_mod.main(["--config", str(fake_study)]) == 1  # a failed run waits for --retry-failed
    out, err = capsys.readouterr()
    assert f"{second.name} (start): skip (failed earlier" in out and "--retry-failed" in err
    assert _calls(fake_study).count(str(second.run_dir)) == 1
    assert study_mod.main(["--config", str(fake_study), "--retry-failed"]) == 0
    out = capsys.readouterr().out
    assert f"{first.name} (start): skip (finished)" in out
    calls = _calls(fake_study)
    assert calls.count(str(first.run_dir)) == 1 and calls.count(str(second.run_dir)) == 2
    assert second.run_dir.with_name(second.run_dir.name + ".incomplete").is_dir()  # the crashed attempt, kept

    assert study_mod.main(["--config", str(fake_study)]) == 0  # a finished study runs nothing
    assert len(_calls(fake_study)) == len(calls)
    out = capsys.readouterr().out
    assert out.count("skip (finished)") == len(calls) - 1 and ": start (" not in out


def test_partial_study_reports_missing_runs(fake_study: Path) -> None:
    assert study_mod.main(["--config", str(fake_study), "--only", "none", "--targets", "demo_ve"]) == 0
    data = json.loads((fake_study.parent / "out" / "study.json").read_text())
    assert "nli/seed0/demo_ve" in data["missing"] and "none/seed0/demo_ve" not in data["missing"]
    assert {r["condition"] for r in data["rows"]} == {"none"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"bogus": 1}, "does not accept option 'bogus'"),
        ({"conditions": {"none": {}, "x": {"configs": ["a.yaml"], "tasks": ["demo_nli"], "bogus": 1}}}, "'bogus'"),
        ({"retention": {"keep": "most"}}, "retention.keep"),
        ({"resources": {"targett": {"gpus": 2}}}, "unknown phase"),
        ({"targets": {"demo_ve": {"configs": ["a.yaml"], "few_shot": {"shots": [1], "langs": []}}}}, "few_shot"),
        ({"baseline": "zero"}, "Baseline condition 'zero'"),
        ({"seeds": []}, "`seeds` must be a non-empty list"),
        ({"conditions": {"none": {}, "x": {"configs": ["a.yaml"], "tasks": ["no_such_task"]}}}, "Unknown task"),
        ({"conditions": {"none": {}, "x": {"configs": ["a.yaml"]}}}, "no `tasks`"),
        ({"targets": {"intermediate": {"configs": ["a.yaml"], "task": "demo_ve"}}}, "Invalid target name"),
        ({"targets": {"demo_ve": {}}}, "needs `configs`"),
    ],
)
def test_study_errors_name_the_key(fake_study: Path, patch: dict, message: str) -> None:
    spec = yaml.safe_load(fake_study.read_text()) | patch
    with pytest.raises(study_mod.StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        study_mod.parse_study(spec)


def test_missing_config_files_fail_before_training(fake_study: Path, capsys) -> None:
    spec = yaml.safe_load(fake_study.read_text())
    spec["targets"]["demo_ve"]["configs"] = ["configs/target/does_not_exist.yaml"]
    fake_study.write_text(yaml.safe_dump(spec))
    assert study_mod.main(["--config", str(fake_study)]) == 2
    assert "does_not_exist.yaml" in capsys.readouterr().err and _calls(fake_study) == []


def test_cli_dry_run(fake_study: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "study.py", "--config", str(fake_study), "--dry-run", "--verbose"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[18/18] ve/seed1/demo_vqa (target, to run)" in proc.stdout
    assert "overlap marks (†): ve -> demo_ve" in proc.stdout
    assert _calls(fake_study) == []


@pytest.mark.parametrize("name", ["iglue", "xtreme"])
def test_shipped_studies_parse(name: str) -> None:
    study = study_mod.load_study(ROOT / "configs" / "studies" / f"{name}.yaml")
    assert study.baseline in study.conditions and study.seeds
    runs = study_mod.plan(study, protocols=["zero_shot"])
    n_intermediate = sum(1 for c in study.conditions.values() if c.configs)
    n_start = 1 if study.start else 0  # one shared start run per seed
    n_targets = len(study.conditions) * len(study.targets)
    assert len(runs) == len(study.seeds) * (n_start + n_intermediate + n_targets)
    if name == "iglue":
        # 1 start + 27 intermediates (6 label-shuffled controls) + 28 x 6 targets (5 IGLUE tasks + the start's
        # zero-shot xFlickr&CO row), 3 seeds
        assert len(runs) == 3 * (1 + 27 + 28 * 6)
        every = study_mod.plan(study)
        assert sum(r.phase == "translate_test" for r in every) == 3 * 28 * 5  # every target has translate_test
        fs = study.targets["xvnli"].few_shot
        n_fs = sum(r.phase == "few_shot" and r.target == "xvnli" for r in every)
        assert n_fs == 3 * len(fs.conditions) * len(fs.shots) * len(fs.langs)
