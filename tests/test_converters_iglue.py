"""IGLUE converters on project-written records in IGLUE's schemas (tests/fixtures/iglue, laid out as in
e-bug/iglue; written by tests/make_iglue_fixtures.py). The real release tree: tests/test_release_tree.py."""

from __future__ import annotations

import json
import re
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote

import make_iglue_fixtures  # tests/ is on sys.path (pytest rootdir-less test modules)
import pytest
from PIL import Image

from contracts.catalogue import NLI_LABELS
from shards.__main__ import main as shards_main
from shards.converters import CONVERTERS
from shards.converters.iglue import marvl_name, ve_name, ve_split, wit_name, xgqa_name
from shards.converters.vl_english import nlvr2_name

IGLUE = Path(__file__).parent / "fixtures" / "iglue"
VOCAB = IGLUE / "gqa" / "annotations" / "trainval_label2ans.json"


def build(name: str, out: Path, **options) -> dict:
    return CONVERTERS[name](out=out, progress=False, **options)


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {member: bytes} over every shard written to ``out``."""
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, name = member.name.split(".", 1)
                found.setdefault(key, {})[name] = tar.extractfile(member).read()
    return found


def jpegs(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 9), (180, 40, 40)).save(root / name)


def field_values(folder: Path, pattern: str, field: str) -> list:
    return [json.loads(line)[field] for path in folder.rglob(pattern) for line in path.read_text().splitlines()]


@pytest.fixture
def flickr(tmp_path: Path) -> Path:
    """Tiny images for every Flickr30k id the XVNLI fixtures name."""
    ids = field_values(IGLUE / "XVNLI", "*.jsonl", "Flikr30kID")
    jpegs(tmp_path / "flickr", [f"{i}.jpg" for i in set(ids)])
    return tmp_path / "flickr"


def test_xvnli_keeps_unlabelled_items_and_uses_the_hypothesis_only(tmp_path: Path, flickr: Path) -> None:
    manifest = build("xvnli", tmp_path / "out", src=IGLUE / "XVNLI", images=flickr)
    assert manifest["counts"] == {
        "test": {"ar": 20, "en": 21},
        "train_1": {"ar": 3, "en": 3},
        "translate_test": {"ar": 2},
        "translate_dev": {"ar": 2},  # en/dev-ar_gmt.jsonl: English dev machine-translated into Arabic
    }
    assert manifest["tasks"]["xvnli"] == {
        "label_names": list(NLI_LABELS),
        "label_map": {"entailment": 0, "neutral": 1, "contradiction": 2},
    }
    assert len(manifest["sources"]) == 6 and all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert manifest["ignored"] == []
    got = samples(tmp_path / "out")
    dash = json.loads(got["test-en-4100000043_jpg_1r2n"]["json"])  # the file's gold_label "-" line
    assert dash == {
        "task": "xvnli",
        "lang": "en",
        "id": "4100000043.jpg#1r2n",
        "text": "A choir is waiting for a friend.",
        "text_pair": None,
        "label": -1,
    }
    first_ar = json.loads(got["test-ar-4100000001_jpg_0r1c"]["json"])
    assert (first_ar["text"], first_ar["label"]) == ("الشخص نائم في السرير.", 2)
    assert set(got["test-ar-4100000001_jpg_0r1c"]) == {"json", "jpg"}
    gmt = json.loads(got["translate_dev-ar-4100000001_jpg_0r1e"]["json"])
    assert (gmt["lang"], gmt["text"]) == ("ar", "الشخص في الخارج.")


def test_xvnli_one_split_and_language(tmp_path: Path, flickr: Path) -> None:
    manifest = build("xvnli", tmp_path / "out", src=IGLUE / "XVNLI", images=flickr, split="test", lang="en")
    assert manifest["counts"] == {"test": {"en": 21}}


def test_missing_images_fail_with_a_count_or_are_skipped_and_recorded(tmp_path: Path, flickr: Path) -> None:
    (flickr / "4100000001.jpg").unlink()  # used by 3 pairs in each language
    src = IGLUE / "XVNLI" / "annotations" / "en" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match=r"3 image file\(s\) are missing"):
        build("xvnli", tmp_path / "out", src=src, images=flickr, lang="en")
    manifest = build("xvnli", tmp_path / "out", src=src, images=flickr, lang="en", allow_missing=True)
    assert manifest["counts"] == {"test": {"en": 18}}
    assert len(manifest["skipped"]) == 3 and "missing image" in manifest["skipped"][0]["reason"]


def test_malformed_records_name_the_file_and_line(tmp_path: Path, flickr: Path) -> None:
    lines = (IGLUE / "XVNLI" / "annotations" / "en" / "test.jsonl").read_text().splitlines()
    bad = tmp_path / "en" / "test.jsonl"
    bad.parent.mkdir()
    bad.write_text("\n".join([lines[0], lines[1][:-5], *lines[2:]]))
    with pytest.raises(ValueError, match=r"test\.jsonl:2: malformed JSON"):
        build("xvnli", tmp_path / "out", src=bad, images=flickr)
    bad.write_text("\n".join([lines[0], lines[1], lines[2].replace('"sentence2"', '"hypothesis"')]))
    with pytest.raises(ValueError, match=r"test\.jsonl:3: missing field 'sentence2'"):
        build("xvnli", tmp_path / "out", src=bad, images=flickr)


def test_xgqa_maps_english_answers_and_keeps_out_of_vocabulary_questions(tmp_path: Path) -> None:
    jpegs(tmp_path / "gqa", [f"{i}.jpg" for i in make_iglue_fixtures.GQA_IMAGES])
    fields = {"vocab": str(VOCAB)}
    manifest = build("xgqa", tmp_path / "out", src=IGLUE / "xGQA", images=tmp_path / "gqa", fields=fields)
    assert manifest["counts"] == {"train_1": {"de": 6}, "test": {"de": 3}}
    vocab = manifest["tasks"]["xgqa"]["label_names"]
    assert vocab == json.loads(VOCAB.read_text())
    assert manifest["tasks"]["xgqa"]["out_of_vocabulary"] == {"test": {"de": 1}}
    got = samples(tmp_path / "out")
    first = json.loads(got["test-de-700200"]["json"])
    assert first["text"] == "Ist der Himmel blau?"
    assert (first["answer"], first["labels"], first["scores"]) == ("yes", [vocab.index("yes")], [1.0])
    oov = json.loads(got["test-de-700202"]["json"])
    assert (oov["answer"], oov["labels"], oov["scores"]) == ("paper lantern", [], [])


def test_xgqa_few_shot_test_and_translated_files_get_their_own_splits(tmp_path: Path) -> None:
    """Zero-shot and few-shot test (and their machine-translated copies) build together from one folder."""
    src = tmp_path / "xGQA" / "annotations"
    one = (IGLUE / "xGQA/annotations/zero_shot/testdev_balanced_questions_de.json").read_text()
    for rel in (
        "zero_shot/testdev_balanced_questions_de.json",
        "few_shot/de/test.json",
        "../annotations_machine-translate/zero_shot/testdev_balanced_questions_de.json",
        "../annotations_machine-translate/few_shot/de/test.json",
    ):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(one)
    jpegs(tmp_path / "gqa", [f"{i}.jpg" for i in make_iglue_fixtures.GQA_IMAGES])
    fields = {"vocab": str(VOCAB)}
    manifest = build("xgqa", tmp_path / "out", src=tmp_path / "xGQA", images=tmp_path / "gqa", fields=fields)
    assert manifest["counts"] == {
        split: {"de": 3} for split in ("test", "fs_test", "translate_test", "translate_fs_test")
    }


def test_xgqa_without_a_vocabulary_says_how_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--field vocab="):
        build("xgqa", tmp_path / "out", src=IGLUE / "xGQA", images=tmp_path)


def test_marvl_reads_boolean_labels_and_concept_folders(tmp_path: Path) -> None:
    images = tmp_path / "marvl"
    for path in (IGLUE / "marvl").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            folder = "" if "/" in row["left_img"] else row["concept"] + "/"  # few-shot names carry the concept
            jpegs(images / row["language"] / "images", [folder + row["left_img"], folder + row["right_img"]])
    manifest = build("marvl", tmp_path / "out", src=IGLUE / "marvl", images=images)
    assert manifest["counts"] == {"train_1": {"id": 4}, "test": {"zh": 6}}
    assert manifest["tasks"]["marvl"]["label_map"] == {"false": 0, "true": 1}
    got = samples(tmp_path / "out")
    assert [json.loads(got[f"test-zh-zh-{i}"]["json"])["label"] for i in range(3)] == [0, 0, 1]
    assert json.loads(got["train_1-id-id-0"]["json"])["label"] == 1
    assert set(got["test-zh-zh-0"]) == {"json", "img0.jpg", "img1.jpg"}


def test_xflickrco_keeps_string_flickr_ids_and_int_coco_ids(tmp_path: Path) -> None:
    paths = field_values(IGLUE / "xFlickrCO", "*.jsonl", "img_path")
    jpegs(tmp_path / "flickr", [p for p in paths if not p.startswith("COCO_")])
    jpegs(tmp_path / "coco", [p for p in paths if p.startswith("COCO_")])
    fields = {"coco_images": str(tmp_path / "coco")}
    manifest = build("xflickrco", tmp_path / "out", src=IGLUE / "xFlickrCO", images=tmp_path / "flickr", fields=fields)
    assert manifest["counts"] == {"test": {"de": 5, "en": 6}}
    got = samples(tmp_path / "out")
    coco = json.loads(got["test-en-880001"]["json"])
    assert (coco["id"], coco["image_id"]) == (880001, "880001")
    assert coco["texts"] == ["A clock on a brick tower."]
    flickr_de = json.loads(got["test-de-4100000001"]["json"])
    assert (flickr_de["id"], flickr_de["texts"]) == ("4100000001", ["Ein Hund springt über einen Bach."])


def test_wit_finds_images_by_url_file_name_or_mapping(tmp_path: Path) -> None:
    src = IGLUE / "wit" / "annotations" / "test_ja.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    names = [unquote(Path(r["image_url"]).name) for r in rows]  # files are saved under decoded names
    # .svg/.tif originals are found as their rasterised .png/.jpg conversions
    jpegs(tmp_path / "wit", [n if n.lower().endswith((".jpg", ".jpeg")) else Path(n).stem + ".png" for n in names])
    manifest = build("wit", tmp_path / "out", src=src, images=tmp_path / "wit")
    assert manifest["counts"] == {"test": {"ja": 4}}
    first = json.loads(samples(tmp_path / "out")["test-ja-wit-test_10"]["json"])
    assert (first["id"], first["texts"], first["image_id"]) == ("wit-test_10", ["夜明けの港"], "wit-test_10")

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({r["wit_ix"]: f"by_ix/{r['image_idx']}.jpg" for r in rows}))
    jpegs(tmp_path / "wit", [f"by_ix/{r['image_idx']}.jpg" for r in rows])
    fields = {"image_map": str(mapping)}
    manifest = build("wit", tmp_path / "out2", src=src, images=tmp_path / "wit", fields=fields)
    assert manifest["counts"] == {"test": {"ja": 4}} and len(manifest["sources"]) == 2


def test_wit_identifies_images_by_wit_ix_and_reads_the_zipped_training_file(tmp_path: Path) -> None:
    """Regression: the release reuses ``image_idx`` for different images in one file; IGLUE (volta) identifies
    images by ``wit_ix``, so both stay in the retrieval gallery; one ``wit_ix`` with two captions is one image."""
    src = IGLUE / "wit" / "annotations"
    rows = [json.loads(line) for line in (src / "test_ja.jsonl").read_text().splitlines()]
    assert [r["image_idx"] for r in rows if r["wit_ix"] in ("wit-test_12", "wit-test_13")] == [8, 8]
    jpegs(tmp_path / "wit", ["Bridge_in_fog.jpg", "Lighthouse.jpg", "Harbour_at_dawn.jpg", "Mountain_Hut.JPG"])
    jpegs(tmp_path / "wit", ["Map_of_an_imaginary_county.png", "Old_survey,_1950.png"])
    manifest = build("wit", tmp_path / "out", src=src, images=tmp_path / "wit")
    assert manifest["counts"] == {"test": {"ja": 4}, "train": {"en": 2}}  # train_en.jsonl.zip shares image_idx 0
    got = {json.loads(s["json"])["id"]: json.loads(s["json"]) for s in samples(tmp_path / "out").values()}
    assert got["wit-test_11"]["texts"] == ["架空の郡の地図", "郡の位置"]
    assert [got[ix]["image_id"] for ix in ("wit-test_12", "wit-test_13")] == ["wit-test_12", "wit-test_13"]
    assert len({s["image_id"] for s in got.values()}) == 6
    assert [s["path"].endswith("train_en.jsonl.zip") for s in manifest["sources"]] == [False, True]


def test_the_cli_builds_xvnli(tmp_path: Path, flickr: Path) -> None:
    argv = ["build", "xvnli", "--src", str(IGLUE / "XVNLI"), "--images", str(flickr), "--out", str(tmp_path / "out")]
    argv += ["--split", "test", "--lang", "ar", "--workers", "2", "--max-per-shard", "8", "--max-side", "64"]
    assert shards_main(argv) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"test": {"ar": 20}}
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 4]


@pytest.mark.parametrize(
    ("parse", "path", "expected"),
    [
        (marvl_name, "zero_shot/annotations/marvl-ta.jsonl", ("test", "ta")),
        (marvl_name, "few_shot/annotations/marvl-tr_train10x2.jsonl", ("train_10x2", "tr")),
        (marvl_name, "zero_shot/annotations_machine-translate/marvl-sw_gmt.jsonl", ("translate_test", "sw")),
        (lambda p: wit_name(p, None), "annotations/val_en.jsonl", ("dev", "en")),
        (lambda p: wit_name(p, None), "annotations_machine-translate/test_ar_gmt.jsonl", ("translate_test", "ar")),
        (nlvr2_name, "annotations/dev-zh_gmt.jsonl", ("translate_dev", "zh")),
        (nlvr2_name, "data/test1.json", ("test1", "en")),
        (nlvr2_name, "annotations/test.jsonl", ("test1", "en")),
        (lambda p: ve_name(p, "en"), "XVNLI/annotations/en/dev-ar_gmt.jsonl", ("translate_dev", "ar")),
        (lambda p: ve_name(p, "en"), "XVNLI/annotations/en/train.jsonl.zip", ("train", "en")),
        (lambda p: (ve_split(p), None), "annotations_machine-translate/ru/test.jsonl", ("translate_test", None)),
        (lambda p: (ve_split(p), None), "snli_ve_dev.jsonl", ("dev", None)),
        (lambda p: xgqa_name(p, None), "zero_shot/testdev_balanced_questions_bn.json", ("test", "bn")),
        (lambda p: xgqa_name(p, None), "few_shot/ko/dev.json", ("dev", "ko")),
        (lambda p: xgqa_name(p, None), "few_shot/ko/test.json", ("fs_test", "ko")),
        (
            lambda p: xgqa_name(p, "ko"),
            "annotations_machine-translate/few_shot/ko/test.json",
            ("translate_fs_test", "ko"),
        ),
    ],
)
def test_iglue_file_names_give_split_and_language(parse, path: str, expected: tuple) -> None:
    assert parse(Path(path)) == expected


def test_gqa_reads_lxmert_testdev_and_ignores_the_original_copy(tmp_path: Path) -> None:
    (tmp_path / "testdev.json").write_text((IGLUE / "gqa/annotations/testdev.json").read_text())
    balanced = {"1": {"question": "Is it?", "imageId": "n1", "answer": "no"}}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(balanced))
    jpegs(tmp_path / "img", [f"{i}.jpg" for i in make_iglue_fixtures.GQA_IMAGES])
    manifest = build("gqa", tmp_path / "out", src=tmp_path, images=tmp_path / "img", fields={"vocab": str(VOCAB)})
    assert manifest["counts"] == {"testdev": {"en": 4}}
    assert manifest["ignored"] == [
        {
            "path": str(tmp_path / "testdev_balanced_questions.json"),
            "reason": "GQA's original testdev file (1 questions); testdev.json (LXMERT format, 4 questions) is read "
            "instead",
        }
    ]
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "testdev.json").write_text("[]")
    with pytest.raises(ValueError, match="both hold gqa split 'testdev'"):
        build("gqa", tmp_path / "out2", src=tmp_path, images=tmp_path, fields={"vocab": str(VOCAB)})


def test_zipped_questions_are_read_and_pickles_listed_as_ignored(tmp_path: Path, capsys) -> None:
    src = tmp_path / "gqa" / "annotations"
    src.mkdir(parents=True)
    for path in (IGLUE / "gqa/annotations").iterdir():
        (src / path.name).write_bytes(path.read_bytes())
    rows = [{"img_id": "n900001", "label": {"yes": 1.0}, "question_id": "8001", "sent": "Is it sunny?"}]
    with zipfile.ZipFile(src / "train.json.zip", "w") as archive:
        archive.writestr("train.json", json.dumps(rows))
    jpegs(tmp_path / "img", [f"{i}.jpg" for i in make_iglue_fixtures.GQA_IMAGES])
    manifest = build("gqa", tmp_path / "out", src=src, images=tmp_path / "img")
    assert manifest["counts"] == {"testdev": {"en": 4}, "train": {"en": 1}}
    ignored = {Path(i["path"]).name: i["reason"] for i in manifest["ignored"]}
    assert set(ignored) == {"trainval_ans2label.json", "trainval_label2ans.pkl"}
    assert ignored["trainval_label2ans.pkl"].startswith("pickle: data files are never unpickled")
    err = capsys.readouterr().err
    assert f"gqa: ignored: {src / 'trainval_label2ans.pkl'}: pickle" in err


def test_invalid_utf8_names_the_file_and_line(tmp_path: Path, flickr: Path) -> None:
    lines = (IGLUE / "XVNLI/annotations/en/test.jsonl").read_bytes().splitlines(keepends=True)
    bad = tmp_path / "en" / "test.jsonl"
    bad.parent.mkdir()
    bad.write_bytes(b"".join([lines[0], lines[1].replace(b"painter", b"painter \xff"), *lines[2:]]))
    with pytest.raises(ValueError, match=r"test\.jsonl:2: invalid UTF-8 .*re-save the file as UTF-8"):
        build("xvnli", tmp_path / "out", src=bad, images=flickr)
    questions = tmp_path / "q" / "testdev.json"
    questions.parent.mkdir()
    questions.write_bytes(b'[\n {"sent": "caf\xe9"}\n]')
    with pytest.raises(ValueError, match=r"testdev\.json:2: invalid UTF-8"):
        build("gqa", tmp_path / "out", src=questions, images=flickr, fields={"vocab": str(VOCAB)})


def test_fixtures_are_the_records_the_project_writes(tmp_path: Path) -> None:
    """tests/fixtures/iglue holds exactly what tests/make_iglue_fixtures.py writes (no third-party record)."""
    make_iglue_fixtures.write(tmp_path)
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(IGLUE) for p in IGLUE.rglob("*") if p.is_file() and p.name != "README.md"}
    assert written == committed
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (IGLUE / rel).read_bytes(), rel


def test_every_fixture_folder_says_it_was_written_by_the_project() -> None:
    fixtures = IGLUE.parent
    for folder in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        readme = folder / "README.md"
        assert readme.is_file(), f"{folder} needs a README saying where its records come from"
        assert "written by the project" in readme.read_text(encoding="utf-8").splitlines()[0], readme


def test_build_help_and_list_name_every_converter(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        shards_main(["build", "--help"])
    help_text = capsys.readouterr().out
    listed = dict(re.findall(r"^  (\w+) +(.+)$", help_text, flags=re.M))
    assert set(CONVERTERS) | {"demo"} <= set(listed)
    assert shards_main(["list"]) == 0
    out = capsys.readouterr().out
    names = re.findall(r"^(\w+): ", out, flags=re.M)
    assert names == list(CONVERTERS)
    assert "test_<lang>.jsonl" in out and "train.jsonl.zip" in out
