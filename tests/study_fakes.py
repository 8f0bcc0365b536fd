"""A fake ``train.py`` and a demo-like study run by it, shared by the study-runner tests."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import study as study_mod

# A stand-in for train.py: writes what a finished run leaves behind. Scores are a known function of the run:
# 50 + language offset + seed + condition offset, so the study's means and deltas are exact.
FAKE_TRAIN = textwrap.dedent("""
    import argparse, json, os, sys, time
    from pathlib import Path

    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--trainer.default_root_dir", dest="run_dir", required=True)
    p.add_argument("--seed_everything", type=int, required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--model.init_from", dest="init_from")
    p.add_argument("--test_after_fit", default="false")
    p.add_argument("--ckpt_path")
    p.add_argument("--trainer.max_steps", dest="max_steps", type=int, default=0)
    p.add_argument("--model.init_scope", dest="init_scope")
    args, rest = p.parse_known_args()
    calls = Path(os.environ["FAKE_CALLS"])
    t_start = time.time()
    with calls.open("a") as f:
        f.write(args.run_dir + "\\n")
    run = Path(args.run_dir)
    (run / "pid").write_text(str(os.getpid()))
    if os.environ.get("FAKE_HANG") and args.run_dir.endswith(os.environ["FAKE_HANG"]):
        time.sleep(300)  # killed by the test
    if os.environ.get("FAKE_RENDEZVOUS") and run.name in os.environ["FAKE_RENDEZVOUS"].split(","):
        # local-gpus: each of these runs waits until all of them have started, so they must run at once
        marker = Path(os.environ["FAKE_CALLS"]).with_name("started-" + run.parent.name + "-" + run.name)
        marker.write_text("")
        names = os.environ["FAKE_RENDEZVOUS"].split(",")
        deadline = time.time() + 60
        while not all(marker.with_name("started-" + run.parent.name + "-" + n).exists() for n in names):
            if time.time() > deadline:
                sys.exit("rendezvous timed out: the runs did not run concurrently")
            time.sleep(0.05)
    time.sleep(args.max_steps * float(os.environ.get("FAKE_STEP_SECONDS", "0")))
    n_calls = len(calls.read_text().splitlines())
    print("fake training", args.run_dir)
    if os.environ.get("FAKE_DIVERGE") and args.run_dir.endswith(os.environ["FAKE_DIVERGE"]):
        info = {"step": 3, "task": "demo_ve", "lr": 1000.0, "loss": "nan", "message": "Training diverged at step 3"}
        (run / "diverged.json").write_text(json.dumps(info))  # as train.py's DivergenceGuard
        print("TrainingDiverged: Training diverged at step 3", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("FAKE_FAIL_AT") == str(n_calls):
        print("simulated crash", file=sys.stderr)
        sys.exit(3)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in ("best", "last"):
        (run / "checkpoints" / f"{name}.ckpt").write_text(args.run_dir)
    env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    timing = {"t_start": t_start, "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (run / "args.json").write_text(json.dumps({**vars(args), "rest": rest, "env": env, **timing, "t_end": time.time()}))
    if args.test_after_fit == "true" or args.command == "test":
        condition, task = run.parts[-3], run.parts[-1].split(".")[0]
        offset = {"none": 0.0, "nli": 1.0, "ve": 3.0}[condition] + args.seed_everything
        langs = {"en": 10.0, "de": 0.0, "es": 2.0, "ru": -2.0}
        split = "test"  # as train.py: the rows of a test are split "test", whatever data split was tested
        inline = [json.loads(c) for c in args.config if c.startswith("{")]
        if args.phase == "few_shot":  # one language per few-shot run; N shots add N points
            test_langs = inline[-1]["data"]["tasks"][0]["test_langs"]
            shots = int(inline[-1]["data"]["tasks"][0]["train_split"].split("_")[1])
            langs = {lang: d + shots for lang, d in langs.items() if lang in test_langs}
        elif args.phase == "translate_test":
            langs = {lang: d + 5 for lang, d in langs.items() if lang != "en"}
        rows = [dict(phase=args.phase, task=task, lang=lang, split=split, metric="acc", value=50 + d + offset,
                     seed=args.seed_everything) for lang, d in langs.items()]
        rows.append(dict(phase="target", task=task, lang="en", split="val", metric="acc", value=70.0,
                         seed=args.seed_everything))
        sel = {"monitor": f"val/{task}/en/acc", "data": "English dev only"}
        (run / "results.json").write_text(json.dumps({"selection": sel, "rows": rows}))
    last = str(run / "checkpoints/last.ckpt")  # as train.py: final_ckpt = last_ckpt = the last step's weights
    ckpts = {"best_ckpt": str(run / "checkpoints/best.ckpt"), "last_ckpt": last, "final_ckpt": last}
    (run / "finished.json").write_text(json.dumps({"phase": args.phase, **ckpts}))
""")


def make_fake_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A demo-like study (start phase, baseline + 2 conditions, 2 targets, 2 seeds) run by the fake trainer."""
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("base", "pretrain", "intermediate_nli", "intermediate_ve", "target_ve", "target_vqa"):
        (configs / f"{name}.yaml").write_text("{}\n")
    spec = {
        "name": "fake",
        "out": str(tmp_path / "out"),
        "base": [str(configs / "base.yaml")],
        "overrides": ["--trainer.max_steps=3"],
        "seeds": [0, 1],
        "start": {"configs": [str(configs / "pretrain.yaml")]},
        "conditions": {
            "none": {},
            "nli": {"configs": [str(configs / "intermediate_nli.yaml")], "tasks": ["demo_nli"]},
            "ve": {"configs": [str(configs / "intermediate_ve.yaml")], "tasks": ["demo_ve"]},
        },
        "targets": {
            "demo_ve": {"configs": [str(configs / "target_ve.yaml")]},
            "demo_vqa": {"configs": [str(configs / "target_vqa.yaml")], "overrides": ["--trainer.max_steps=4"]},
        },
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv(study_mod.TRAIN_CMD_ENV, f"{sys.executable} {fake}")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return path


def edit_study(cfg: Path, **changes) -> None:
    """Replace top-level keys of a study YAML."""
    spec = yaml.safe_load(cfg.read_text())
    spec.update(changes)
    cfg.write_text(yaml.safe_dump(spec, sort_keys=False))


FAKE_SLURM = {
    # sbatch: keep the submitted script, answer like SLURM with increasing job ids
    "sbatch": 'n=$(( $(ls "$FAKE_SLURM_DIR"/job-*.sh 2>/dev/null | wc -l) + 1 )); '
    'cp "$1" "$FAKE_SLURM_DIR/job-$n.sh"; echo "Submitted batch job $n"',
    "squeue": 'cat "$FAKE_SLURM_DIR/queue" 2>/dev/null; true',
    "sacct": "true",
    "srun": "true",
}


def install_fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``FAKE_SLURM``'s commands first on PATH; submitted scripts land in ``tmp_path/job-<n>.sh``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path))
