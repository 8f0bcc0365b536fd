"""Where a study runs: local-gpus with fake devices, SLURM through submitit's local executor, the run-folder
lock, a SIGKILLed runner, ``status``/``--retry-failed``, retention, the cost plan and IGLUE's protocols.
All with the fake trainer of test_study.py (real train.py runs: test_demo_study.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from study_fakes import edit_study as _edit
from study_fakes import install_fake_slurm, make_fake_study

import study as study_mod
from studies import executors
from studies.plan import cost_plan
from studies.runs import read_state
from studies.spec import StudyError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def fake_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo-like fake study of test_study.py (start, none/nli/ve, demo_ve/demo_vqa, seeds 0 and 1)."""
    return make_fake_study(tmp_path, monkeypatch)


def _args(run) -> dict:
    return json.loads((run.run_dir / "args.json").read_text())


def _small(cfg: Path) -> None:
    """One seed, conditions none + nli, one target: start -> nli intermediate -> targets (4 runs)."""
    spec = yaml.safe_load(cfg.read_text())
    spec["seeds"] = [0, 1]
    spec["conditions"] = {"none": {}, "nli": spec["conditions"]["nli"]}
    spec["targets"] = {"demo_ve": spec["targets"]["demo_ve"]}
    cfg.write_text(yaml.safe_dump(spec, sort_keys=False))


def test_local_gpus_runs_two_at_once_in_dependency_order(fake_study: Path, monkeypatch, capsys) -> None:
    _small(fake_study)
    monkeypatch.setenv("FAKE_RENDEZVOUS", "seed0,seed1")  # both start runs must be running at the same time
    assert study_mod.main(["--config", str(fake_study), "--executor", "local-gpus", "--gpus", "2"]) == 0
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    starts = [_args(r) for r in runs if r.phase == "start"]
    assert {a["devices"] for a in starts} == {"0", "1"}  # one fake GPU each, concurrently (rendezvous)
    for run in runs:
        args = _args(run)
        assert args["devices"] in ("0", "1")
        if run.parent is not None:  # a child starts only after its parent has finished
            assert args["t_start"] >= _args(run.parent)["t_end"], run.name
    out = capsys.readouterr().out
    assert "start on GPU 0" in out and "start on GPU 1" in out


@pytest.mark.slow
def test_failed_slurm_job_names_the_jobs_error(fake_study: Path, monkeypatch, capsys) -> None:
    """A job that fails says submitit's error next to the run's log tail (a log may end without the reason)."""
    _small(fake_study)
    _edit(fake_study, seeds=[0])
    monkeypatch.setenv("FAKE_FAIL_AT", "1")  # the start run crashes
    assert study_mod.main(["--config", str(fake_study), "--executor", "slurm", "--cluster", "local"]) == 1
    err = capsys.readouterr().err
    assert "Run start/seed0 (job " in err and ") failed: FailedJobError: " in err, err
    assert "simulated crash" in err  # the log tail


def test_local_executor_runs_one_at_a_time(fake_study: Path, monkeypatch) -> None:
    _small(fake_study)
    assert study_mod.main(["--config", str(fake_study)]) == 0
    runs = study_mod.plan(study_mod.load_study(fake_study))
    spans = sorted((_args(r)["t_start"], _args(r)["t_end"]) for r in runs)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert all(_args(r)["devices"] is None for r in runs)  # the environment is left alone


def test_local_jobs_run_cpu_runs_side_by_side(fake_study: Path, monkeypatch, capsys) -> None:
    """make demo: --jobs 2 runs two CPU runs at once (the environment untouched), parents still first."""
    _small(fake_study)
    monkeypatch.setenv("FAKE_RENDEZVOUS", "seed0,seed1")  # both start runs must be running at the same time
    assert study_mod.main(["--config", str(fake_study), "--jobs", "2"]) == 0
    runs = study_mod.plan(study_mod.load_study(fake_study))
    for run in runs:
        assert _args(run)["devices"] is None
        if run.parent is not None:
            assert _args(run)["t_start"] >= _args(run.parent)["t_end"], run.name
    capsys.readouterr()
    assert study_mod.main(["--config", str(fake_study), "--jobs", "0"]) != 0
    assert "--jobs 0: must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_slurm_executor_with_submitit_local_cluster(fake_study: Path, monkeypatch, capsys) -> None:
    _small(fake_study)
    _edit(fake_study, seeds=[0])
    code = study_mod.main(["--config", str(fake_study), "--executor", "slurm", "--cluster", "local"])
    assert code == 0, capsys.readouterr().err
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    out = capsys.readouterr().out
    for run in runs:
        assert study_mod.finished(run), run.name
        state = read_state(study, run)
        assert state["state"] == "done" and f"submitted {run.name} ({run.phase}): job {state['job']}" in out
        if run.parent is not None:
            assert _args(run)["t_start"] >= _args(run.parent)["t_end"], run.name
    assert "# Study `fake`" in out


