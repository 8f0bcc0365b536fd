"""The text stand-ins of ``shards.standins.WRITERS`` (Phang et al.'s intermediate tasks, the XTREME targets): each
builds with its docs/real_data.md command, run as ``study.py --rehearse`` runs it (localised to ``tmp_path``), and
gives the splits and languages that configs/target and configs/intermediate read, in batches of the rehearsal's
size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contracts.catalogue import get_task
from shards.__main__ import main as shards_main
from shards.inspect import iter_json
from shards.manifest import load_manifest
from shards.standins import WRITERS
from studies.rehearsal import _arg, doc_commands

REPO = Path(__file__).resolve().parent.parent
TEXT_STANDINS = (
    "xnli",
    "anli",
    "qqp",
    "sst2",
    "pawsx",
    "squad_v1",
    "squad_v2",
    "xquad",
    "mlqa",
    "tydiqa",
    "hellaswag",
    "cosmosqa",
    "commonsenseqa",
    "udpos",
    "panx",
    "ccg",
    "bucc",
    "tatoeba",
)
SPAN_QA = ("squad_v1", "squad_v2", "xquad", "mlqa", "tydiqa")
MIN_TRAIN = 16  # configs/intermediate/all_text.yaml gives span QA and multiple choice batches of 16
MIN_EVAL = 4  # the rehearsal's batch size


def config_reads(dataset: str) -> dict[str, list[str] | None]:
    """``{split: languages}`` over every target and intermediate config that reads ``dataset`` (``None``: a test
    split, which reads every language the shards have)."""
    reads: dict[str, list[str] | None] = {}
    for path in sorted([*REPO.glob("configs/target/*.yaml"), *REPO.glob("configs/intermediate/*.yaml")]):
        for task in (yaml.safe_load(path.read_text()).get("data") or {}).get("tasks") or []:
            if task["name"] != dataset:
                continue
            for split, langs in (("train_split", "train_langs"), ("val_split", "val_langs")):
                if task.get(split):
                    reads[task[split]] = sorted({*(reads.get(task[split]) or []), *(task.get(langs) or ["en"])})
            if task.get("test_split"):
                reads[task["test_split"]] = None
    return reads


def build_standin(dataset: str, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the stand-in at the ``--src`` of the dataset's documented command and run that command in
    ``workspace``; returns the shard directory."""
    [args] = [c for c in doc_commands() if c[1] == dataset]
    monkeypatch.chdir(workspace)
    WRITERS[dataset](Path(_arg(args, "--src")), None)
    assert shards_main(args) == 0, args
    return workspace / _arg(args, "--out")


def samples(out: Path) -> list[dict]:
    """Every sample's JSON, with its key as ``__key__``."""
    return [{**sample, "__key__": key} for shard in sorted(out.glob("*.tar")) for key, sample in iter_json(shard)]


@pytest.mark.parametrize("dataset", TEXT_STANDINS)
def test_standin_builds_the_splits_and_languages_the_configs_read(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = load_manifest(build_standin(dataset, tmp_path, monkeypatch))["counts"]
    reads = config_reads(dataset)
    assert reads, f"no config in configs/target or configs/intermediate reads {dataset}"
    task = get_task(dataset)
    for split, langs in reads.items():
        assert split in counts, (dataset, split, counts)
        if langs is None:  # a test split: several of the target's languages, English first where it is tested
            langs = list(counts[split])
            assert set(langs) <= set(task.languages), (dataset, langs, task.languages)
            assert len(task.languages) == 1 or len(langs) >= 3, (dataset, langs)
            assert task.languages[0] != "en" or "en" in langs, (dataset, langs)
        least = MIN_TRAIN if split == "train" else MIN_EVAL
        for lang in langs:
            assert counts[split].get(lang, 0) >= least, (dataset, split, lang, counts[split])


@pytest.mark.parametrize("dataset", SPAN_QA)
def test_span_qa_standin_answers_are_at_their_offsets(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = samples(build_standin(dataset, tmp_path, monkeypatch))
    answered = 0
    for r in records:
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start : start + len(text)] == text, (r["id"], r["context"], text, start)
            answered += 1
    assert answered >= len(records) // 2, (answered, len(records))
    if dataset == "squad_v2":
        assert any(not r["answers"]["text"] for r in records), "no unanswerable question"


def test_bucc_standin_has_gold_pairs_in_every_language_and_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = samples(build_standin("bucc", tmp_path, monkeypatch))
    ids = {(r["lang"], r["id"]) for r in records}
    for split in ("dev", "test"):
        for lang in get_task("bucc").languages:
            side = [r for r in records if r["lang"] == lang and r["__key__"].startswith(f"{split}-")]
            sources = [r for r in side if r["side"] == "src" and r["gold"]]
            assert len(sources) >= MIN_EVAL, (split, lang, len(sources))
            assert all((lang, r["gold"]) in ids for r in sources), (split, lang)
            assert any(r["gold"] is None for r in side), (split, lang)  # comparable corpora: not every line pairs


def test_tatoeba_standin_lines_are_aligned_translations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = samples(build_standin("tatoeba", tmp_path, monkeypatch))
    assert {r["lang"] for r in records} == {"de", "es", "zh"}
    assert all(r["text"] and r["text_pair"] and r["text"] != r["text_pair"] for r in records)
