"""Text converters on small files written in each dataset's documented format (tests/fixtures/text), plus the
generic JSONL / Hugging Face converters."""

from __future__ import annotations

import json
import sys
import tarfile
import types
from pathlib import Path

import pytest
from PIL import Image

from shards.converters import CONVERTERS
from shards.converters.text_tagging import PANX_TAGS, UPOS
from shards.inspect import iter_json

TEXT = Path(__file__).parent / "fixtures" / "text"


def build(name: str, out: Path, **options) -> dict:
    return CONVERTERS[name](out=out, progress=False, **options)


def sample_json(out: Path) -> dict[str, dict]:
    return {key: sample for shard in out.glob("*.tar") for key, sample in iter_json(shard)}


# (converter, --src below tests/fixtures/text, expected counts, {key: {field: value}})
CASES = [
    (
        "mnli",
        "mnli",
        {"dev_matched": {"en": 3}, "train": {"en": 2}},
        {
            "dev_matched-en-5002c": {"label": 2, "text_pair": "The library lends nothing but books."},
            "train-en-6001n": {"label": 1, "id": "6001n"},
        },
    ),
    (
        "xnli",
        "xnli",
        {"dev": {"en": 1}, "test": {"en": 1, "de": 2, "ar": 1}},
        {"test-de-2": {"label": 0, "text": "Sie sagte: Ich komme morgen wieder.", "lang": "de"}},
    ),
    (
        "anli",
        "anli",
        {"dev": {"en": 3}},
        {"dev-en-0a7a5e26-7c0b-4b0b-8e1a-1f1f0e1e0a02": {"label": 2, "text_pair": "Mara is Canadian."}},
    ),
    (
        "qqp",
        "qqp",
        {"dev": {"en": 2}, "test": {"en": 1}},
        {
            "dev-en-9002": {"label": 1, "text": "How do I learn to play the cello?"},
            "test-en-0": {"label": -1},
        },
    ),
    ("sst2", "sst2", {"dev": {"en": 2}, "test": {"en": 1}}, {"dev-en-1": {"label": 0, "text_pair": None, "id": 1}}),
    (
        "pawsx",
        "pawsx",
        {"test": {"de": 2}, "dev": {"en": 1}},
        {"test-de-1": {"label": 1, "text_pair": "1985 spielte die Band in Bremen."}},
    ),
    (
        "squad_v1",
        "squad",
        {"train": {"en": 2}},
        {"train-en-p0000000000000000000001": {"answers": {"text": ["Norway"], "answer_start": [94]}}},
    ),
    (
        "squad_v2",
        "squad",
        {"dev": {"en": 2}},
        {"dev-en-p0000000000000000000004": {"answers": {"text": [], "answer_start": []}}},
    ),
    (
        "xquad",
        "xquad",
        {"test": {"de": 1, "en": 1}},
        {"test-de-p0000000000000000000005": {"answers": {"text": ["1871"], "answer_start": [42]}}},
    ),
    ("mlqa", "mlqa", {"test": {"de": 1}}, {"test-de-a1b2c3": {"text": "Wer baute den Leuchtturm?"}}),
    (
        "tydiqa",
        "tydiqa",
        {"dev": {"fi": 1, "id": 1}},
        {"dev-id-indonesian--1000000000000000002-1": {"context": "Mercusuar Lindholm berwarna merah."}},
    ),
    (
        "hellaswag",
        "hellaswag",
        {"test": {"en": 1}, "dev": {"en": 2}},
        {"dev-en-24": {"label": 3, "text": "A woman kneels beside a muddy bicycle. she"}, "test-en-14": {"label": -1}},
    ),
    (
        "cosmosqa",
        "cosmosqa",
        {"test": {"en": 1}, "train": {"en": 2}},
        {
            "test-en-t1": {
                "label": -1,
                "choices": ["It rained.", "It was sunny.", "They were bored.", "None of the above choices ."],
            }
        },
    ),
    (
        "commonsenseqa",
        "commonsenseqa",
        {"dev": {"en": 2}, "test": {"en": 1}},
        {
            "dev-en-c0000000000000000000000000000001": {
                "label": 2,
                "choices": ["kitchen", "garden shed", "hallway", "attic", "rooftop"],
            }
        },
    ),
    (
        "udpos",
        "udpos",
        {"test": {"de": 1, "en": 2}},
        {
            "test-en-en_ewt_project-blog-0001-0002": {
                "tokens": ["I", "do", "n't", "know", "."],  # the "don't" range line and the 4.1 empty node left out
                "tags": [UPOS.index(t) for t in ("PRON", "AUX", "PART", "VERB", "PUNCT")],
            }
        },
    ),
    (
        "panx",
        "panx",
        {"dev": {"en": 1}, "test": {"de": 2}},
        {"test-de-0": {"tokens": ["Clara", "Holm", "wohnte", "in", "Bremen"], "tags": [1, 2, 0, 0, 5]}},
    ),
    ("ccg", "ccg", {"dev": {"en": 2}}, {"dev-en-1": {"tokens": ["It", "snows", "."]}}),
    (
        "bucc",
        "bucc",
        {"dev": {"de": 5}},
        {
            "dev-de-de-000001": {"side": "src", "gold": "en-000002", "text": "Die Katze schläft."},
            "dev-de-en-000002": {"side": "tgt", "gold": "de-000001"},
            "dev-de-de-000003": {"gold": None},
        },
    ),
    (
        "tatoeba",
        "tatoeba",
        {"test": {"de": 3, "zh": 2}},
        {"test-zh-1": {"text": "再见。", "text_pair": "Goodbye.", "id": 1}},
    ),
]