def test_slurm_job_parameters(fake_study: Path) -> None:
    spec = yaml.safe_load(fake_study.read_text())
    spec["resources"] = {
        "default": {"gpus": 1, "time_min": 60},
        "intermediate": {
            "gpus": 4,
            "nodes": 2,
            "partition": "gpu",
            "mem_gb": 200,
            "time_min": 2880,
            "sbatch": {"account": "vl", "constraint": "a100"},
        },
    }
    study = study_mod.parse_study(spec)
    run = next(r for r in study_mod.plan(study) if r.phase == "intermediate")
    params = executors._job_parameters(study, run, ["1234"], "slurm")
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4 and params["nodes"] == 2
    assert params["slurm_partition"] == "gpu" and params["mem_gb"] == 200 and params["timeout_min"] == 2880
    extra = params["slurm_additional_parameters"]
    assert extra == {"account": "vl", "constraint": "a100", "dependency": "afterok:1234", "kill-on-invalid-dep": "yes"}
    assert executors.job_args(study, run) == ["--trainer.devices", "4", "--trainer.num_nodes", "2"]
    target = next(r for r in study_mod.plan(study) if r.phase == "target")
    assert executors._job_parameters(study, target, [], "slurm")["timeout_min"] == 60  # the default entry


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _hanging_study(fake_study: Path) -> tuple[Any, Any, list[str], dict[str, str]]:
    """One seed, small; its intermediate run's fake train.py hangs. Returns (study, that run, the runner's command,
    its environment)."""
    _small(fake_study)
    _edit(fake_study, seeds=[0])
    study = study_mod.load_study(fake_study)
    hung = next(r for r in study_mod.plan(study) if r.phase == "intermediate")
    cmd = [sys.executable, str(ROOT / "study.py"), "--config", str(fake_study)]
    return study, hung, cmd, dict(os.environ, FAKE_HANG=hung.name, PYTHONPATH=str(ROOT))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_killed_runner_leaves_no_orphan_and_one_writer(fake_study: Path, capsys) -> None:
    study, hung, cmd, env = _hanging_study(fake_study)
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(hung.run_dir / "pid")
        child = int((hung.run_dir / "pid").read_text())
        # A second runner meanwhile: it must not write the locked run folder.
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1 and "being written by another study process" in second.stderr, second.stderr
        assert study_mod.main(["status", "--config", str(fake_study)]) == 0
        status = capsys.readouterr().out
        assert f"running      {hung.name}  log: {hung.run_dir / 'train.log'} by=pid {runner.pid} on host" in status
        assert "done         start/seed0" in status and "pending      nli/seed0/demo_ve" in status
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "train.py outlived the killed runner"
            time.sleep(0.05)
    finally:
        runner.kill()
    assert study_mod.main(["--config", str(fake_study)]) == 0  # an interrupted run is no failure: rerun
    assert all(study_mod.finished(r) for r in study_mod.plan(study))
    assert (hung.run_dir.parent / "intermediate.incomplete" / "pid").is_file()  # the killed attempt, set aside
    calls = (fake_study.parent / "calls.txt").read_text().splitlines()
    assert calls.count(str(hung.run_dir)) == 2


def test_status_and_retry_failed(fake_study: Path, monkeypatch, capsys) -> None:
    _small(fake_study)
    monkeypatch.setenv("FAKE_FAIL_AT", "3")
    assert study_mod.main(["--config", str(fake_study), "--keep-going"]) == 1
    capsys.readouterr()
    assert study_mod.main(["status", "--config", str(fake_study)]) == 1
    out = capsys.readouterr().out
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    failed = runs[2]
    assert f"failed       {failed.name}  log: {failed.run_dir / 'train.log'} rc=3" in out
    assert "simulated crash" in out  # the failure's last lines
    assert f"done         {runs[0].name}" in out
    # --keep-going ran everything that does not start from the failed run
    dependents = [r for r in runs if r.parent is not None and r.parent.name == failed.name]
    others = [r for r in runs if r is not failed and r not in dependents]
    assert all(study_mod.finished(r) for r in others) and not any(study_mod.finished(r) for r in dependents)
    monkeypatch.delenv("FAKE_FAIL_AT")
    assert study_mod.main(["--config", str(fake_study), "--retry-failed"]) == 0
    assert all(study_mod.finished(r) for r in runs)


