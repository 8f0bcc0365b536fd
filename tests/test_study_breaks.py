"""What the rehearsal of the shipped IGLUE study found (issue 22), each on the shipped files or the shapes real
data have: few-shot selection on a split the release has, protocol rows in the report, resources merged over
``default``, SLURM jobs of the shipped grid as the cluster sees them, a redo of one run, ``status`` after a
folder is deleted, evaluation-only runs and budgets in the cost plan, the docs' figures = the dry run's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_fakes import edit_study as _edit
from study_fakes import install_fake_slurm, make_fake_study

import study as study_mod
from shards.__main__ import main as shards_main
from studies import executors
from studies.plan import cost_plan, plan
from studies.rehearsal import doc_commands, iglue_root, load_scale, shrink
from studies.spec import StudyError, load_study, parse_study

REPO = Path(__file__).resolve().parents[1]
IGLUE = REPO / "configs" / "studies" / "iglue.yaml"
try:
    TREE: Path | None = iglue_root()
except StudyError:
    TREE = None


@pytest.fixture()
def fake_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_fake_study(tmp_path, monkeypatch)


# ----------------------------------------------------------------------------------------------- few-shot


@pytest.mark.skipif(TREE is None, reason="no IGLUE release tree (../shared/datasets/iglue-tree or MMSTILTS_IGLUE_ROOT)")
def test_shipped_few_shot_runs_read_splits_the_release_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XVNLI has no dev set in ar/es/fr/ru: the shipped few-shot block selected on `dev` in the shot language
    and every XVNLI few-shot run failed. Every split and language a shipped few-shot run trains, selects and
    tests on must exist in the shards the docs' commands build from the release."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iglue").mkdir()
    (tmp_path / "iglue" / "datasets").symlink_to(TREE)
    from shards.standins import iglue_images

    iglue_images(TREE, tmp_path)
    study = load_study(IGLUE)
    runs = [r for r in plan(study) if r.phase == "few_shot"]
    assert {r.target for r in runs} == {"xvnli", "xgqa"}
    built = {}
    for args in doc_commands():
        if args[1] in {r.target for r in runs} and "--out" in args:
            assert shards_main(args) == 0, args
            built[args[1]] = json.loads((tmp_path / args[args.index("--out") + 1] / "manifest.json").read_text())
    for run in runs:
        (entry,) = run.data_tasks
        counts = built[run.target]["counts"]
        for stage in ("train", "val", "test"):
            split, langs = entry[f"{stage}_split"], entry[f"{stage}_langs"]
            assert all(counts.get(split, {}).get(lang) for lang in langs), (run.name, stage, split, langs)


# ----------------------------------------------------------------------------------------------- report


def test_protocol_rows_reach_the_report_as_the_real_run_writes_them(fake_study: Path) -> None:
    """A translate-test or few-shot run's results.json holds its test as split `test` (as train.py writes it);
    the report dropped every such row (it kept rows named after the protocol's data split) and said nothing."""
    spec = yaml.safe_load(fake_study.read_text())
    spec["seeds"] = [0]
    spec["conditions"] = {"none": {}, "nli": spec["conditions"]["nli"]}
    spec["targets"] = {
        "demo_ve": {
            **spec["targets"]["demo_ve"],
            "translate_test": {"split": "translate_test"},
            "few_shot": {"shots": [2], "langs": ["de"], "test_split": "fs_test"},
        }
    }
    fake_study.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert study_mod.main(["--config", str(fake_study)]) == 0
    out = Path(spec["out"])
    data = json.loads((out / "study.json").read_text())
    targets = {r["target"] for r in data["rows"] if r["mean"] is not None}
    assert {"demo_ve", "demo_ve [translate-test]", "demo_ve [2-shot]"} <= targets
    assert data["missing"] == []
    # a run that finished but tested nothing is named, not dropped in silence
    results = out / "nli/seed0/demo_ve.translate_test/results.json"
    results.write_text(json.dumps({"rows": []}))
    study_mod.main(["--config", str(fake_study), "--report-only"])
    md = (out / "study.md").read_text()
    assert "`nli/seed0/demo_ve.translate_test (finished, no test rows)`" in md


# ----------------------------------------------------------------------------------------------- SLURM


def test_resources_merge_each_phase_over_default() -> None:
    data = yaml.safe_load(IGLUE.read_text())
    data["resources"]["default"] |= {"partition": "gpu", "sbatch": {"account": "proj", "qos": "normal"}}
    data["resources"]["intermediate"]["sbatch"] = {"qos": "long"}
    study = parse_study(data)
    for phase in ("start", "intermediate", "target", "translate_test", "few_shot"):
        res = study.resources_for(phase)
        assert res.partition == "gpu" and res.sbatch["account"] == "proj", phase
        assert res.mem_gb is not None and res.cpus_per_gpu == 8, phase
    assert study.resources_for("intermediate").sbatch == {"account": "proj", "qos": "long"}
    assert study.resources_for("intermediate").gpus == 4 and study.resources_for("translate_test").time_min == 240
    assert study.resources_for("translate_test").mem_gb == 64  # was None: no --mem for translate-test jobs


def test_shipped_grid_submits_every_job_with_its_resources_and_chain(tmp_path: Path, monkeypatch) -> None:
    """The rehearsal's grid of the shipped iglue.yaml (a partition and account set once in `default`, as its
    comment says) through the real submitit path against stand-ins for sbatch/squeue/sacct/srun: every job's
    partition, account, GPUs, tasks, CPUs, memory, time and afterok parent, as the cluster reads them."""
    install_fake_slurm(tmp_path, monkeypatch)
    data = yaml.safe_load(IGLUE.read_text())
    data["resources"]["default"] |= {"partition": "gpu", "sbatch": {"account": "proj"}}
    data["out"] = str(tmp_path / "out")
    study = shrink(parse_study(data), load_scale())
    runs = plan(study)
    assert executors.submit_slurm(study, runs, cluster="slurm", folder=tmp_path / "slurm") == []
    scripts = {int(p.stem.split("-")[1]): p.read_text() for p in tmp_path.glob("job-*.sh")}
    assert len(scripts) == len(runs)
    job_of = {run.name: n for n, run in enumerate(runs, 1)}
    for run in runs:
        script, res = scripts[job_of[run.name]], study.resources_for(run.phase)
        sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
        assert sbatch["partition"] == "gpu" and sbatch["account"] == "proj", run.name
        assert sbatch["gpus-per-node"] == str(res.gpus) and sbatch["ntasks-per-node"] == str(res.gpus), run.name
        assert sbatch["cpus-per-task"] == "8" and sbatch["time"] == str(res.time_min), run.name
        assert sbatch["mem"] == f"{int(res.mem_gb)}GB", run.name
        parent = job_of.get(run.parent.name) if run.parent else None
        assert sbatch.get("dependency") == (f"afterok:{parent}" if parent else None), run.name
        assert "srun" in script and "submitit" in script
    inter = next(r for r in runs if r.phase == "intermediate")  # 4 GPUs: one task per GPU, one DDP group
    assert executors.job_args(study, inter) == ["--trainer.devices", "4", "--trainer.num_nodes", "1"]
    assert "#SBATCH --ntasks-per-node=4" in scripts[job_of[inter.name]]


# ----------------------------------------------------------------------------------------------- redo, status


def test_redo_of_one_run_reruns_only_the_parents_it_needs(fake_study: Path, capsys: pytest.CaptureFixture) -> None:
    """Retention deleted the start's and the intermediate run's checkpoints once their children finished; a
    target run folder deleted by hand then failed on its parent's missing checkpoint."""
    _edit(fake_study, seeds=[0], retention={"keep": "best", "keep_intermediate": "none"})
    assert study_mod.main(["--config", str(fake_study)]) == 0
    study = study_mod.load_study(fake_study)
    runs = {r.name: r for r in plan(study)}
    assert not list((runs["nli/seed0/intermediate"].run_dir / "checkpoints").glob("*.ckpt"))  # retention
    shutil.rmtree(runs["nli/seed0/demo_ve"].run_dir)
    capsys.readouterr()
    assert study_mod.main(["--config", str(fake_study)]) == 0
    out = capsys.readouterr().out
    assert "redo nli/seed0/intermediate: the checkpoint nli/seed0/demo_ve starts from was deleted" in out
    assert "redo start/seed0: the checkpoint nli/seed0/intermediate starts from was deleted" in out
    assert study_mod.finished(runs["nli/seed0/demo_ve"]) is not None
    assert runs["nli/seed0/intermediate"].run_dir.with_name("intermediate.superseded").is_dir()
    ran = Path(os.environ["FAKE_CALLS"]).read_text().splitlines()
    assert len(ran) == len(runs) + 3  # the target, its intermediate, the start: nothing else reran


def test_status_of_a_deleted_run_is_not_done(fake_study: Path, capsys: pytest.CaptureFixture) -> None:
    _edit(fake_study, seeds=[0])
    assert study_mod.main(["--config", str(fake_study)]) == 0
    run = next(r for r in plan(study_mod.load_study(fake_study)) if r.name == "ve/seed0/demo_vqa")
    shutil.rmtree(run.run_dir)
    capsys.readouterr()
    study_mod.main(["status", "--config", str(fake_study)])
    line = next(x for x in capsys.readouterr().out.splitlines() if " ve/seed0/demo_vqa " in x)
    assert line.startswith("pending") and "was deleted after it finished" in line


# ----------------------------------------------------------------------------------------------- cost plan


def test_evaluation_only_runs_are_costed_as_evaluations() -> None:
    """The xflickrco_start rows (no training data) were costed as 10,000-step training runs with checkpoints."""
    study = load_study(IGLUE)
    runs = [r for r in plan(study) if r.target == "xflickrco_start"]
    costs, _ = cost_plan(study, runs, {})
    assert costs["target"].runs == len(runs) > 0
    assert costs["target"].steps == 0 and costs["target"].gpu_hours == 0 and costs["target"].disk_peak_gb == 0


def test_dry_run_applies_the_budget(fake_study: Path) -> None:
    _edit(fake_study, budget={"intermediate_steps": 6})
    study = study_mod.load_study(fake_study)
    costs, _ = cost_plan(study, plan(study), {})
    assert costs["intermediate"].steps == 6 * costs["intermediate"].runs


def test_docs_quote_the_dry_run() -> None:
    """docs/study.md's plan block and the run counts in docs/study.md and README are the dry run's."""
    proc = subprocess.run(
        [sys.executable, "study.py", "--config", str(IGLUE), "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first = re.compile(r"(study |phase|start|intermediate|target|translate_test|few_shot|total)\b")
    table = [line for line in proc.stdout.splitlines() if first.match(line)]
    docs = (REPO / "docs" / "study.md").read_text()
    block = docs.split("`--dry-run` ends with a summary")[1].split("```")[1]
    assert [line for line in block.splitlines() if line.strip()][: len(table)] == table
    counts = {
        phase: int(line.split()[1])
        for line in table
        if (phase := line.split()[0]) in ("start", "intermediate", "target", "translate_test", "few_shot", "total")
    }
    said = f"{counts['total']:,} runs in all"
    assert said in docs and said in (REPO / "README.md").read_text()


def test_translate_test_runs_keep_the_study_job_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jsonargparse import Namespace

    from lightning_modules.config_adjustments import eval_wandb_run

    monkeypatch.setenv("WANDB_JOB_TYPE", "translate_test")
    logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(name="x", id=None))
    eval_wandb_run(logger, "test", tmp_path)
    assert logger.dict_kwargs["job_type"] == "translate_test"
    monkeypatch.delenv("WANDB_JOB_TYPE")
    logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(name="x", id=None))
    eval_wandb_run(logger, "test", tmp_path)
    assert logger.dict_kwargs["job_type"] == "eval"


def test_hand_on_names_the_checkpoint_that_seeds_the_next_phase(fake_study: Path) -> None:
    """Start and intermediate runs hand on their final weights unless the study says ``hand_on: best``."""
    _edit(fake_study, seeds=[0])
    assert study_mod.main(["--config", str(fake_study)]) == 0
    for hand_on, name in (("final", "last.ckpt"), ("best", "best.ckpt")):
        _edit(fake_study, hand_on=hand_on)
        study = study_mod.load_study(fake_study)
        run = next(r for r in plan(study) if r.name == "nli/seed0/demo_ve")
        assert run.init_key == ("final_ckpt" if hand_on == "final" else "best_ckpt")
        assert study_mod.finished(run.parent)[run.init_key].endswith(f"nli/seed0/intermediate/checkpoints/{name}")


def test_a_protocol_run_gets_its_own_task_list_whole(tmp_path: Path, demo_dir: Path) -> None:
    """A translate-test run's task list has the target's length: jsonargparse merged it entry by entry, so keys
    the protocol's entries leave out (here `train_split`, `val_split`) kept the target config's values."""
    from studies.plan import Run, run_args

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir)
    study = parse_study(
        {
            "base": ["configs/base.yaml", "configs/demo/base.yaml"],
            "conditions": {"none": {}},
            "targets": {"demo_ve": {"configs": ["configs/demo/target_ve.yaml"]}},
        }
    )
    own = [{"name": "demo_ve", "shards": "data/demo/demo_ve", "test_split": "test"}]
    run = Run("x", "translate_test", 0, ("configs/demo/target_ve.yaml",), (), tmp_path / "x", data_tasks=tuple(own))
    args = run_args(study, run, None)[1:]
    args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "test", *args, "--print_config"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (task,) = yaml.safe_load(proc.stdout)["data"]["tasks"]
    assert task["test_split"] == "test" and task["train_split"] is None and task["val_split"] is None


