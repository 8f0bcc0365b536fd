"""The shipped studies run: ``python study.py --config configs/studies/<study>.yaml --rehearse`` runs the study file
itself at toy scale (configs/rehearsal.yaml), its data built with docs/real_data.md's commands from the IGLUE
release tree (``../shared/datasets/iglue-tree`` or ``MMSTILTS_IGLUE_ROOT``) and project-written stand-ins.

Each study is rehearsed once per test session (a module fixture); the tests read what it wrote, as a user would:
study.md / study.json with every (target, protocol) column, no run missing, and each run's lineage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import run_process_group, subprocess_env

from studies.plan import plan
from studies.rehearsal import iglue_root, load_scale, shrink
from studies.spec import StudyError, load_study

REPO = Path(__file__).resolve().parents[1]
DONE = "rehearsal: every target and protocol has numbers, no run missing"

try:
    iglue_root()
    NO_TREE = ""
except StudyError as err:
    NO_TREE = str(err)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(NO_TREE), reason=NO_TREE)]


def rehearse(name: str, workspace: Path) -> tuple[int, str, Path]:
    cmd = [
        sys.executable,
        "study.py",
        "--config",
        f"configs/studies/{name}.yaml",
        "--rehearse",
        "--workspace",
        str(workspace),
        "--jobs",
        "2",
        "--heartbeat",
        "600",
    ]
    proc = run_process_group(cmd, REPO, subprocess_env(), timeout=900, what=f"the rehearsal of {name}.yaml")
    return proc.returncode, proc.stdout + proc.stderr, workspace / name


@pytest.fixture(scope="module")
def iglue(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    return rehearse("iglue", tmp_path_factory.mktemp("rehearsal"))


def expected_columns(name: str) -> list[str]:
    """Every (target, protocol) column of the shipped study, at the rehearsal's few-shot subset."""
    study = shrink(load_study(REPO / "configs" / "studies" / f"{name}.yaml"), load_scale())
    columns = []
    for target, t in study.targets.items():
        columns.append(target)
        if t.translate_test:
            columns.append(f"{target} [translate-test]")
        if t.few_shot:
            columns += [f"{target} [{n}-shot]" for n in t.few_shot.shots]
    return columns


def test_iglue_rehearsal_reports_every_target_and_protocol(iglue: tuple[int, str, Path]) -> None:
    rc, out, ws = iglue
    assert rc == 0, out[-4000:]
    assert DONE in out
    data = json.loads((ws / "runs/studies/iglue/study.json").read_text())
    assert data["missing"] == []
    numbers = {r["target"] for r in data["rows"] if r["primary"] and r["mean"] is not None}
    columns = expected_columns("iglue")
    assert {"xvnli [translate-test]", "xvnli [1-shot]", "xgqa [1-shot]", "xflickrco_start"} <= set(columns)
    assert set(columns) <= numbers, set(columns) - numbers
    md = (ws / "runs/studies/iglue/study.md").read_text()
    assert "## Zero-shot, translate-test and few-shot side by side" in md
    side_by_side = md.split("## Zero-shot, translate-test and few-shot side by side")[1]
    assert all(f" {c} " in side_by_side for c in columns)


def test_iglue_rehearsal_every_phase_starts_from_its_parent(iglue: tuple[int, str, Path]) -> None:
    """Each evaluated run's protocol record: the weights it tested and every earlier phase, parent first, are
    the checkpoints its parents' finished.json hand on (intermediate/start: their final weights; target: best)."""
    rc, out, ws = iglue
    assert rc == 0, out[-4000:]
    study = shrink(load_study(REPO / "configs" / "studies" / "iglue.yaml"), load_scale())
    study.out = str(ws / "runs/studies/iglue")
    checked = 0
    for run in plan(study):
        if run.phase not in ("target", "translate_test", "few_shot"):
            continue
        record = json.loads((run.run_dir / "results.json").read_text())["protocol"]
        chain, parent = [], run.parent if run.phase != "translate_test" else run.parent.parent
        while parent is not None:
            info = json.loads((parent.run_dir / "finished.json").read_text())
            chain.append((parent.phase, info["best_ckpt" if parent.phase == "target" else "last_ckpt"]))
            parent = parent.parent
        got = [(e["phase"], e["path"]) for e in record.get("earlier_phases", [])]
        assert got == chain, (run.name, got, chain)
        if run.phase == "translate_test":  # it tests the target run's selected checkpoint, on translated text
            assert record["checkpoint"] == json.loads((run.parent.run_dir / "finished.json").read_text())["best_ckpt"]
            assert {e["split"] for e in record["tested_on"]} == {"translate_test"}
        checked += 1
    assert checked == 6 * 4 + 5 * 4 + 2 * 3  # targets, translate-test, few-shot runs of the rehearsal's grid


@pytest.fixture(scope="module")
def xtreme(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    return rehearse("xtreme", tmp_path_factory.mktemp("rehearsal"))


def test_xtreme_rehearsal_reports_every_target(xtreme: tuple[int, str, Path]) -> None:
    rc, out, ws = xtreme
    assert rc == 0, out[-4000:]
    assert DONE in out
    data = json.loads((ws / "runs/studies/xtreme/study.json").read_text())
    assert data["missing"] == [] and data["protocol_breaks"] == []
    numbers = {r["target"] for r in data["rows"] if r["primary"] and r["mean"] is not None}
    assert set(expected_columns("xtreme")) == set(load_study(REPO / "configs/studies/xtreme.yaml").targets)
    assert set(expected_columns("xtreme")) <= numbers, set(expected_columns("xtreme")) - numbers


def test_iglue_rehearsal_fills_every_analysis_section(iglue: tuple[int, str, Path]) -> None:
    """The analysis (studies/analysis.py) on IGLUE's layout: every language's distances and script, correlations
    for the targets with enough languages, the checkpoints' diagnostics (stored before retention deleted the
    intermediate checkpoints), LogME and its tau; the same in study.md."""
    rc, out, ws = iglue
    assert rc == 0, out[-4000:]
    data = json.loads((ws / "runs/studies/iglue/analysis.json").read_text())
    langs = set(data["languages"]["table"])
    assert {"ar", "bn", "sw", "ta", "ja", "zh", "ru", "id"} <= langs, langs
    table = data["languages"]["table"].values()
    assert all(info["syntactic"] is not None and info["script"] != "unknown" for info in table)
    correlated = {c["target"] for c in data["languages"]["correlations"] if c["n"] >= 5}
    assert correlated == {"xgqa", "marvl", "xflickrco", "wit", "xflickrco_start"}, correlated  # xvnli: 4 languages
    assert set(data["checkpoints"]["conditions"]) == set(
        shrink(load_study(REPO / "configs/studies/iglue.yaml"), load_scale()).conditions
    )
    probe = next(iter(data["checkpoints"]["conditions"].values()))["langs"]
    assert {"de", "ja", "zh"} <= set(probe)
    assert data["logme"]["scores"]["xvnli"] and data["logme"]["taus"]
    md = (ws / "runs/studies/iglue/study.md").read_text()
    for heading in ("## Why it transfers", "## 1. Languages", "## 2. Checkpoints", "## 3. Predicting the grid"):
        assert heading in md
    analysis_md = (ws / "runs/studies/iglue/analysis.md").read_text()
    assert "no correlation is reported" in analysis_md  # xvnli: 4 non-English languages
    assert list((ws / "runs/studies/iglue").glob("analysis_*.png"))