def test_retention_keeps_what_later_runs_need(fake_study: Path) -> None:
    _edit(fake_study, seeds=[0], retention={"keep": "best", "keep_intermediate": "none"})
    study = study_mod.load_study(fake_study)
    runs = {r.name: r for r in study_mod.plan(study)}
    inter, target = runs["nli/seed0/intermediate"], runs["nli/seed0/demo_ve"]
    ckpts = lambda run: sorted(p.name for p in (run.run_dir / "checkpoints").iterdir())  # noqa: E731
    # The nli/demo_vqa target has not run yet: it still needs the intermediate run's final weights.
    assert study_mod.main(["--config", str(fake_study), "--only", "nli", "--targets", "demo_ve"]) == 0
    assert ckpts(inter) == ["best.ckpt", "last.ckpt"] and ckpts(runs["start/seed0"]) == ["best.ckpt", "last.ckpt"]
    assert ckpts(target) == ["best.ckpt"]  # nothing starts from a target run here: keep best
    assert study_mod.main(["--config", str(fake_study)]) == 0
    assert ckpts(inter) == [] and ckpts(runs["start/seed0"]) == []  # every dependent finished: keep none


def test_retention_keeps_no_protocol_checkpoints_unless_asked(fake_study: Path) -> None:
    """Translate-test and few-shot runs keep outcomes and results, not checkpoints (``keep_protocol: none``); the
    target they start from keeps its best until every one of them has finished."""
    _edit(fake_study, seeds=[0], retention={"keep": "best", "keep_intermediate": "none"})
    spec = yaml.safe_load(fake_study.read_text())
    spec["targets"] = {"demo_ve": spec["targets"]["demo_ve"]}
    spec["targets"]["demo_ve"]["translate_test"] = {"split": "translate_test"}
    spec["targets"]["demo_ve"]["few_shot"] = {"shots": [1], "langs": ["de"], "conditions": ["nli"]}
    fake_study.write_text(yaml.safe_dump(spec, sort_keys=False))
    runs = {r.name: r for r in study_mod.plan(study_mod.load_study(fake_study))}
    target, tt, fs = (runs[f"nli/seed0/demo_ve{s}"] for s in ("", ".translate_test", ".fs1.de"))
    ckpts = lambda run: sorted(p.name for p in (run.run_dir / "checkpoints").glob("*.ckpt"))  # noqa: E731
    only = ["--config", str(fake_study), "--only", "nli"]
    assert study_mod.main([*only, "--protocols", "zero_shot", "translate_test"]) == 0
    assert ckpts(tt) == [] and (tt.run_dir / "finished.json").is_file()  # its outcomes and results stay
    assert ckpts(target) == ["best.ckpt", "last.ckpt"]  # the few-shot run has not run: it needs the target
    assert study_mod.main(only) == 0
    assert ckpts(fs) == [] and (fs.run_dir / "finished.json").is_file() and ckpts(target) == ["best.ckpt"]
    _edit(fake_study, retention={"keep": "best", "keep_intermediate": "none", "keep_protocol": "best"})
    study = study_mod.load_study(fake_study)
    (fs.run_dir / "checkpoints" / "best.ckpt").write_text("x")
    (fs.run_dir / "checkpoints" / "last.ckpt").write_text("x")
    study_mod.apply_retention(study, study_mod.plan(study))
    assert ckpts(fs) == ["best.ckpt"]


