"""IGLUE as released: every build command of docs/real_data.md, run on the release's full file tree.

The tree is ``../shared/datasets/iglue-tree`` beside the repository (every annotation file name of
``e-bug/iglue``'s ``datasets/``, each cut to a few records, with one record of each quirk), or any IGLUE
checkout named by ``MMSTILTS_IGLUE_ROOT`` (the repository or its ``datasets/`` folder). Images are
placeholders written in each source's published layout. Without a tree the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from shards.__main__ import main as shards_main
from shards.standins import iglue_images

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "real_data.md"
SHARED_TREE = REPO.parent / "shared" / "datasets" / "iglue-tree"
ENV = "MMSTILTS_IGLUE_ROOT"


def release_root() -> Path | None:
    """``$MMSTILTS_IGLUE_ROOT`` (an iglue checkout or its ``datasets/``), else the shared tree, else None."""
    given = os.environ.get(ENV)
    root = Path(given) if given else SHARED_TREE
    if given and (root / "datasets").is_dir():
        root = root / "datasets"
    return root if root.is_dir() else None


ROOT = release_root()
# The cut tree says so in its README; its exact counts are asserted, a full checkout's only in form.
ON_SHARED_TREE = ROOT is not None and "IGLUE release tree, cut" in next(
    (p.read_text(encoding="utf-8") for p in [ROOT / "README.md"] if p.is_file()), ""
)
pytestmark = pytest.mark.skipif(
    ROOT is None,
    reason=f"no IGLUE release tree: set {ENV} to an e-bug/iglue checkout, or provide {SHARED_TREE}",
)

# docs/real_data.md names image roots relative to the current directory; the tests give each a folder.
IMAGE_ROOTS = ("flickr30k/flickr30k_images", "coco/val2014", "gqa/images", "marvl-images", "nlvr2/images", "wit/images")

# Counts per split and language on the shared tree (each file cut to a few records; training splits lose
# their one "-" item in XVNLI; WIT's test_en.jsonl holds two images with two captions each).
XVNLI_FEW = {lang: 4 for lang in ("ar", "en", "es", "fr", "ru")}
XGQA_ALL = {lang: 4 for lang in ("bn", "de", "en", "id", "ko", "pt", "ru", "zh")}
XGQA_XLING = {lang: n for lang, n in XGQA_ALL.items() if lang != "en"}
XFLICKR_ALL = {lang: 5 for lang in ("de", "es", "id", "ja", "ru", "tr", "zh")}
XFLICKR_DEJA = {"de": 5, "ja": 5}
MARVL_FEW = {"id": 4, "tr": 4, "zh": 4}
MARVL_ALL = {lang: 4 for lang in ("id", "sw", "ta", "tr", "zh")}
WIT_TEST = {"ar": 6, "bg": 6, "da": 5, "el": 6, "et": 6, "id": 6, "ja": 5, "ko": 5, "tr": 5, "vi": 6}
TREE_COUNTS = {
    "xvnli": {
        "test": {lang: 5 for lang in ("ar", "en", "es", "fr", "ru")},
        **{f"train_{n}": XVNLI_FEW for n in (5, 10, 20, 25, 48)},
        "train_1": {lang: 3 for lang in ("ar", "en", "es", "fr", "ru")},
        "dev": {"en": 5},
        "train": {"en": 4},
        "translate_test": {lang: 5 for lang in ("ar", "es", "fr", "ru")},
        "translate_dev": {lang: 5 for lang in ("ar", "es", "fr", "ru")},
    },
    "snli_ve": {"train": {"en": 4}, "dev": {"en": 5}, "test": {"en": 5}},
    "xgqa": {
        **{split: XGQA_ALL for split in ("test", "fs_test", "dev", *(f"train_{n}" for n in (1, 5, 10, 20, 25, 48)))},
        # annotations_machine-translate/ (the docs' command reads the xGQA folder, not only annotations/)
        "translate_test": XGQA_XLING,
        "translate_fs_test": XGQA_XLING,
    },
    "gqa": {"testdev": {"en": 4}},
    "marvl": {
        "test": MARVL_ALL,
        "translate_test": MARVL_ALL,
        **{f"train_{n}": MARVL_FEW for n in ("1", "2", "4", "10", "10x2")},
    },
    "nlvr2": {
        "dev": {"en": 4},
        "test1": {"en": 4},
        "translate_dev": {lang: 4 for lang in ("id", "sw", "ta", "tr", "zh")},
    },
    "xflickrco": {
        "test": {**XFLICKR_ALL, "en": 5},
        "translate_test": XFLICKR_ALL,
        "train": {"de": 5},
        **{f"train_{n}": XFLICKR_ALL for n in (10, 100, 25, 5, 50)},
        "train_1": {lang: 1 for lang in XFLICKR_ALL},
        **{f"train_{n}": XFLICKR_DEJA for n in ("1000", "100x5", "1500", "200", "200x5", "500")},
    },
    "flickr30k": {
        "dev": {"en": 5},
        "test": {"en": 5},
        "translate_dev": {lang: 5 for lang in ("bn", "de", "es", "id", "ja", "ko", "ru", "tr", "zh")},
    },
    "wit": {"test": {**WIT_TEST, "en": 4}, "dev": {"en": 4}, "translate_test": WIT_TEST},
}
# Split names each dataset may give on a full checkout (the shared tree lacks the files > 4 MiB).
FULL_SPLITS = {
    "gqa": {"train", "dev", "testdev", "test"},
    "nlvr2": {"train", "dev", "test1", "translate_dev"},
    "xgqa": {*TREE_COUNTS["xgqa"], "translate_test", "translate_fs_test"},
    "flickr30k": {"train", "dev", "test", "translate_dev"},
    "wit": {"train", "dev", "test", "translate_test"},
}


# ------------------------------------------------------------------------------------ docs and images


def doc_commands() -> list[str]:
    """The ``python -m shards build`` lines over ``iglue/`` in the ```bash blocks of docs/real_data.md."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("python -m shards build") and " iglue/" in line]


def localize(command: str, tmp: Path) -> list[str]:
    """The command's arguments with ``iglue/datasets`` → the tree, image roots and ``data/`` → ``tmp``."""
    args = shlex.split(command)[3:]  # after "python -m shards"
    out = []
    for arg in args:
        name, sep, value = arg.partition("=")
        value = value if sep else arg
        if value.startswith("iglue/datasets/"):
            value = str(ROOT / value.removeprefix("iglue/datasets/"))
        elif value.startswith(("data/", *IMAGE_ROOTS)):
            value = str(tmp / value)
        out.append(f"{name}={value}" if sep else value)
    return out


def write_images(tmp: Path) -> None:
    """Placeholder images for every image the tree's annotations name, in each source's own layout."""
    iglue_images(ROOT, tmp)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every documented IGLUE build command run on the tree: dataset → manifest."""
    tmp = tmp_path_factory.mktemp("release")
    write_images(tmp)
    manifests = {}
    for command in doc_commands():
        args = localize(command, tmp)
        assert shards_main(args) == 0, f"failed: {command}"
        out = Path(args[args.index("--out") + 1])
        manifests[args[1]] = {**json.loads((out / "manifest.json").read_text(encoding="utf-8")), "_dir": str(out)}
    return manifests


def samples(manifest: dict, split: str | None = None) -> dict[str, dict]:
    """key → sample json of a built directory (optionally one split)."""
    found, out = {}, Path(manifest["_dir"])
    for shard in manifest["shards"]:
        if split is not None and shard["split"] != split:
            continue
        with tarfile.open(out / shard["file"]) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                if ext == "json":
                    found[key] = json.loads(tar.extractfile(member).read())
    return found


# ------------------------------------------------------------------------------------------- the tests


def test_the_docs_build_every_iglue_dataset(built: dict[str, dict]) -> None:
    assert set(built) == set(TREE_COUNTS), "docs/real_data.md should build each IGLUE dataset once"
    for dataset, manifest in built.items():
        if ON_SHARED_TREE:
            assert manifest["counts"] == TREE_COUNTS[dataset], dataset
        else:  # a full checkout: the documented split names, every split non-empty
            allowed = FULL_SPLITS.get(dataset, set(TREE_COUNTS[dataset]))
            assert set(manifest["counts"]) <= allowed, dataset
            assert all(n > 0 for langs in manifest["counts"].values() for n in langs.values()), dataset


def test_every_unread_file_is_listed_as_ignored_with_a_reason(built: dict[str, dict]) -> None:
    roots = {
        "xvnli": "XVNLI",
        "snli_ve": "XVNLI/annotations/en",
        "xgqa": "xGQA",
        "gqa": "gqa/annotations",
        "marvl": "marvl",
        "nlvr2": "nlvr2/annotations",
        "xflickrco": "xFlickrCO",
        "flickr30k": "flickr30k",
        "wit": "wit",
    }
    for dataset, manifest in built.items():
        on_disk = {str(p) for p in (ROOT / roots[dataset]).rglob("*") if p.is_file()}
        read = {s["path"] for s in manifest["sources"]}
        ignored = {i["path"]: i["reason"] for i in manifest["ignored"]}
        assert on_disk - read == set(ignored), dataset  # nothing dropped in silence
        assert all(reason for reason in ignored.values())
    snli_ignored = {Path(p).name: r for p, r in ((i["path"], i["reason"]) for i in built["snli_ve"]["ignored"])}
    assert snli_ignored["dev-ar_gmt.jsonl"] == "XVNLI split translate_dev: build it with `xvnli`"
    assert "train_1.jsonl" in snli_ignored
    gqa_ignored = {Path(i["path"]).name: i["reason"] for i in built["gqa"]["ignored"]}
    assert "LXMERT format" in gqa_ignored["testdev_balanced_questions.json"]
    assert "answer vocabulary" in gqa_ignored["trainval_ans2label.json"]


def test_wit_identifies_images_by_wit_ix_as_iglue_does(built: dict[str, dict]) -> None:
    """Regression: test_ar.jsonl holds two different images (a .tif and an .svg) under one image_idx."""
    rows = [json.loads(line) for line in (ROOT / "wit/annotations/test_ar.jsonl").read_text().splitlines()]
    by_idx: dict[int, list[dict]] = {}
    for row in rows:
        by_idx.setdefault(row["image_idx"], []).append(row)
    shared = [group for group in by_idx.values() if len({r["wit_ix"] for r in group}) > 1]
    assert shared, "the tree should hold two WIT images sharing image_idx"
    got = samples(built["wit"], "test")
    ar = {s["id"]: s for s in got.values() if s["lang"] == "ar"}
    assert len({s["image_id"] for s in ar.values()}) == len(ar) == len({r["wit_ix"] for r in rows})
    for row in shared[0]:
        assert ar[row["wit_ix"]]["image_id"] == row["wit_ix"]
        assert ar[row["wit_ix"]]["texts"] == [row["caption_reference_description"]]
    # one image with two caption rows (same wit_ix) is one gallery image with both captions
    if ON_SHARED_TREE:
        en = [s for s in got.values() if s["lang"] == "en"]
        assert sorted(len(s["texts"]) for s in en) == [1, 1, 2, 2]


def test_xgqa_zero_shot_few_shot_and_translated_files_get_distinct_splits(built: dict[str, dict]) -> None:
    """Regression: the documented command read only ``xGQA/annotations``; the translate-test splits that
    study's translate_test protocol needs (``annotations_machine-translate/``) were never built."""
    counts = built["xgqa"]["counts"]
    assert {"test", "fs_test", "dev", "train_1", "translate_test", "translate_fs_test"} <= set(counts)
    assert set(counts["translate_test"]) == set(counts["translate_fs_test"]) == set(XGQA_XLING)
    assert set(counts["test"]) == set(counts["fs_test"]) == set(XGQA_ALL)
    assert len(built["xgqa"]["tasks"]["xgqa"]["label_names"]) == 1842  # IGLUE's gqa/annotations vocabulary


def test_nlvr2_test_images_are_found_in_the_release_layout(built: dict[str, dict]) -> None:
    got = samples(built["nlvr2"], "test1")
    assert got and all(s["id"].startswith("test1-") for s in got.values())
    assert not built["nlvr2"]["skipped"]  # built without --allow-missing: every image found


def test_zipped_training_files_are_read(built: dict[str, dict]) -> None:
    """XVNLI/annotations/en/train.jsonl.zip is SNLI-VE train: configs/target/xvnli.yaml trains on it."""
    assert "train" in built["snli_ve"]["counts"]
    zipped = [s["path"] for s in built["snli_ve"]["sources"] if s["path"].endswith(".zip")]
    assert [Path(p).name for p in zipped] == ["train.jsonl.zip"]


def test_xvnli_gmt_files_are_translate_dev_in_their_language(built: dict[str, dict]) -> None:
    counts = built["xvnli"]["counts"]
    assert not [split for split in counts if split.startswith("translate_dev-")]
    assert set(counts["translate_dev"]) == {"ar", "es", "fr", "ru"}
    got = samples(built["xvnli"], "translate_dev")
    assert {s["lang"] for s in got.values()} == {"ar", "es", "fr", "ru"}