@pytest.mark.parametrize(("name", "src", "counts", "checks"), CASES, ids=[c[0] for c in CASES])
def test_text_converter(tmp_path: Path, name: str, src: str, counts: dict, checks: dict) -> None:
    manifest = build(name, tmp_path / "out", src=TEXT / src)
    assert manifest["counts"] == counts
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"]) and manifest["sources"]
    got = sample_json(tmp_path / "out")
    for key, fields in checks.items():
        assert {f: got[key][f] for f in fields} == fields, key
        assert got[key]["task"] == name


def test_unlabelled_nli_items_are_skipped_with_the_reason(tmp_path: Path) -> None:
    manifest = build("mnli", tmp_path / "out", src=TEXT / "mnli" / "multinli_1.0_dev_matched.jsonl")
    assert manifest["skipped"] == [{"key": "dev_matched-en-5003e", "reason": "no gold label ('-')"}]
    assert manifest["tasks"]["mnli"]["label_map"] == {"entailment": 0, "neutral": 1, "contradiction": 2}


def test_tag_vocabularies_go_to_the_manifest(tmp_path: Path) -> None:
    assert build("panx", tmp_path / "a", src=TEXT / "panx")["tasks"]["panx"]["label_names"] == list(PANX_TAGS)
    assert build("udpos", tmp_path / "b", src=TEXT / "udpos")["tasks"]["udpos"]["label_names"] == list(UPOS)
    ccg = build("ccg", tmp_path / "c", src=TEXT / "ccg")["tasks"]["ccg"]["label_names"]
    assert ccg == sorted(set("N/N N (S[dcl]\\NP)/(S[b]\\NP) S[b]\\NP . NP S[dcl]\\NP".split()))


def test_bad_rows_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "dev.tsv"
    bad.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tq1\tq2\t1\n4\t5\tq1 only\t0\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:3: 4 columns, expected 6"):
        build("qqp", tmp_path / "out", src=bad)
    bad.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tq1\tq2\tyes\n")
    with pytest.raises(ValueError, match=r"dev\.tsv:2: unknown label 'yes'"):
        build("qqp", tmp_path / "out", src=bad)
    bad.write_text("id\tquestion1\tquestion2\n1\tq1\tq2\n")  # a label column may only be absent in test files
    with pytest.raises(ValueError, match=r"dev\.tsv:2: missing field 'is_duplicate'"):
        build("qqp", tmp_path / "out", src=bad)


def test_generic_jsonl_maps_fields_labels_and_images(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "img" / "p1.jpg")
    rows = [
        {"uid": "a", "hyp": "Ein Hund.", "gold": "Entailment", "pic": "p1", "language": "de"},
        {"uid": "b", "hyp": "Eine Katze.", "gold": "-", "pic": "p1", "language": "de"},
    ]
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fields = {"task": "xvnli", "id": "uid", "text": "hyp", "label": "gold", "lang": "language", "image": "{pic}.jpg"}
    manifest = build("jsonl", tmp_path / "out", src=src, images=tmp_path / "img", split="test", fields=fields)
    assert manifest["counts"] == {"test": {"de": 2}}
    got = sample_json(tmp_path / "out")
    assert got["test-de-a"] == {
        "task": "xvnli",
        "lang": "de",
        "id": "a",
        "text": "Ein Hund.",
        "text_pair": None,
        "label": 0,
    }
    assert got["test-de-b"]["label"] == -1


def test_generic_jsonl_errors_name_the_missing_option_and_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "mine.jsonl"
    src.write_text('{"id": 1, "t": "x"}\n{"id": 1, "t": "y"}\n')
    with pytest.raises(ValueError, match="--field task="):
        build("jsonl", tmp_path / "out", src=src)
    with pytest.raises(ValueError, match="--field label=<source field> is required"):
        build("jsonl", tmp_path / "out", src=src, fields={"task": "sst2", "text": "t"})
    with pytest.raises(ValueError, match="Duplicate sample key"):
        build("jsonl", tmp_path / "out", src=src, fields={"task": "mlm", "text": "t", "id": "id"})