# ----------------------------------------------------------------------------------------------- settings drift


def test_a_study_refuses_to_mix_runs_made_with_other_settings(fake_study: Path, capsys: pytest.CaptureFixture) -> None:
    """Editing a target's steps after its runs finished: every finished run was skipped, and after one was
    redone the table compared runs made with 4 steps against runs made with 9, without a word."""
    _edit(fake_study, seeds=[0])
    assert study_mod.main(["--config", str(fake_study)]) == 0
    calls = Path(os.environ["FAKE_CALLS"])
    before = len(calls.read_text().splitlines())
    spec = yaml.safe_load(fake_study.read_text())
    spec["targets"]["demo_vqa"]["overrides"] = ["--trainer.max_steps=9"]
    fake_study.write_text(yaml.safe_dump(spec, sort_keys=False))
    capsys.readouterr()
    assert study_mod.main(["--config", str(fake_study)]) == 2
    err = capsys.readouterr().err
    assert "3 finished run(s) were made with other settings" in err
    assert "none/seed0/demo_vqa: arguments: --trainer.max_steps=4 -> --trainer.max_steps=9" in err
    assert "--rerun-changed" in err and len(calls.read_text().splitlines()) == before  # nothing ran
    assert study_mod.main(["--config", str(fake_study), "--rerun-changed"]) == 0
    assert len(calls.read_text().splitlines()) == before + 3  # the three demo_vqa runs, nothing else
    assert study_mod.main(["--config", str(fake_study)]) == 0
    assert len(calls.read_text().splitlines()) == before + 3
    # a changed config file or a rebuilt dataset is a change too, and so is everything that starts from it
    (fake_study.parent / "configs" / "intermediate_nli.yaml").write_text("trainer: {max_epochs: 1}\n")
    capsys.readouterr()
    assert study_mod.main(["--config", str(fake_study)]) == 2
    err = capsys.readouterr().err
    assert "nli/seed0/intermediate: config file" in err and "intermediate_nli.yaml changed" in err
    assert "nli/seed0/demo_ve: starts from nli/seed0/intermediate, which changed" in err


