"""English vision-language converters: IGLUE's training-set annotations (tests/fixtures/iglue) and small files
in each dataset's documented format (tests/fixtures/vl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from shards.converters import CONVERTERS
from shards.converters.vl_english import vqa_score
from shards.inspect import iter_json

FIXTURES = Path(__file__).parent / "fixtures"
IGLUE, VL = FIXTURES / "iglue", FIXTURES / "vl"


def build(name: str, out: Path, **options) -> dict:
    return CONVERTERS[name](out=out, progress=False, **options)


def sample_json(out: Path) -> dict[str, dict]:
    return {key: sample for shard in out.glob("*.tar") for key, sample in iter_json(shard)}


def images(root: Path, names: list[str], fmt: str = "JPEG") -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 7), (20, 90, 160)).save(root / name, format=fmt)
    return root


def test_snli_ve_from_iglue_resplit_reads_only_train_dev_test(tmp_path: Path) -> None:
    ids = {json.loads(line)["Flikr30kID"] for line in (IGLUE / "XVNLI/annotations/en/test.jsonl").open()}
    root = images(tmp_path / "img", [f"{i}.jpg" for i in ids])
    manifest = build("snli_ve", tmp_path / "out", src=IGLUE / "XVNLI/annotations/en", images=root)
    assert manifest["counts"] == {"test": {"en": 21}}  # train_1.jsonl is xvnli's few-shot file
    assert sample_json(tmp_path / "out")["test-en-4100000043_jpg_1r2n"]["label"] == -1
    assert {Path(i["path"]).name: i["reason"] for i in manifest["ignored"]} == {
        "train_1.jsonl": "XVNLI split train_1: build it with `xvnli`",
        "dev-ar_gmt.jsonl": "XVNLI split translate_dev: build it with `xvnli`",
    }


def test_snli_ve_original_files_skip_unlabelled_training_items(tmp_path: Path) -> None:
    root = images(tmp_path / "img", ["1000092795.jpg", "1000268201.jpg"])
    manifest = build("snli_ve", tmp_path / "out", src=VL / "snli_ve", images=root)
    assert manifest["counts"] == {"dev": {"en": 1}, "train": {"en": 2}}
    assert manifest["skipped"] == [
        {"key": "train-en-1000092795_jpg_0r1n", "reason": "gold_label '-' in a training split"}
    ]
    dev = sample_json(tmp_path / "out")["dev-en-1000268201_jpg_2r1n"]
    assert (dev["text"], dev["label"]) == ("The girl is on her way to a birthday.", 1)


def test_gqa_lxmert_format_finds_the_vocabulary_below_src(tmp_path: Path) -> None:
    rows = json.loads((IGLUE / "gqa/annotations/testdev.json").read_text())
    root = images(tmp_path / "img", [f"{r['img_id']}.jpg" for r in rows])
    manifest = build("gqa", tmp_path / "out", src=IGLUE / "gqa", images=root)
    assert manifest["counts"] == {"testdev": {"en": 4}}
    vocab = manifest["tasks"]["gqa"]["label_names"]
    first = sample_json(tmp_path / "out")["testdev-en-700300"]
    assert (first["text"], first["answer"], first["labels"], first["scores"]) == (
        "Is the fence made of wood?",
        "no",
        [vocab.index("no")],
        [1.0],
    )


def test_gqa_balanced_questions_keep_out_of_vocabulary_answers(tmp_path: Path) -> None:
    root = images(tmp_path / "img", ["2354786.jpg"])
    fields = {"vocab": str(IGLUE / "gqa/annotations/trainval_label2ans.json")}
    manifest = build("gqa", tmp_path / "out", src=VL / "gqa", images=root, fields=fields)
    assert manifest["counts"] == {"dev": {"en": 2}}
    assert manifest["tasks"]["gqa"]["out_of_vocabulary"] == {"dev": {"en": 1}}
    oov = sample_json(tmp_path / "out")["dev-en-07000002"]
    assert (oov["answer"], oov["labels"], oov["scores"]) == ("paper lantern", [], [])


def test_vqa_score_is_the_official_leave_one_out_accuracy() -> None:
    assert [vqa_score(c) for c in (0, 1, 2, 3, 4, 10)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]


def test_vqav2_vocabulary_from_counts_and_soft_scores(tmp_path: Path) -> None:
    names = ["val2014/COCO_val2014_000000000042.jpg", "val2014/COCO_val2014_000000000073.jpg"]
    root = images(tmp_path / "coco", [*names, "test2015/COCO_test2015_000000000001.jpg"])
    fields = {"min_answer_count": "1"}
    manifest = build("vqav2", tmp_path / "out", src=VL / "vqav2", images=root, fields=fields)
    assert manifest["counts"] == {"testdev": {"en": 1}, "dev": {"en": 3}}
    vocab = manifest["tasks"]["vqav2"]["label_names"]
    assert vocab == ["2", "umbrellas", "yes"]  # each multiple_choice_answer once: ties in alphabetical order
    got = sample_json(tmp_path / "out")
    umbrellas = got["dev-en-42000"]  # 8 x "umbrellas" (case folded), 2 x "umbrella" (not in the vocabulary)
    assert (umbrellas["answer"], umbrellas["labels"], umbrellas["scores"]) == (
        "umbrellas",
        [vocab.index("umbrellas")],
        [1.0],
    )
    count = got["dev-en-73000"]  # "2" given by 3 of 10 humans
    assert (count["labels"], count["scores"]) == ([vocab.index("2")], [0.9])
    assert got["testdev-en-1000"]["labels"] == [] and got["testdev-en-1000"]["answer"] is None


def test_nlvr2_string_labels_and_image_names_from_identifier(tmp_path: Path) -> None:
    src = IGLUE / "nlvr2/annotations/dev.jsonl"
    ids = [json.loads(line)["identifier"] for line in src.open()]
    pngs = [f"dev/{i.rsplit('-', 1)[0]}-img{k}.png" for i in ids for k in (0, 1)]
    root = images(tmp_path / "nlvr2", pngs, fmt="PNG")
    manifest = build("nlvr2", tmp_path / "out", src=src, images=root)
    assert manifest["counts"] == {"dev": {"en": 6}}
    assert manifest["tasks"]["nlvr2"]["label_map"] == {"False": 0, "True": 1}
    got = sample_json(tmp_path / "out")
    assert (got["dev-en-dev-910-0-0"]["label"], got["dev-en-dev-910-1-0"]["label"]) == (0, 1)
    assert got["dev-en-dev-910-1-0"]["text"] == "The left image shows exactly two kites."


def test_nlvr2_finds_images_in_the_release_layout(tmp_path: Path) -> None:
    """IGLUE's test.jsonl is NLVR2's test1 (images in test1/); train images sit in train/<0..99>/, named by the
    record's ``directory`` or, without one, found among the numbered folders."""
    row = json.loads((IGLUE / "nlvr2/annotations/dev.jsonl").open().readline())
    src = tmp_path / "annotations"
    src.mkdir()
    test = {**row, "identifier": "test1-5-0-1"}
    train = [{**row, "identifier": "train-77-1-0", "directory": 42}, {**row, "identifier": "train-78-0-0"}]
    (src / "test.jsonl").write_text(json.dumps(test) + "\n")
    (src / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    names = ["test1/test1-5-0", "train/42/train-77-1", "train/9/train-78-0"]
    root = images(tmp_path / "nlvr2", [f"{n}-img{k}.png" for n in names for k in (0, 1)], fmt="PNG")
    manifest = build("nlvr2", tmp_path / "out", src=src, images=root)
    assert manifest["counts"] == {"test1": {"en": 1}, "train": {"en": 2}} and not manifest["skipped"]


def test_flickr30k_karpathy_and_iglue_annotations(tmp_path: Path) -> None:
    karpathy = json.loads((VL / "flickr30k/dataset_flickr30k.json").read_text())
    root = images(tmp_path / "img", [i["filename"] for i in karpathy["images"]])
    manifest = build("flickr30k", tmp_path / "out", src=VL / "flickr30k", images=root)
    assert manifest["counts"] == {"train": {"en": 1}, "dev": {"en": 1}, "test": {"en": 2}}
    test = sample_json(tmp_path / "out")["test-en-1000268201"]
    assert (test["id"], test["image_id"], len(test["texts"])) == ("1000268201", "1000268201", 5)

    src = IGLUE / "flickr30k/annotations/test_ann.jsonl"
    root = images(tmp_path / "img2", [json.loads(line)["img_path"] for line in src.open()])
    manifest = build("flickr30k", tmp_path / "out2", src=src, images=root)
    assert manifest["counts"] == {"test": {"en": 4}}
    first = sample_json(tmp_path / "out2")["test-en-4100000001"]
    assert (first["texts"][0], len(first["texts"])) == ("A painter near the water, view 0.", 5)


def test_coco_karpathy_int_ids_and_restval_in_train(tmp_path: Path) -> None:
    karpathy = json.loads((VL / "coco/dataset_coco.json").read_text())
    root = images(tmp_path / "coco", [f"{i['filepath']}/{i['filename']}" for i in karpathy["images"]])
    manifest = build("coco", tmp_path / "out", src=VL / "coco", images=root)
    assert manifest["counts"] == {"train": {"en": 2}, "test": {"en": 1}}
    test = sample_json(tmp_path / "out")["test-en-522418"]
    assert (test["id"], test["image_id"]) == (522418, "522418")


@pytest.mark.parametrize("name", ["snli_ve", "gqa", "vqav2", "nlvr2", "flickr30k", "coco"])
def test_missing_src_is_a_clear_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="--src is required"):
        build(name, tmp_path / "out", images=tmp_path)