def test_keep_seeds_runner_and_dry_run_follow_one_rule(fake_study: Path) -> None:
    """``retention.keep_seeds``: only seed 0's runs keep a checkpoint once their dependents have finished; the dry
    run's kept figure is the files the runner left (both read ``Retention.keep_for``); a seed not in ``seeds`` is
    refused."""
    _edit(
        fake_study,
        retention={"keep": "best", "keep_intermediate": "last", "keep_seeds": [0]},
        resources={"default": {"checkpoint_gb": 1.0}},
    )
    study = study_mod.load_study(fake_study)
    runs = study_mod.plan(study)
    assert {r.seed for r in runs} == {0, 1}
    kept_before = {p: c.disk_kept_gb for p, c in cost_plan(study, runs, {})[0].items()}
    assert study_mod.main(["--config", str(fake_study)]) == 0
    on_disk: dict[str, int] = {}
    for run in runs:
        files = sorted(p.name for p in (run.run_dir / "checkpoints").glob("*.ckpt"))
        assert (
            (run.run_dir / "finished.json").is_file()
            and (run.run_dir / "results.json").is_file()
            or run.phase in ("start", "intermediate")
        ), run.name
        if run.seed == 1:
            assert files == [], run.name  # outcomes and results stay, checkpoints go
        else:
            assert files == (["best.ckpt"] if run.phase == "target" else ["last.ckpt"]), run.name
        on_disk[run.phase] = on_disk.get(run.phase, 0) + len(files)
    assert {p: int(v) for p, v in kept_before.items()} == on_disk
    assert "seeds: 0)" in "\n".join(study_mod.summary_lines(study, runs, {}))
    _edit(fake_study, retention={"keep": "best", "keep_seeds": [7]})
    with pytest.raises(StudyError, match="keep_seeds"):
        study_mod.load_study(fake_study)