def test_a_diverged_run_is_a_failure_named_as_such(fake_study: Path, monkeypatch, capsys) -> None:
    _edit(fake_study, seeds=[0])
    monkeypatch.setenv("FAKE_DIVERGE", "nli/seed0/demo_ve")
    assert study_mod.main(["--config", str(fake_study), "--keep-going"]) == 1
    err = capsys.readouterr().err
    assert "Run nli/seed0/demo_ve diverged (step 3, task demo_ve: loss nan, lr 1000.0)" in err
    study_mod.main(["--config", str(fake_study), "--report-only"])
    md = (Path(yaml.safe_load(fake_study.read_text())["out"]) / "study.md").read_text()
    assert "`nli/seed0/demo_ve (diverged: step 3, task demo_ve: loss nan, lr 1000.0)`" in md


def test_inspect_label_counts_are_whole_or_say_they_are_sampled(tmp_path: Path) -> None:
    """`shards inspect` counted labels over the first 20,000 samples of a split without saying so."""
    from conftest import write_task_shards

    from shards.inspect import inspect_dir

    write_task_shards(tmp_path / "ve", "demo_ve", {("train", "en"): 30})
    lines: list[str] = []
    inspect_dir(tmp_path / "ve", echo=lines.append, limit=10)
    (labels,) = [line for line in lines if "labels train/demo_ve" in line]
    assert "(the first 10 of 30 samples: sampled; --all counts every one)" in labels
    lines.clear()
    inspect_dir(tmp_path / "ve", echo=lines.append, limit=None)
    (labels,) = [line for line in lines if "labels train/demo_ve" in line]
    assert "sampled" not in labels and sum(int(n) for n in re.findall(r" (\d+)(?:,|$)", labels)) == 30


