"""The analysis's statistics against hand computations, the language tables, and the analysis on fake runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from studies import languages, measures


def test_spearman_with_ties_by_hand() -> None:
    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; deviations from 2.5: [-1.5, 0, 0, 1.5], [-1.5, .5, -.5, 1.5]
    # sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5 -> rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert measures.average_ranks([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert measures.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert measures.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert math.isnan(measures.spearman([1, 1, 1], [1, 2, 3]))  # a constant side: undefined, not 0


def test_kendall_tau_b_by_hand() -> None:
    # 6 pairs: 5 concordant, 1 discordant -> 4 / 6
    assert measures.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # x = [1,2,2,3], y = [1,2,3,3]: C = 4, D = 0, one pair tied in x only, one tied in y only:
    # tau_b = 4 / sqrt((6 - 1) (6 - 1)) = 0.8
    assert measures.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert measures.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_linear_cka_on_known_matrices() -> None:
    x = np.array([[1.0], [-1.0], [0.0]])
    y = np.array([[1.0], [0.0], [-1.0]])
    # centred already: Y^T X = 1, X^T X = 2, Y^T Y = 2 -> 1 / (2 * 2)
    assert measures.linear_cka(x, y) == pytest.approx(0.25)
    assert measures.linear_cka(np.array([[1.0], [-1.0], [0], [0]]), np.array([[0.0], [0], [1], [-1]])) == 0.0
    rng = np.random.default_rng(0)
    a = rng.normal(size=(13, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert measures.linear_cka(a, 3.0 * a @ q + 2.0) == pytest.approx(1.0)  # rotation, scale, shift: invariant
    assert 0.0 <= measures.linear_cka(a, rng.normal(size=(13, 7))) < 1.0


def test_logme_evidence_by_hand() -> None:
    # F = [[1], [1]], y = [1, -1], alpha = beta = 1: y ~ N(0, I + F F^T) = N(0, [[2, 1], [1, 2]]), det 3,
    # y^T C^-1 y = (2 + 2 + 2) / 3 = 2 -> log p = -log(2 pi) - log(3) / 2 - 1
    f, y = np.array([[1.0], [1.0]]), np.array([1.0, -1.0])
    assert measures.evidence(f, y, 1.0, 1.0) == pytest.approx(-math.log(2 * math.pi) - math.log(3) / 2 - 1)


def _gaussian_log_density(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    cov = np.eye(len(y)) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return float(-len(y) / 2 * math.log(2 * math.pi) - logdet / 2 - y @ np.linalg.solve(cov, y) / 2)


def test_logme_fixed_point_maximises_the_evidence() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(17, 3))
    y = f @ np.array([1.0, -0.5, 0.2]) + 0.3 * rng.normal(size=17)
    alpha, beta = measures.maximise_evidence(f, y)
    best = measures.evidence(f, y, alpha, beta)
    assert best == pytest.approx(_gaussian_log_density(f, y, alpha, beta))  # eq. 2 is the marginal likelihood
    for da in (0.5, 0.9, 1.1, 2.0):  # no nearby (alpha, beta) does better
        for db in (0.5, 0.9, 1.1, 2.0):
            assert _gaussian_log_density(f, y, alpha * da, beta * db) <= best + 1e-9


def test_logme_prefers_features_that_separate_the_classes() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1, 2], 10)
    good = np.eye(3)[labels] * 3 + 0.1 * rng.normal(size=(30, 3))
    bad = rng.normal(size=(30, 3))
    assert measures.logme(good, labels) > measures.logme(bad, labels)


def test_retrieval_accuracy_and_bootstrap_interval() -> None:
    q = np.eye(4)
    assert measures.retrieval_accuracy(q, q) == 1.0
    assert measures.retrieval_accuracy(q, q[[1, 0, 2, 3]]) == 0.5
    x = [1, 2, 3, 4, 5, 6]
    low, high = measures.bootstrap_interval(measures.spearman, x, x, resamples=200)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_language_table_covers_the_shipped_studies() -> None:
    iglue = [
        "ar",
        "bg",
        "bn",
        "da",
        "de",
        "el",
        "es",
        "et",
        "fr",
        "id",
        "ja",
        "ko",
        "pt",
        "ru",
        "sw",
        "ta",
        "tr",
        "vi",
        "zh",
    ]
    for lang in [*iglue, "en"]:
        info = languages.language(lang)
        assert info["script"] in ("Latin", "non-Latin"), lang
        for kind in languages.DISTANCES:
            assert info[kind] is None or 0.0 <= info[kind] <= 1.0, (lang, kind)
    assert languages.language("en")["syntactic"] == 0.0
    assert languages.language("de")["genetic"] < languages.language("zh")["genetic"]
    assert languages.language("xx")["script"] == "unknown"


def test_pretraining_table_says_unknown_rather_than_inventing() -> None:
    for row in languages.pretraining_rows():
        assert row["value"] == "unknown" or (float(row["value"]) >= 0 and row["source"]), row
    assert languages.pretraining("nobody/no-such-model", "de") == {"value": "unknown", "unit": "", "source": ""}
    assert languages.pretraining_value("xlm-roberta-large", "en") == 300.8  # CC-100, Conneau et al. 2020 Table 6
    assert languages.pretraining_value("xlm-roberta-base", "sw") == 1.6
    assert languages.pretraining("xlm-roberta-large", "wo")["value"] == "unknown"  # not a CC-100 language


# -- end to end on the demo world: real train.py runs, intermediate checkpoints deleted by retention ----------

TINY = [
    "--trainer.max_steps=2",
    "--data.steps_per_epoch=2",
    "--data.batch_size=8",
    "--data.num_workers=0",
    "--trainer.limit_val_batches=1",
    "--trainer.log_every_n_steps=1",
]


@pytest.fixture()
def analysed_study(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import yaml

    import study as study_mod

    repo = Path(__file__).resolve().parents[1]
    demo = repo / "configs" / "demo"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo").symlink_to(demo_dir)
    spec = {
        "name": "demo-analysis",
        "out": "runs/studies/demo-analysis",
        "seeds": [0],
        "baseline": "none",
        "base": [str(repo / "configs/base.yaml"), str(demo / "base.yaml")],
        "overrides": TINY,
        "start": {"configs": [str(demo / "pretrain.yaml")]},
        "conditions": {"none": {}, "nli": {"configs": [str(demo / "intermediate_nli.yaml")], "tasks": ["demo_nli"]}},
        "targets": {"demo_ve": {"configs": [str(demo / "target_ve.yaml")], "train_tasks": ["demo_ve"]}},
        "retention": {"keep": "best", "keep_intermediate": "none"},
        "analysis": {"enabled": True, "probe": "data/demo/demo_retrieval", "probe_items": 24, "logme_items": 32},
    }
    path = tmp_path / "demo-analysis.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(study_mod.TRAIN_CMD_ENV, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return path


@pytest.mark.slow
def test_analysis_of_a_demo_study_after_retention(analysed_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import study as study_mod

    out = analysed_study.parent / "runs" / "studies" / "demo-analysis"
    assert study_mod.main(["--config", str(analysed_study), "--rank-conditions", "--heartbeat", "600"]) == 0
    ranked = capsys.readouterr().out
    assert "demo_ve: " in ranked.split("conditions ranked by LogME")[1] and not (out / "none").exists()
    assert study_mod.main(["--config", str(analysed_study), "--heartbeat", "600"]) == 0
    capsys.readouterr()
    for run in ("start/seed0", "nli/seed0/intermediate", "none/seed0/demo_ve", "nli/seed0/demo_ve"):
        diag = json.loads((out / run / "diagnostics.json").read_text())
        assert set(diag["alignment"]) == {"en", "de", "es", "ru"}, run
        assert len(diag["alignment"]["ru"]["cka"]) >= 2 and 0 <= diag["alignment"]["de"]["retrieval_en_to_l"] <= 1
    assert not list((out / "nli/seed0/intermediate/checkpoints").glob("*.ckpt"))  # retention deleted them
    assert json.loads((out / "start/seed0/diagnostics.json").read_text())["logme"]["demo_ve"]["classes"] == 3
    # analyze after the deletion: everything from the stored diagnostics and outcomes
    assert study_mod.main(["analyze", "--config", str(analysed_study)]) == 0
    md = (out / "analysis.md").read_text()
    assert "3 non-English languages (< 5): the values above are all there is; no correlation is reported." in md
    assert "| nli | " in md.split("## 2. Checkpoints")[1] and "No stored diagnostics" not in md
    data = json.loads((out / "analysis.json").read_text())
    assert {d["lang"] for d in data["languages"]["deltas"]} == {"en", "de", "es", "ru"}
    assert set(data["logme"]["scores"]["demo_ve"]) == {"none", "nli"}
    assert (out / "analysis_demo_ve.png").stat().st_size > 0
    assert "## Why it transfers" in (out / "study.md").read_text()


def test_language_correlations_need_five_languages() -> None:
    from studies import analysis

    langs = ["de", "es", "ru", "ja", "sw", "ta"]
    table = analysis.language_table(["en", *langs], "google/siglip-base-patch16-256-multilingual")
    order = sorted(langs, key=lambda lg: table[lg]["syntactic"])
    deltas = [
        {"target": "t", "condition": c, "lang": lg, "delta": -float(order.index(lg)) * k}
        for c, k in (("a", 1.0), ("b", 2.0))
        for lg in langs
    ]
    rows = analysis.language_correlations(deltas, table)
    syn = {r["condition"]: r for r in rows if r["predictor"] == "syntactic"}
    assert syn["a"]["rho"] == pytest.approx(-1.0) and syn["(pooled)"]["n"] == 12
    assert syn["(pooled)"]["rho"] < -0.9
    assert all(r["rho"] is None for r in rows if r["predictor"] == "pretraining")  # unknown: no figures, no rho
    few = analysis.language_correlations([d for d in deltas if d["lang"] in langs[:4]], table)
    assert all(r["rho"] is None and "no correlation" in r["why"] for r in few)