def test_cost_plan_and_missing_shards(fake_study: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(fake_study.read_text())
    (tmp_path / "shards_ok").mkdir()
    (tmp_path / "shards_ok" / "manifest.json").write_text("{}")
    ve_cfg = Path(spec["targets"]["demo_ve"]["configs"][0])
    ve_cfg.write_text(
        yaml.safe_dump(
            {
                "trainer": {"max_steps": 100},
                "data": {
                    "tasks": [
                        {"name": "demo_ve", "shards": str(tmp_path / "shards_ok"), "train_split": "train"},
                        {"name": "xvnli", "shards": str(tmp_path / "no_xvnli"), "test_split": "test"},
                    ]
                },
            }
        )
    )
    spec["overrides"] = []  # target_vqa keeps its own --trainer.max_steps=4 override
    spec["resources"] = {
        "default": {"seconds_per_step": 36, "checkpoint_gb": 2.0},
        "target": {"gpus": 2, "seconds_per_step": 36, "checkpoint_gb": 3.0},
    }
    spec["retention"] = {"keep": "best", "keep_intermediate": "none"}
    study = study_mod.parse_study(spec)
    runs = study_mod.plan(study)
    lines = study_mod.summary_lines(study, runs, {runs[0].name: True})
    table = {line.split()[0]: line.split() for line in lines[2:6]}
    # 12 target runs: 6 of demo_ve (100 steps), 6 of demo_vqa (4 steps), 2 GPUs, 36 s per step.
    assert table["target"][1:4] == ["12", "12", "624"]
    assert float(table["target"][4]) == pytest.approx(624 * 36 * 2 / 3600, abs=0.05)
    # checkpoint_gb: one weights-only file. No run starts from a target here: each holds its best once finished
    # (12 x 3 GB), and one in training holds best + last as full states (2 x 3 x 3 GB in all, 15 GB more)
    assert table["target"][5:7] == ["51", "36"]
    assert table["start"][1:3] == ["2", "1"] and table["start"][4] == "?"  # no max_steps known for the start
    # 4 runs hold best + last for their targets (4 x 2 x 2 GB), one in training 8 GB more; keep_intermediate: none
    assert table["intermediate"][5:7] == ["24", "0"]
    text = "\n".join(lines)
    assert f"{tmp_path / 'no_xvnli'} (xvnli): needed by 6 runs" in text and "shards_ok" not in text


def test_cost_plan_protocol_runs_keep_no_checkpoint(fake_study: Path) -> None:
    """A few-shot run keeps none by default: it costs disk only while it trains (best + last as full states)."""
    spec = yaml.safe_load(fake_study.read_text())
    spec["seeds"] = [0]
    spec["targets"] = {"demo_ve": spec["targets"]["demo_ve"]}
    spec["targets"]["demo_ve"]["few_shot"] = {"shots": [1], "langs": ["de"], "conditions": ["nli"]}
    spec["resources"] = {"default": {"checkpoint_gb": 1.0}}
    study = study_mod.parse_study(spec)
    lines = study_mod.summary_lines(study, study_mod.plan(study), {})
    table = {line.split()[0]: line.split() for line in lines[2:7]}
    assert table["few_shot"][1] == "1" and table["few_shot"][5:7] == ["6", "0"], lines
    assert "protocol: none" in "\n".join(lines)


def test_iglue_dry_run_summary_fits_40_lines() -> None:
    cmd = [sys.executable, "study.py", "--config", "configs/studies/iglue.yaml", "--dry-run"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) <= 40, proc.stdout
    for phase in ("intermediate", "target", "translate_test", "few_shot", "total"):
        assert any(line.startswith(phase) for line in lines), (phase, proc.stdout)
    assert "GPU-h" in lines[1] and "missing shard directories" in proc.stdout
    verbose = subprocess.run([*cmd, "--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    total = int(lines[0].split(": ")[1].split()[0])
    assert f"[{total}/{total}]" in verbose.stdout and len(verbose.stdout.splitlines()) > 2 * total


def test_translate_test_and_few_shot_protocols(fake_study: Path, capsys) -> None:
    _small(fake_study)
    spec = yaml.safe_load(fake_study.read_text())
    spec["seeds"] = [0]
    spec["targets"]["demo_ve"]["translate_test"] = {"split": "translate_test"}
    spec["targets"]["demo_ve"]["few_shot"] = {
        "shots": [1, 5],
        "langs": ["de", "ru"],
        "val_split": "fs_dev",
        "test_split": "test",
        "conditions": ["none", "nli"],
    }
    fake_study.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert study_mod.main(["--config", str(fake_study)]) == 0
    study = study_mod.load_study(fake_study)
    runs = {r.name: r for r in study_mod.plan(study)}
    target = runs["nli/seed0/demo_ve"]
    tt = _args(runs["nli/seed0/demo_ve.translate_test"])
    assert tt["command"] == "test" and tt["ckpt_path"] == str(target.run_dir / "checkpoints/best.ckpt")
    fs = runs["nli/seed0/demo_ve.fs5.ru"]
    args = _args(fs)
    assert args["init_from"] == str(target.run_dir / "checkpoints/best.ckpt") and args["init_scope"] == "all"
    tasks = json.loads(args["config"][-1])["data"]["tasks"]
    assert tasks == [
        {
            "name": "demo_ve",
            "shards": "data/demo_ve",
            "train_split": "train_5",
            "train_langs": ["ru"],
            "val_split": "fs_dev",
            "val_langs": ["ru"],
            "test_split": "test",
            "test_langs": ["ru"],
        }
    ]
    data = json.loads((study.out_dir / "study.json").read_text())
    cell = {(r["target"], r["condition"], r["lang"]): r for r in data["rows"] if r["metric"] == "acc"}
    # fake scores: 50 + lang + condition (+5 translate-test, +N for N shots); few-shot averages de and ru
    assert cell[("demo_ve", "nli", "avg_xling")]["mean"] == pytest.approx(51.0)
    assert cell[("demo_ve [translate-test]", "nli", "avg_xling")]["mean"] == pytest.approx(56.0)
    assert cell[("demo_ve [5-shot]", "nli", "avg_xling")]["mean"] == pytest.approx(55.0)
    assert cell[("demo_ve [1-shot]", "none", "avg_xling")]["delta"] == pytest.approx(0.0)
    assert cell[("demo_ve [5-shot]", "nli", "avg_xling")]["delta"] == pytest.approx(1.0)
    md = (study.out_dir / "study.md").read_text()
    side = md.split("## Zero-shot, translate-test and few-shot side by side")[1]
    assert "| condition | demo_ve | demo_ve [translate-test] | demo_ve [1-shot] | demo_ve [5-shot] |" in side
    assert "| nli | 51.00 (+1.00) | 56.00 (+1.00) | 51.00 (+1.00) | 55.00 (+1.00) |" in side


def test_interrupted_runner_stops_its_run_which_reruns_without_retry(fake_study: Path, capsys) -> None:
    study, hung, cmd, env = _hanging_study(fake_study)
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(hung.run_dir / "pid")
    child = int((hung.run_dir / "pid").read_text())
    runner.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 130 and "interrupted" in err
    assert not _alive(child)
    assert read_state(study, hung)["state"] == "interrupted"  # not "failed": no --retry-failed needed
    assert study_mod.main(["--config", str(fake_study)]) == 0
    assert all(study_mod.finished(r) for r in study_mod.plan(study))


def test_slurm_submission_scripts_and_no_double_submission(fake_study: Path, tmp_path: Path, monkeypatch, capsys):
    """The real SLURM path against stand-ins for sbatch/squeue: resources per phase, afterok dependencies."""
    install_fake_slurm(tmp_path, monkeypatch)
    _small(fake_study)
    _edit(
        fake_study,
        seeds=[0],
        resources={
            "default": {"gpus": 1, "time_min": 60, "partition": "gpu", "sbatch": {"account": "vl"}},
            "intermediate": {"gpus": 4, "time_min": 600, "partition": "big", "sbatch": {"account": "vl"}},
        },
    )
    assert study_mod.main(["--config", str(fake_study), "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    # plan order: start (1), none/demo_ve (2, after 1), nli intermediate (3, after 1), nli/demo_ve (4, after 3)
    assert "submitted none/seed0/demo_ve (target): job 2 after 1" in out
    assert "submitted nli/seed0/demo_ve (target): job 4 after 3" in out
    scripts = {n: (tmp_path / f"job-{n}.sh").read_text() for n in range(1, 5)}
    assert "--dependency" not in scripts[1] and "#SBATCH --dependency=afterok:3" in scripts[4]
    assert "#SBATCH --kill-on-invalid-dep=yes" in scripts[4]
    assert "#SBATCH --partition=big" in scripts[3] and "#SBATCH --gpus-per-node=4" in scripts[3]
    assert "#SBATCH --ntasks-per-node=4" in scripts[3] and "#SBATCH --time=600" in scripts[3]
    assert "#SBATCH --account=vl" in scripts[2] and "#SBATCH --partition=gpu" in scripts[2]
    assert not list(fake_study.parent.glob("out/**/train.log"))  # nothing ran here: the jobs are queued
    (tmp_path / "queue").write_text("1\n2\n3\n4\n")
    assert study_mod.main(["status", "--config", str(fake_study)]) == 0
    assert "queued       nli/seed0/demo_ve  log:" in capsys.readouterr().out
    assert study_mod.main(["--config", str(fake_study), "--executor", "slurm"]) == 0  # resubmit: nothing new
    assert "already in the queue as job 4" in capsys.readouterr().out and not (tmp_path / "job-5.sh").exists()
    (tmp_path / "queue").write_text("1\n2\n3\n")  # job 4 was cancelled before it started
    study_mod.main(["status", "--config", str(fake_study)])
    assert "lost         nli/seed0/demo_ve  log:" in capsys.readouterr().out


def test_probe_measures_seconds_per_step_for_the_cost_plan(fake_study: Path, monkeypatch, capsys) -> None:
    _small(fake_study)
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")  # the fake trainer sleeps per step
    assert study_mod.main(["--config", str(fake_study), "--dry-run", "--probe", "5"]) == 0
    out = capsys.readouterr().out
    study = study_mod.load_study(fake_study)
    for phase in ("start", "intermediate", "target"):  # two short runs of each phase's first run, from scratch
        for steps in (5, 10):
            args = _args(_probe(study, phase, steps))
            assert args["max_steps"] == steps and args["init_from"] is None and args["test_after_fit"] == "false"
        rate = float(out.split(f"probe {phase}: ")[1].split(" s/step")[0])
        assert rate > 0
    rows = [line.split() for line in out.splitlines() if line.startswith(("start", "intermediate", "target"))]
    assert len(rows) == 3 and all(row[4] != "?" for row in rows)  # GPU-hours known without seconds_per_step
    assert "seconds_per_step" not in out
    assert not any(study_mod.finished(r) for r in study_mod.plan(study))  # the study itself did not run


def _probe(study, phase: str, steps: int):
    from studies.probe import _short

    run = next(r for r in study_mod.plan(study) if r.phase == phase)
    return _short(study, run, steps)


def test_few_shot_runs_select_on_the_target_language_and_say_so(tmp_path: Path) -> None:
    from lightning_modules import reports

    rows = [
        {"phase": "few_shot", "task": "xvnli", "lang": "de", "split": "test", "metric": "acc", "value": 50.0, "seed": 0}
    ]
    reports.write_run_report(tmp_path / "fs", rows, selection="val/xvnli/de/acc")
    selection = json.loads((tmp_path / "fs" / "results.json").read_text())["selection"]
    assert selection["data"] == "few-shot dev split" and "few-shot protocol" in selection["note"]
    assert reports.FEW_SHOT_NOTE in (tmp_path / "fs" / "results.md").read_text()
    with pytest.raises(ValueError, match="English dev data only"):  # zero-shot runs still may not
        reports.write_run_report(tmp_path / "zs", [dict(rows[0], phase="target")], selection="val/xvnli/de/acc")