def test_budget_device_is_what_the_run_ran_on(tmp_path: Path) -> None:
    """`trainer.accelerator: auto` on a CPU machine was labelled GPU in the study's budgets table."""
    from studies.budgets import CONFIG_FILE, run_budget

    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"trainer": {"accelerator": "auto", "max_steps": 4}}))
    assert run_budget(tmp_path)["device"] == "device"  # nothing recorded: not guessed
    (tmp_path / "finished.json").write_text(json.dumps({"device": "cpu"}))
    assert run_budget(tmp_path)["device"] == "CPU"
    (tmp_path / "finished.json").write_text(json.dumps({"device": "cuda"}))
    assert run_budget(tmp_path)["device"] == "GPU"


def test_significance_on_one_seed_says_it_covers_item_noise_only() -> None:
    from studies.table import _significance_sections

    test = {
        "condition": "nli",
        "target": "xvnli",
        "metric": "acc",
        "lang": "avg_xling",
        "delta": 1.0,
        "low": 0.5,
        "high": 1.5,
        "p": 0.01,
        "p_adj": 0.02,
        "significant": True,
        "n_seeds": 1,
        "n_items": 100,
        "correction": "holm",
        "resamples": 2000,
        "control": "",
    }
    text = "\n".join(_significance_sections([test], "none"))
    assert "1 of these 1 deltas rest on one seed per condition" in text and "test-item noise only" in text
    assert "one seed" not in "\n".join(_significance_sections([dict(test, n_seeds=3)], "none"))