def test_hf_disk_without_datasets_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the optional extra were not installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[hf\]'"):
        build("hf_disk", tmp_path / "out", src=tmp_path, fields={"task": "mlm", "text": "text"})


def test_hf_disk_reads_a_saved_dataset_dict(tmp_path: Path) -> None:
    import datasets

    data = {"sentence": ["good", "bad"], "label": [1, 0], "idx": [0, 1]}
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict(data)}).save_to_disk(str(tmp_path / "hf"))
    fields = {"task": "sst2", "text": "sentence", "label": "label", "id": "idx"}
    manifest = build("hf_disk", tmp_path / "out", src=tmp_path / "hf", fields=fields)
    assert manifest["counts"] == {"dev": {"en": 2}}
    assert sample_json(tmp_path / "out")["dev-en-0"]["label"] == 1


def test_hf_disk_maps_splits_and_decoded_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for ``datasets`` (an optional extra): what ``load_from_disk`` returns is a dict of row lists."""

    class DatasetDict(dict):
        pass

    rows = [{"hyp": "A red square.", "gold": 2, "pair": "p1", "img": Image.new("RGB", (6, 5), (200, 0, 0))}]
    fake = types.SimpleNamespace(DatasetDict=DatasetDict, load_from_disk=lambda path: DatasetDict(validation=rows))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    fields = {"task": "snli_ve", "text": "hyp", "label": "gold", "id": "pair", "image": "img"}
    manifest = build("hf_disk", tmp_path / "out", src=tmp_path, fields=fields)
    assert manifest["counts"] == {"dev": {"en": 1}}
    assert sample_json(tmp_path / "out")["dev-en-p1"]["label"] == 2
    with tarfile.open(next((tmp_path / "out").glob("*.tar"))) as tar:
        assert sorted(tar.getnames()) == ["dev-en-p1.jpg", "dev-en-p1.json"]


@pytest.mark.parametrize(
    ("name", "file", "text"),
    [
        ("qqp", "dev.tsv", b"id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\tq1\tq\xe92\t1\n"),
        ("udpos", "en_x-ud-test.conllu", b"# sent_id = s1\n1\tCaf\xe9\tcafe\tNOUN\tNN\t_\t0\troot\t_\t_\n"),
        ("tatoeba", "tatoeba.deu-eng.deu", b"Hallo.\nStra\xdfe.\n"),
    ],
)
def test_invalid_utf8_names_the_file_and_line(tmp_path: Path, name: str, file: str, text: bytes) -> None:
    (tmp_path / file).write_bytes(text)
    with pytest.raises(ValueError, match=rf"{file}:2: invalid UTF-8 .*re-save the file as UTF-8"):
        build(name, tmp_path / "out", src=tmp_path / file)


def test_tydiqa_reads_xtreme_layout_once(tmp_path: Path) -> None:
    """XTREME's download_data.sh leaves the release's train file beside its own per-language split of it
    (``tydiqa-goldp-v1.1-train/``) and renames the dev files ``tydiqa.goldp.<lang>.dev.json``: each question is
    read once, its language from the file name."""
    answers = [{"answer_start": 18, "text": "red"}]

    def squad(*ids: str) -> str:
        qas = [{"id": i, "question": "What colour is it?", "answers": answers} for i in ids]
        paragraphs = [{"context": "The lighthouse is red.", "qas": [qa]} for qa in qas]
        return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})

    train, dev = tmp_path / "tydiqa" / "tydiqa-goldp-v1.1-train", tmp_path / "tydiqa" / "tydiqa-goldp-v1.1-dev"
    train.mkdir(parents=True)
    dev.mkdir()
    (train / "tydiqa-goldp-v1.1-train.json").write_text(squad("english-11-0", "english-12-0", "finnish-13-0"))
    (train / "tydiqa.en.train.json").write_text(squad("11-0", "12-0"))  # older XTREME names
    (train / "tydiqa.goldp.fi.train.json").write_text(squad("13-0"))  # current XTREME names
    (dev / "tydiqa.goldp.en.dev.json").write_text(squad("english-21-0"))
    manifest = build("tydiqa", tmp_path / "out", src=tmp_path / "tydiqa")
    assert manifest["counts"] == {"train": {"en": 2, "fi": 1}, "dev": {"en": 1}}
    ignored = {Path(i["path"]).name: i["reason"] for i in manifest["ignored"]}
    assert set(ignored) == {"tydiqa.en.train.json", "tydiqa.goldp.fi.train.json"}
    assert "tydiqa-goldp-v1.1-train.json" in ignored["tydiqa.en.train.json"]
