"""The study report's significance, controls, budgets and power estimate, with a fake train command whose
per-item outcomes are known: a positive control that fixes errors, a negative control that changes nothing."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import study as study_mod

# Writes what a finished run leaves: finished.json, the resolved config, and for targets results.json and
# outcomes.jsonl. Items: 300 per language (en, de, es); the baseline gets item i right when hash(seed, i) is
# even; "pos" additionally gets 40 % of the others right; "neg" is the baseline with 5 items flipped each way.
FAKE_TRAIN = textwrap.dedent("""
    import argparse, json, random, sys
    from pathlib import Path

    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--trainer.default_root_dir", dest="run_dir", required=True)
    p.add_argument("--seed_everything", type=int, required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--trainer.max_steps", dest="steps", type=int, default=7)
    p.add_argument("--data.batch_size", dest="batch", type=int, default=2)
    p.add_argument("--model.init_from", dest="init_from")
    p.add_argument("--test_after_fit", default="false")
    args, _ = p.parse_known_args()
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "last.ckpt").write_text("x")
    config = {"trainer": {"max_steps": args.steps, "accelerator": "cpu", "devices": 1},
              "data": {"batch_size": args.batch}}
    (run / "config-fit-0.yaml").write_text(json.dumps(config))
    if args.test_after_fit == "true":
        condition, seed = run.parts[-3], args.seed_everything
        rows, lines = [], []
        for lang in ("en", "de", "es"):
            base = random.Random(f"{seed}/{lang}")
            correct = [int(base.random() < 0.5) for _ in range(300)]
            if condition == "pos":
                fix = random.Random(f"fix/{seed}/{lang}")
                correct = [c or int(fix.random() < 0.4) for c in correct]
            if condition == "neg":
                ones, zeros = [i for i, c in enumerate(correct) if c], [i for i, c in enumerate(correct) if not c]
                for i in ones[:5] + zeros[:5]:
                    correct[i] = 1 - correct[i]
            for i, c in enumerate(correct):
                lines.append({"task": "demo_ve", "lang": lang, "key": f"test-{lang}-{i}", "key_hash": i,
                              "correct": c, "total": 1, "seed": seed})
            lines.append({"task": "demo_ve", "lang": lang, "formulas": {"acc": ["ratio", "correct", "total"]}})
            rows.append(dict(phase="target", task="demo_ve", lang=lang, split="test", metric="acc",
                             value=100 * sum(correct) / 300, seed=seed))
        (run / "outcomes.jsonl").write_text("".join(json.dumps(x) + "\\n" for x in lines))
        sel = {"monitor": "val/demo_ve/en/acc", "data": "English dev only"}
        (run / "results.json").write_text(json.dumps({"selection": sel, "rows": rows}))
    (run / "finished.json").write_text(json.dumps({"phase": args.phase, "last_ckpt": str(run / "last.ckpt")}))
""")


@pytest.fixture()
def study_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    spec = {
        "name": "sig",
        "out": str(tmp_path / "out"),
        "base": [str(config)],
        "seeds": [0, 1],
        "baseline": "none",
        "significance": {"correction": "holm", "resamples": 500, "effects": [2.0]},
        "budget": {"intermediate_steps": 11, "batch_size": 3},
        "conditions": {
            "none": {},
            "pos": {"configs": [str(config)], "tasks": ["demo_ve"], "control": "positive"},
            "neg": {"configs": [str(config)], "tasks": ["demo_nlvr"], "control": "negative"},
        },
        "targets": {"demo_ve": {"configs": [str(config)]}},
    }
    path = tmp_path / "sig.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv(study_mod.TRAIN_CMD_ENV, f"{sys.executable} {fake}")
    return path


def test_controls_significance_budgets_and_power(study_yaml: Path, capsys: pytest.CaptureFixture) -> None:
    assert study_mod.main(["--config", str(study_yaml), "--only", "none"]) == 0
    capsys.readouterr()
    assert study_mod.main(["--config", str(study_yaml)]) == 0
    stdout = capsys.readouterr().out
    before_runs = stdout.split("[1/")[0]
    assert "power (from the baseline's finished runs)" in before_runs and "seed(s) per condition" in before_runs

    out = study_yaml.parent / "out"
    data = json.loads((out / "study.json").read_text())
    tests = {(t["condition"], t["lang"]): t for t in data["significance"]}
    assert set(tests) == {(c, a) for c in ("pos", "neg") for a in ("en", "avg_xling", "avg_all")}
    pos, neg = tests[("pos", "avg_xling")], tests[("neg", "avg_xling")]
    assert pos["low"] > 0 and pos["significant"] and pos["correction"] == "holm" and pos["n_seeds"] == 2
    assert neg["low"] <= 0 <= neg["high"] and not neg["significant"]
    assert pos["p_adj"] >= pos["p"] and pos["n_items"] == 600  # de + es
    # the bootstrap's delta is the table's delta (same items, same seeds)
    cell = next(r for r in data["rows"] if r["condition"] == "pos" and r["lang"] == "avg_xling")
    assert cell["delta"] == pytest.approx(pos["delta"]) and cell["ci_low"] == pos["low"]

    with (out / "study.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["condition"] == "neg" and r["lang"] == "en"]
    assert rows[0]["control"] == "negative" and rows[0]["correction"] == "holm" and rows[0]["p_adj"]

    md = (out / "study.md").read_text()
    grid, controls = md.split("## Controls")
    assert "Holm–Bonferroni" in grid and "pos (positive)" in controls and "neg (negative)" in controls
    assert "## Budgets" in controls and "| pos | 11 | 33 |" in controls and "| none | 0 | 0 |" in controls
    assert "## Seeds needed" in md


def test_bad_control_and_correction_are_refused(study_yaml: Path) -> None:
    spec = yaml.safe_load(study_yaml.read_text())
    spec["conditions"]["pos"]["control"] = "maybe"
    with pytest.raises(study_mod.StudyError, match="conditions.pos.control"):
        study_mod.parse_study(spec)
    spec["conditions"]["pos"]["control"] = "positive"
    spec["significance"]["correction"] = "bonferroni"
    with pytest.raises(study_mod.StudyError, match="significance.correction"):
        study_mod.parse_study(spec)