def test_slurm_without_srun_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sbatch` on PATH but no `srun` (a machine with part of the client tools): submitit's RuntimeError before."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 1'\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    data = yaml.safe_load(IGLUE.read_text()) | {"out": str(tmp_path / "out")}
    study = shrink(parse_study(data), load_scale())
    with pytest.raises(StudyError, match=r"no `srun` on PATH .*--cluster local"):
        executors.submit_slurm(study, plan(study), cluster="slurm", folder=tmp_path / "slurm")


def test_dry_run_into_a_closed_pipe_is_no_error() -> None:
    """`study.py --dry-run --verbose | head -1` ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "study.py", "--config", str(IGLUE), "--dry-run", "--verbose"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # the reader has what it wanted
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err, err


def test_study_headline_states_the_selection_the_runs_recorded() -> None:
    """A study whose target runs ran no validation still claimed "checkpoint selected on English dev data only"."""
    from studies.table import SELECTION_NOTE, selection_headline

    none = selection_headline({"xvnli": {"": 3}})
    assert "xvnli: no checkpoint selected in 3 of 3 run(s)" in none and SELECTION_NOTE not in none
    mixed = selection_headline({"xvnli": {"val/snli_ve/en/acc": 2, "": 1}})
    assert "`val/snli_ve/en/acc` in 2 of 3 run(s)" in mixed and SELECTION_NOTE not in mixed
    german = selection_headline({"xvnli": {"val/xvnli/de/acc": 3}})
    assert SELECTION_NOTE not in german
    english = selection_headline({"xvnli": {"val/snli_ve/en/acc": 3}, "marvl": {"val/nlvr2/en/acc": 3}})
    assert english.endswith(f"Every target run: {SELECTION_NOTE}.")
