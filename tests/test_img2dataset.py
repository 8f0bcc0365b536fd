"""img2dataset's WebDataset output (jpg + txt + json per sample) indexed in place and read by the loader, with
the start phase's xFlickr&CO-test-image exclusion (refused without the test set, dropped and counted with it)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import jpeg_bytes, vision_config

from datamodules.datamodule import TaskData, TransferDataModule
from shards.__main__ import main as shards_main
from shards.converters import CONVERTERS
from shards.converters.img2dataset import EXCLUDED, identities_of_name, identities_of_sample
from shards.inspect import inspect_dir
from shards.verify import verify_dir

FLICKR_TEST, COCO_TEST = "1000092795", 391895  # xFlickr&CO test images: Flickr ids are str, COCO ids int


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_img2dataset(folder: Path, samples: list[dict]) -> None:
    """img2dataset --output_format webdataset: <shard>.tar with <key>.jpg/.txt/.json, plus _stats.json beside it."""
    folder.mkdir(parents=True)
    for shard in sorted({s["shard"] for s in samples}):
        with tarfile.open(folder / f"{shard}.tar", "w") as tar:
            for s in (s for s in samples if s["shard"] == shard):
                meta = {"url": s["url"], "key": s["key"], "status": "success", "width": 40, "height": 40, **s["extra"]}
                _add(tar, f"{s['key']}.jpg", jpeg_bytes(int(s["key"])))
                if s["caption"] is not None:
                    _add(tar, f"{s['key']}.txt", s["caption"].encode())
                    meta["caption"] = s["caption"]
                _add(tar, f"{s['key']}.json", json.dumps(meta).encode())
        (folder / f"{shard}_stats.json").write_text(json.dumps({"successes": 3}))


SAMPLES = [
    # shard 00000: a CC3M-like caption, an xFlickr&CO test image by its COCO URL, a COCO train image
    {
        "shard": "00000",
        "key": "000000000",
        "url": "https://example.org/img/a.jpg",
        "caption": "a dog on grass",
        "extra": {},
    },
    {
        "shard": "00000",
        "key": "000000001",
        "url": f"http://images.cocodataset.org/val2014/COCO_val2014_{COCO_TEST:012d}.jpg",
        "caption": "a test image from coco",
        "extra": {},
    },
    {
        "shard": "00000",
        "key": "000000002",
        "url": "http://images.cocodataset.org/train2014/COCO_train2014_000000000009.jpg",
        "caption": "a plate of food",
        "extra": {"cocoid": 9},
    },
    # shard 00001: a Flickr30k test image by its Flickr URL, one without caption, two fine ones
    {
        "shard": "00001",
        "key": "000010000",
        "url": f"https://farm4.staticflickr.com/3456/{FLICKR_TEST}_abcdef0123.jpg",
        "caption": "a test image from flickr",
        "extra": {},
    },
    {"shard": "00001", "key": "000010001", "url": "https://example.org/b.jpg", "caption": None, "extra": {}},
    {"shard": "00001", "key": "000010002", "url": "https://example.org/c.jpg", "caption": "a red bus", "extra": {}},
    {"shard": "00001", "key": "000010003", "url": "https://example.org/d.jpg", "caption": "two cats", "extra": {}},
]
KEPT = {"000000000", "000000002", "000010002", "000010003"}


@pytest.fixture
def xflickrco_dir(tmp_path: Path) -> Path:
    """xFlickr&CO test shards as `python -m shards build xflickrco` writes them (one Flickr, one COCO image)."""
    from shards.writer import build_shards

    records = [
        {
            "key": f"xflickrco-{i}",
            "split": "test",
            "lang": "en",
            "images": {"jpg": jpeg_bytes(i)},
            "json": {"task": "xflickrco", "lang": "en", "id": id_, "texts": ["x"], "image_id": str(id_)},
        }
        for i, id_ in enumerate([FLICKR_TEST, COCO_TEST])
    ]
    meta = {"xflickrco": {"label_names": [], "label_map": {}}}
    build_shards(tmp_path / "xflickrco", records, dataset="xflickrco", tasks=meta, progress=False)
    return tmp_path / "xflickrco"


@pytest.fixture
def img2dataset_dir(tmp_path: Path) -> Path:
    write_img2dataset(tmp_path / "cc", SAMPLES)
    return tmp_path / "cc"


def test_build_refuses_without_the_xflickrco_test_set(img2dataset_dir: Path, tmp_path: Path, capsys) -> None:
    code = shards_main(["build", "img2dataset", "--src", str(img2dataset_dir), "--out", str(tmp_path / "idx")])
    assert code == 2
    err = capsys.readouterr().err
    assert "xFlickr&CO test images" in err and "--exclude" in err
    assert not (tmp_path / "idx" / "manifest.json").exists()


def test_index_drops_xflickrco_test_images_and_says_so(
    img2dataset_dir: Path, xflickrco_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "start" / "cc"
    code = shards_main(
        ["build", "img2dataset", "--src", str(img2dataset_dir), "--out", str(out), "--exclude", str(xflickrco_dir)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    said = "7 samples, 4 kept; 2 dropped as xFlickr&CO test images (2 test images), 1 without image or caption"
    assert said in printed
    manifest = json.loads((out / "manifest.json").read_text())
    drop = manifest["img2dataset"]["drop"]
    assert drop == {
        "../../cc/00000.tar": {"000000001": EXCLUDED},
        "../../cc/00001.tar": {"000010000": EXCLUDED, "000010001": "missing_caption"},
    }
    assert manifest["img2dataset"]["xflickrco_exclusion"][0]["excluded"] == 2
    assert {s["reason"] for s in manifest["skipped"]} == {EXCLUDED, "missing_caption"}
    assert [(s["task"], s["count"]) for s in manifest["shards"]] == [
        ("captions", 3),
        ("captions", 4),
        ("captions_itm", 3),
        ("captions_itm", 4),
    ]  # one entry per tar and task
    assert manifest["img2dataset"]["kept"] == len(KEPT)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # no image copied
    assert verify_dir(out) == []  # the original tars, by relative path: hashes and counts check out
    lines: list[str] = []
    inspect_dir(out, echo=lines.append)
    assert "     txt: a dog on grass" in lines and "     image jpg: 40x40" in lines


def test_exclusion_from_iglue_annotation_files(img2dataset_dir: Path, tmp_path: Path) -> None:
    ann = tmp_path / "xFlickrCO" / "annotations" / "en" / "test.jsonl"
    ann.parent.mkdir(parents=True)
    rows = [
        {"id": FLICKR_TEST, "img_path": f"{FLICKR_TEST}.jpg", "sentences": ["x"]},
        {"id": COCO_TEST, "img_path": f"COCO_val2014_{COCO_TEST:012d}.jpg", "sentences": ["y"]},
    ]
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    exclude = [str(tmp_path / "xFlickrCO")]
    manifest = CONVERTERS["img2dataset"](src=img2dataset_dir, out=tmp_path / "idx", exclude=exclude)
    assert manifest["img2dataset"]["xflickrco_exclusion"][0]["excluded"] == 2


def test_exclude_none_indexes_and_records_that_nothing_was_checked(img2dataset_dir: Path, tmp_path: Path) -> None:
    manifest = CONVERTERS["img2dataset"](src=img2dataset_dir, out=tmp_path / "idx", exclude=["none"])
    assert manifest["img2dataset"]["xflickrco_exclusion"] == [
        {"src": str(img2dataset_dir), "checked_against": "not checked (--exclude none)", "excluded": 0}
    ]


def test_a_second_folder_is_added_to_the_same_index(img2dataset_dir: Path, xflickrco_dir: Path, tmp_path: Path) -> None:
    """COCO and Flickr30k train, or captions in several languages, in one index: each folder indexed in turn."""
    german = [
        {**s, "key": s["key"].replace("0000", "2000", 1), "caption": "ein Hund", "shard": "00000"} for s in SAMPLES[:1]
    ]
    write_img2dataset(tmp_path / "cc_de", german)
    out, exclude = tmp_path / "idx", [str(xflickrco_dir)]
    CONVERTERS["img2dataset"](src=img2dataset_dir, out=out, exclude=exclude)
    CONVERTERS["img2dataset"](src=tmp_path / "cc_de", out=out, exclude=exclude, lang="de")
    again = CONVERTERS["img2dataset"](src=img2dataset_dir, out=out, exclude=exclude)  # re-indexing replaces
    assert again["counts"] == {"train": {"de": 1, "en": 7}} and again["img2dataset"]["kept"] == len(KEPT) + 1
    files = sorted(s["file"] for s in again["shards"] if s["task"] == "captions")
    assert files == ["../cc/00000.tar", "../cc/00001.tar", "../cc_de/00000.tar"]
    assert len(again["skipped"]) == 3 and len(again["img2dataset"]["drop"]) == 2


def test_loader_reads_the_tars_in_place_as_caption_samples(
    img2dataset_dir: Path, xflickrco_dir: Path, tmp_path: Path, tiny_model: dict[str, str]
) -> None:
    out = tmp_path / "idx"
    CONVERTERS["img2dataset"](src=img2dataset_dir, out=out, exclude=[str(xflickrco_dir)], lang="en")
    dm = TransferDataModule(
        [TaskData(name="captions", shards=str(out), train_split="train", test_split="train")],
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        batch_size=2,
        eval_batch_size=3,
        num_workers=0,
    )
    batches = list(dm.test_dataloader()[0])
    keys = [k for b in batches for k in b["keys"]]
    assert sorted(keys) == sorted(KEPT)  # every kept sample once; test images and the captionless one never
    assert all(b["task"] == "captions" and b["pixel_values"].shape[1] == 3 for b in batches)
    assert [i for b in batches for i in b["image_ids"]] == keys and {g for b in batches for g in b["lang"]} == {"en"}
    texts = dm.tokenizer.batch_decode(batches[0]["input_ids"], skip_special_tokens=True)
    captions = {s["key"]: s["caption"] for s in SAMPLES}
    assert [t.replace(" ", "") for t in texts] == [captions[k].replace(" ", "") for k in batches[0]["keys"]]
    # training: the drops are counted under their reasons (logged as data/skipped/<reason>)
    train = iter(dm.train_dataloader().loaders["captions"])
    skipped: dict[str, int] = {}
    for _ in range(12):
        for reason, n in next(train).get("skipped", {}).items():
            skipped[reason] = skipped.get(reason, 0) + n
    assert skipped.get(EXCLUDED, 0) > 0


def test_matching_task_pairs_images_with_their_own_or_another_caption(
    tmp_path: Path, xflickrco_dir: Path, tiny_model: dict[str, str]
) -> None:
    many = [
        {
            "shard": "00000",
            "key": f"{i:09d}",
            "url": f"https://example.org/{i}.jpg",
            "caption": f"caption {i}",
            "extra": {},
        }
        for i in range(24)
    ]
    write_img2dataset(tmp_path / "cc", many)
    CONVERTERS["img2dataset"](src=tmp_path / "cc", out=tmp_path / "idx", exclude=[str(xflickrco_dir)])
    dm = TransferDataModule(
        [TaskData(name="captions_itm", shards=str(tmp_path / "idx"), train_split="train", test_split="train")],
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        eval_batch_size=8,
        num_workers=0,
    )
    pairs = []
    for batch in dm.test_dataloader()[0]:
        texts = dm.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        pairs += zip(batch["keys"], [t.replace(" ", "") for t in texts], batch["labels"].tolist())
    assert len(pairs) == 24 and {label for *_, label in pairs} == {0, 1}
    own = {s["key"]: s["caption"].replace(" ", "") for s in many}
    for key, text, label in pairs:
        assert (text == own[key]) == (label == 1), (key, text, label)  # a mismatch is another image's caption
        assert text in own.values()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("http://images.cocodataset.org/val2014/COCO_val2014_000000391895.jpg", {("coco", "391895")}),
        ("http://images.cocodataset.org/val2017/000000391895.jpg", {("coco", "391895")}),
        ("https://farm4.staticflickr.com/3456/1000092795_abcdef0123_z.jpg", {("flickr", "1000092795")}),
        ("flickr30k-images/1000092795.jpg", {("flickr", "1000092795")}),
        ("https://example.org/photos/cat.jpg", set()),
    ],
)
def test_image_identities_from_urls(name: str, expected: set) -> None:
    assert identities_of_name(name) == expected


def test_image_identities_from_columns() -> None:
    assert identities_of_sample({"cocoid": 9, "url": "https://x/y.jpg"}) == {("coco", "9")}
    assert identities_of_sample({"image_id": "42"}) == {("coco", "42"), ("flickr", "42")}  # ambiguous: both


def test_test_images_of_the_iglue_xflickrco_release_layout() -> None:
    """IGLUE's ``xFlickrCO/annotations/<lang>/test.jsonl`` (project-written fixture in its schema): test files only."""
    from shards.converters.img2dataset import test_image_ids

    root = Path(__file__).parent / "fixtures" / "iglue" / "xFlickrCO"
    rows = [json.loads(line) for f in root.rglob("test*.jsonl") for line in f.read_text().splitlines() if line]
    ids, _ = test_image_ids(root)
    expected = {("coco", str(r["id"])) if isinstance(r["id"], int) else ("flickr", r["id"]) for r in rows}
    assert ids == expected and {kind for kind, _ in ids} == {"flickr", "coco"}
