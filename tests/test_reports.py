"""Report arithmetic on fixed inputs and the report files (run and study)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lightning_modules import reports
from studies.table import find_overlaps, study_table, write_study_report

# Fixed scores: English 80, then 60 / 63 / 57 -> IGLUE mean 60, XTREME macro 65, gap 20.
SCORES = {"en": 80.0, "de": 60.0, "es": 63.0, "ru": 57.0}


def _rows(scores: dict[str, float], task: str = "demo_ve", metric: str = "acc", seed: int = 0, split: str = "test"):
    return [
        dict(phase="target", task=task, lang=lang, split=split, metric=metric, value=v, seed=seed)
        for lang, v in scores.items()
    ]


def _agg(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {
        (r["lang"], r["metric"]): r["value"] for r in reports.aggregate(rows) if r["lang"] in reports.AGGREGATE_LANGS
    }


def test_iglue_xtreme_and_gap() -> None:
    agg = _agg(_rows(SCORES))
    assert agg[("avg_xling", "acc")] == pytest.approx(60.0)  # IGLUE: English excluded
    assert agg[("avg_all", "acc")] == pytest.approx(65.0)  # XTREME: macro mean incl. English
    assert agg[("gap", "acc")] == pytest.approx(20.0)  # en - non-English mean


def test_aggregates_per_metric_seed_and_split() -> None:
    rows = _rows(SCORES, metric="ir_r1", task="demo_retrieval")
    rows += _rows({"en": 10.0, "de": 4.0, "es": 8.0}, metric="tr_r1", task="demo_retrieval")
    rows += _rows({"en": 1.0, "de": 3.0}, metric="ir_r1", task="demo_retrieval", seed=1)
    rows += _rows({"en": 90.0}, task="demo_retrieval", metric="ir_r1", split="val")  # English dev: no aggregates
    out = reports.aggregate(rows)
    by = {(r["metric"], r["seed"], r["split"], r["lang"]): r["value"] for r in out}
    assert by[("tr_r1", 0, "test", "avg_xling")] == pytest.approx(6.0)
    assert by[("tr_r1", 0, "test", "gap")] == pytest.approx(4.0)
    assert by[("ir_r1", 1, "test", "avg_all")] == pytest.approx(2.0)
    assert by[("ir_r1", 1, "test", "gap")] == pytest.approx(-2.0)
    assert not any(k[2] == "val" and k[3] in reports.AGGREGATE_LANGS for k in by)
    assert len(out) == len(rows) + 3 * 3


def test_aggregate_without_english_and_idempotent() -> None:
    agg = _agg(_rows({"id": 60.0, "sw": 50.0, "ta": 55.0}, task="marvl"))  # MaRVL has no English test set
    assert agg == {("avg_xling", "acc"): pytest.approx(55.0), ("avg_all", "acc"): pytest.approx(55.0)}
    once = reports.aggregate(_rows(SCORES))
    assert reports.aggregate(once) == once
    assert _agg(_rows({"en": 70.0})) == {}  # English only: nothing to aggregate


def test_aggregate_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="lang='de'"):
        reports.aggregate(_rows(SCORES) + _rows({"de": 1.0}))


def test_mean_std() -> None:
    mean, std = reports.mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 2**0.5)  # n - 1
    assert reports.mean_std([5.0]) == (5.0, None)


def _results() -> list[dict]:
    """Baseline 'none' and condition 'mm' on demo_ve (seeds 0, 1, 2); 'mm' has +2 on every non-English language."""
    out = []
    for seed, noise in zip((0, 1, 2), (0.0, 1.0, 2.0)):
        base = {lang: v + noise for lang, v in SCORES.items()}
        better = {lang: v + (0 if lang == "en" else 2.0) for lang, v in base.items()}
        out.append({"condition": "none", "target": "demo_ve", "seed": seed, "rows": _rows(base, seed=seed)})
        out.append({"condition": "mm", "target": "demo_ve", "seed": seed, "rows": _rows(better, seed=seed)})
    return out


def test_study_table_means_stds_deltas() -> None:
    table = study_table(_results(), baseline="none", overlaps={"mm": ["demo_ve"]})
    cell = {(r["condition"], r["lang"]): r for r in table}
    assert cell[("none", "avg_xling")]["mean"] == pytest.approx(61.0)
    assert cell[("none", "avg_xling")]["std"] == pytest.approx(1.0)
    assert cell[("none", "avg_xling")]["n"] == 3 and cell[("none", "avg_xling")]["seeds"] == [0, 1, 2]
    assert cell[("none", "avg_xling")]["delta"] == 0
    assert cell[("mm", "avg_xling")]["delta"] == pytest.approx(2.0)
    assert cell[("mm", "en")]["delta"] == pytest.approx(0.0)
    assert cell[("mm", "gap")]["delta"] == pytest.approx(-2.0)  # the gap closes by 2
    assert cell[("mm", "avg_all")]["delta"] == pytest.approx(1.5)
    assert cell[("mm", "de")]["overlap"] and not cell[("none", "de")]["overlap"]
    assert all(r["primary"] for r in table)
    assert [r["lang"] for r in table if r["condition"] == "none"] == [*SCORES, *reports.AGGREGATE_LANGS]
    assert table[0]["condition"] == "none"  # baseline first


def test_study_table_without_baseline_has_no_delta() -> None:
    results = [r for r in _results() if r["condition"] == "mm"]
    assert all(r["delta"] is None for r in study_table(results, baseline="none"))


def test_find_overlaps() -> None:
    conditions = {
        "none": [],
        "snli_ve": ["snli_ve"],
        "mnli": ["mnli"],
        "squad": ["squad_v2"],
        "vqa": ["vqav2"],
        "mix": ["vqav2", "gqa"],
        "same": ["demo_ve"],
    }
    targets = {
        "xvnli": ["xvnli", "snli_ve"],
        "xnli": ["xnli", "mnli"],
        "xquad": ["xquad", "squad_v1"],
        "xgqa": ["xgqa", "gqa"],
        "demo_ve": ["demo_ve"],
    }
    assert find_overlaps(conditions, targets) == {
        "snli_ve": ["xvnli"],
        "mnli": ["xnli"],
        "squad": ["xquad"],
        "mix": ["xgqa"],
        "same": ["demo_ve"],
    }


def test_check_selection() -> None:
    reports.check_selection("val/xvnli/en/acc")
    reports.check_selection("val/loss")
    with pytest.raises(ValueError, match="English dev data only"):
        reports.check_selection("val/xvnli/ar/acc")


class FakeWandbLogger:
    """Records the WandbLogger calls the report makes."""

    def __init__(self) -> None:
        self.tables: dict[str, tuple[list, list]] = {}
        self.images: dict[str, list] = {}
        self.metrics: dict[str, float] = {}

    def log_table(self, key: str, columns: list, data: list) -> None:
        self.tables[key] = (columns, data)

    def log_image(self, key: str, images: list) -> None:
        self.images[key] = images

    def log_metrics(self, metrics: dict) -> None:
        self.metrics.update(metrics)


def test_write_run_report(tmp_path: Path) -> None:
    rows = _rows(SCORES) + _rows({"en": 81.0}, split="val")
    rows += _rows({"en": 40.0, "de": 30.0}, task="demo_retrieval", metric="ir_r1")
    rows += _rows({"en": 42.0, "de": 28.0}, task="demo_retrieval", metric="tr_r1")
    logger = FakeWandbLogger()
    paths = reports.write_run_report(tmp_path / "run", rows, selection="val/demo_ve/en/acc", wandb_logger=logger)
    assert set(paths) == {"json", "csv", "md", "png:demo_ve", "png:demo_retrieval"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())

    data = json.loads(paths["json"].read_text())
    assert data["selection"] == {"monitor": "val/demo_ve/en/acc", "data": "not recorded"} and data["protocol"] is None
    gap = [r for r in data["rows"] if r["lang"] == "gap" and r["task"] == "demo_ve"]
    assert gap == [dict(phase="target", task="demo_ve", lang="gap", split="test", metric="acc", value=20.0, seed=0)]
    with paths["csv"].open() as f:
        assert len(list(csv.DictReader(f))) == len(data["rows"])
    md = paths["md"].read_text()
    assert "`val/demo_ve/en/acc`" in md and "was not recorded" in md and "English dev data only" not in md
    assert "| lang | ir_r1 | tr_r1 |" in md and "| avg_xling | 60.00 |" in md
    lines = md.splitlines()
    table = lines[lines.index("| lang | acc |") :]
    assert [ln.split(" | ")[0][2:] for ln in table[2:9]] == ["en", "de", "es", "ru", "avg_xling", "avg_all", "gap"]

    assert logger.tables["results/rows"][0] == list(reports.ROW_FIELDS)
    assert len(logger.tables["results/rows"][1]) == len(data["rows"])
    assert logger.tables["results/demo_retrieval"][0] == ["lang", "ir_r1", "tr_r1"]
    assert logger.metrics["test/demo_ve/avg_xling/acc"] == pytest.approx(60.0)
    assert set(logger.images) == {"results/demo_ve_chart", "results/demo_retrieval_chart"}


def test_write_run_report_refuses_non_english_selection(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val/demo_ve/en/acc"):
        reports.write_run_report(tmp_path, _rows(SCORES), selection="val/demo_ve/de/acc")


def test_write_study_report(tmp_path: Path) -> None:
    results = _results() + [
        {
            "condition": c,
            "target": "demo_retrieval",
            "seed": 0,
            "rows": _rows({"en": 50.0, "de": 40.0 + d}, task="demo_retrieval", metric="mean_r1")
            + _rows({"en": 30.0, "de": 20.0}, task="demo_retrieval", metric="ir_r1"),
        }
        for c, d in (("none", 0.0), ("mm", -1.0))
    ]
    table = study_table(results, baseline="none", overlaps={"mm": ["demo_ve"]})
    paths = write_study_report(tmp_path, table, name="t", meta={"missing": ["x/seed0/demo_ve"]})
    assert {p.name for p in paths.values()} == {"study.json", "study.csv", "study.md", "study_heatmap.png"}
    data = json.loads(paths["json"].read_text())
    assert data["name"] == "t" and data["missing"] == ["x/seed0/demo_ve"] and len(data["rows"]) == len(table)
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table) and rows[0]["seeds"] == "0;1;2"
    md = paths["md"].read_text()
    assert "| mm† | 3 |" in md and "61.00 ± 1.00" in md and "63.00 ± 1.00 (+2.00)" in md
    assert "| mm | +2.00† | -1.00 | +0.50 |" in md  # summary: Δ avg_xling per target and its mean
    assert "demo_retrieval — ir_r1 (secondary)" in md and "x/seed0/demo_ve" in md
    assert paths["png"].stat().st_size > 0


def test_study_report_empty(tmp_path: Path) -> None:
    paths = write_study_report(tmp_path, [], name="empty")
    assert json.loads(paths["json"].read_text())["rows"] == [] and paths["png"].is_file()
