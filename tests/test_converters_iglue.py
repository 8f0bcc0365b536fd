"""IGLUE converters on real annotation excerpts (tests/fixtures/iglue, laid out as in e-bug/iglue)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from lightning_modules.tasks import NLI_LABELS
from shards.__main__ import main as shards_main
from shards.converters import CONVERTERS
from shards.converters.iglue import marvl_name, ve_split, wit_name, xgqa_name
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
    }
    assert manifest["tasks"]["xvnli"] == {
        "label_names": list(NLI_LABELS),
        "label_map": {"entailment": 0, "neutral": 1, "contradiction": 2},
    }
    assert len(manifest["sources"]) == 5 and all(len(s["sha256"]) == 64 for s in manifest["sources"])
    got = samples(tmp_path / "out")
    dash = json.loads(got["test-en-2424111022_jpg_4r1c"]["json"])  # the file's gold_label "-" line
    assert dash == {
        "task": "xvnli",
        "lang": "en",
        "id": "2424111022.jpg#4r1c",
        "text": "There is a boy headed to the woods.",
        "text_pair": None,
        "label": -1,
    }
    first_ar = json.loads(got["test-ar-759822302_jpg_2r1c"]["json"])
    assert (first_ar["text"], first_ar["label"]) == ("يرتدي الجريدة على رأسه.", 2)
    assert set(got["test-ar-759822302_jpg_2r1c"]) == {"json", "jpg"}


def test_xvnli_one_split_and_language(tmp_path: Path, flickr: Path) -> None:
    manifest = build("xvnli", tmp_path / "out", src=IGLUE / "XVNLI", images=flickr, split="test", lang="en")
    assert manifest["counts"] == {"test": {"en": 21}}


def test_missing_images_fail_with_a_count_or_are_skipped_and_recorded(tmp_path: Path, flickr: Path) -> None:
    (flickr / "759822302.jpg").unlink()  # used by 3 pairs in each language
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
    jpegs(tmp_path / "gqa", ["n406334.jpg"])
    fields = {"vocab": str(VOCAB)}
    manifest = build("xgqa", tmp_path / "out", src=IGLUE / "xGQA", images=tmp_path / "gqa", fields=fields)
    assert manifest["counts"] == {"train_1": {"de": 27}, "test": {"de": 3}}
    vocab = manifest["tasks"]["xgqa"]["label_names"]
    assert len(vocab) == 1842
    assert manifest["tasks"]["xgqa"]["out_of_vocabulary"] == {"test": {"de": 1}}
    got = samples(tmp_path / "out")
    first = json.loads(got["test-de-202158849"]["json"])
    assert first["text"] == "Ist der Bus in der Nähe der Menschen schwarz und klein?"
    assert (first["answer"], first["labels"], first["scores"]) == ("no", [vocab.index("no")], [1.0])
    oov = json.loads(got["test-de-202158778"]["json"])
    assert (oov["answer"], oov["labels"], oov["scores"]) == ("zebra crossing stripes", [], [])


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
    assert manifest["counts"] == {"train_1": {"id": 4}, "test": {"zh": 10}}
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
    assert manifest["counts"] == {"test": {"de": 10, "en": 10}}
    got = samples(tmp_path / "out")
    coco = json.loads(got["test-en-453297"]["json"])
    assert (coco["id"], coco["image_id"]) == (453297, "453297")
    assert coco["texts"] == ["A small digital camera and a pineapple keychain."]
    flickr_de = json.loads(got["test-de-1007129816"]["json"])
    assert (flickr_de["id"], flickr_de["texts"]) == ("1007129816", ["Der Mann trägt eine orange Wollmütze."])


def test_wit_finds_images_by_url_file_name_or_mapping(tmp_path: Path) -> None:
    src = IGLUE / "wit" / "annotations" / "test_ja.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    names = [unquote(Path(r["image_url"]).name) for r in rows]  # files are saved under decoded names
    # .svg/.tif originals are found as their rasterised .png/.jpg conversions
    jpegs(tmp_path / "wit", [n if n.lower().endswith((".jpg", ".jpeg")) else Path(n).stem + ".png" for n in names])
    manifest = build("wit", tmp_path / "out", src=src, images=tmp_path / "wit")
    assert manifest["counts"] == {"test": {"ja": 10}}
    first = json.loads(samples(tmp_path / "out")["test-ja-wit-test_1"]["json"])
    assert (first["id"], first["texts"], first["image_id"]) == ("wit-test_1", ["ルイス・エレラ"], "7")

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({r["wit_ix"]: f"by_ix/{r['image_idx']}.jpg" for r in rows}))
    jpegs(tmp_path / "wit", [f"by_ix/{r['image_idx']}.jpg" for r in rows])
    fields = {"image_map": str(mapping)}
    manifest = build("wit", tmp_path / "out2", src=src, images=tmp_path / "wit", fields=fields)
    assert manifest["counts"] == {"test": {"ja": 10}} and len(manifest["sources"]) == 2


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
        (lambda p: (ve_split(p), None), "annotations_machine-translate/ru/test.jsonl", ("translate_test", None)),
        (lambda p: (ve_split(p), None), "snli_ve_dev.jsonl", ("dev", None)),
        (lambda p: xgqa_name(p, None), "zero_shot/testdev_balanced_questions_bn.json", ("test", "bn")),
        (lambda p: xgqa_name(p, None), "few_shot/ko/dev.json", ("dev", "ko")),
    ],
)
def test_iglue_file_names_give_split_and_language(parse, path: str, expected: tuple) -> None:
    assert parse(Path(path)) == expected


def test_gqa_refuses_two_files_for_one_split(tmp_path: Path) -> None:
    (tmp_path / "testdev.json").write_text((IGLUE / "gqa/annotations/testdev.json").read_text())
    balanced = {"1": {"question": "Is it?", "imageId": "n1", "answer": "no"}}
    (tmp_path / "testdev_balanced_questions.json").write_text(json.dumps(balanced))
    with pytest.raises(ValueError, match="both hold gqa split 'testdev'"):
        build("gqa", tmp_path / "out", src=tmp_path, images=tmp_path, fields={"vocab": str(VOCAB)})
