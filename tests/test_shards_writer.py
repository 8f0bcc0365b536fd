"""The shard writer, manifest readers, verify and inspect, on tiny records written to tmp_path."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from shards.__main__ import main as shards_main
from shards.inspect import inspect_dir
from shards.manifest import languages, load_manifest, sample_count, select_shards
from shards.verify import verify_dir
from shards.writer import build_shards, reencode_image, sha256_file

TASKS = {"toy": {"label_names": ["no", "yes"], "label_map": {"False": 0, "True": 1}}}
MAX_SIDE = 48


def _record(i: int, split: str = "train", lang: str = "en", images: dict | None = None) -> dict:
    return {
        "key": f"{split}-{lang}-{i:04d}",
        "split": split,
        "lang": lang,
        "json": {"task": "toy", "lang": lang, "id": i, "text": f"sample {i}", "label": i % 2},
        "images": images if images is not None else {},
    }


@pytest.fixture()
def picture(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "wide.png"
    path.parent.mkdir()
    Image.new("RGB", (150, 100), (200, 30, 30)).save(path)
    return path


@pytest.fixture()
def records(picture: Path) -> list[dict]:
    """7 English train samples (one image each, as path / PIL / bytes), 3 German test samples with image pairs."""
    pil = Image.new("RGBA", (30, 20), (0, 0, 255, 128))
    raw = picture.read_bytes()
    recs = [_record(i, images={"jpg": [picture, pil, raw][i % 3]}) for i in range(7)]
    recs += [_record(i, "test", "de", images={"img0.jpg": picture, "img1.jpg": pil}) for i in range(3)]
    return recs


def _build(out: Path, records: list[dict], **kwargs) -> dict:
    return build_shards(
        out, records, dataset="toy", tasks=TASKS, max_per_shard=3, max_side=MAX_SIDE, progress=False, **kwargs
    )


def _read(path: Path) -> list[dict]:
    return list(wds.WebDataset(str(path), shardshuffle=False))


def test_round_trip(tmp_path: Path, records: list[dict], picture: Path) -> None:
    manifest = _build(tmp_path / "out", records, sources=[picture])
    assert [s["file"] for s in manifest["shards"]] == [
        "train-en-000000.tar",
        "train-en-000001.tar",
        "train-en-000002.tar",
        "test-de-000000.tar",
    ]
    samples = [s for f in select_shards(manifest, "train") for s in _read(f)]
    assert [s["__key__"] for s in samples] == [r["key"] for r in records[:7]]
    assert [json.loads(s["json"]) for s in samples] == [r["json"] for r in records[:7]]
    for s in samples:
        img = Image.open(io.BytesIO(s["jpg"]))
        assert img.format == "JPEG" and img.mode == "RGB"
        assert min(img.size) <= MAX_SIDE, img.size
    assert Image.open(io.BytesIO(samples[0]["jpg"])).size == (72, 48)  # downscaled, aspect kept
    assert Image.open(io.BytesIO(samples[1]["jpg"])).size == (30, 20)  # small image never upscaled
    pairs = _read(select_shards(manifest, "test", lang="de")[0])
    assert all({"img0.jpg", "img1.jpg", "json"} <= set(p) for p in pairs) and len(pairs) == 3


def test_manifest(tmp_path: Path, records: list[dict], picture: Path) -> None:
    out = tmp_path / "out"
    returned = _build(out, records, sources=[picture], skipped=[{"key": "x", "reason": "no label"}])
    manifest = load_manifest(out)
    assert manifest == returned
    assert manifest["writer_version"] == 1 and manifest["dataset"] == "toy" and manifest["tasks"] == TASKS
    assert manifest["counts"] == {"train": {"en": 7}, "test": {"de": 3}}
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1, 3]
    assert all(s["sha256"] == sha256_file(out / s["file"]) for s in manifest["shards"])
    assert manifest["sources"] == [{"path": str(picture), "sha256": sha256_file(picture)}]
    assert manifest["skipped"] == [{"key": "x", "reason": "no label"}]
    assert sample_count(out, "train") == 7 and sample_count(out, "test", lang="de") == 3
    assert sample_count(out, "test", lang="fr") == 0
    assert languages(manifest, "test") == ["de"]
    with pytest.raises(ValueError, match="test/de"):
        select_shards(out, "dev")


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m shards build"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("key", "message"),
    [("a.b", "no dots"), ("a/b", "no dots"), ("a\\b", "no dots"), ("", "Invalid sample key")],
)
def test_invalid_keys(tmp_path: Path, key: str, message: str) -> None:
    rec = _record(0)
    rec["key"] = key
    with pytest.raises(ValueError, match=message):
        _build(tmp_path, [rec])


def test_duplicate_key_names_both_positions(tmp_path: Path) -> None:
    recs = [_record(0), _record(1), _record(0)]
    with pytest.raises(ValueError, match=r"'train-en-0000': records #0 and #2"):
        _build(tmp_path, recs)


def test_record_errors(tmp_path: Path) -> None:
    rec = _record(0)
    rec["json"] = {"task": "other", "lang": "en", "id": 0}
    with pytest.raises(ValueError, match="add its label_names"):
        _build(tmp_path, [rec])
    rec["json"] = {"task": "toy", "lang": "en"}
    with pytest.raises(ValueError, match=r"lacks \['id'\]"):
        _build(tmp_path, [rec])


def test_missing_images(tmp_path: Path, picture: Path) -> None:
    recs = [_record(i, images={"jpg": picture if i % 2 else tmp_path / f"gone{i}.jpg"}) for i in range(8)]
    with pytest.raises(FileNotFoundError, match="4 image file") as err:
        _build(tmp_path / "out", recs)
    assert "train-en-0000" in str(err.value) and "gone0.jpg" in str(err.value)
    assert "--allow-missing" in str(err.value)
    manifest = _build(tmp_path / "out", recs, allow_missing=True)
    assert manifest["counts"] == {"train": {"en": 4}}
    assert [s["key"] for s in manifest["skipped"]] == [f"train-en-{i:04d}" for i in (0, 2, 4, 6)]
    assert "gone2.jpg" in manifest["skipped"][1]["reason"]


def test_resume_keeps_finished_shards(tmp_path: Path, records: list[dict]) -> None:
    out = tmp_path / "out"
    first = _build(out, records)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    second = _build(out, records)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first["shards"]]
    # A changed record rewrites its shard only.
    records[0]["json"]["text"] = "changed"
    _build(out, records)
    changed = {p.name for p in out.glob("*.tar") if p.stat().st_mtime_ns != mtimes[p.name]}
    assert changed == {"train-en-000000.tar"}
    assert not list(out.glob("*.tmp"))


def test_parallel_matches_sequential(tmp_path: Path, records: list[dict]) -> None:
    seq = _build(tmp_path / "seq", records)
    par = _build(tmp_path / "par", records, workers=2)
    assert [s["sha256"] for s in par["shards"]] == [s["sha256"] for s in seq["shards"]]


def test_verify_detects_changes(tmp_path: Path, records: list[dict]) -> None:
    out = tmp_path / "out"
    _build(out, records)
    assert verify_dir(out) == []
    shard = out / "train-en-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # flip a byte inside the first member's data
    shard.write_bytes(bytes(data))
    assert any("sha256" in p and shard.name in p for p in verify_dir(out))
    shard.write_bytes(bytes(data[:700]))
    problems = verify_dir(out)
    assert any("truncated" in p for p in problems), problems
    (out / "test-de-000000.tar").unlink()
    assert any("missing" in p for p in verify_dir(out))
    assert shards_main(["verify", str(out)]) == 1


def test_inspect_prints_counts(tmp_path: Path, records: list[dict], capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _build(out, records)
    inspect_dir(out)
    text = capsys.readouterr().out
    assert "train" in text and "en 7" in text and "de 3" in text
    assert "labels train/toy: no 4, yes 3" in text
    assert "image jpg: 72x48" in text


def test_reencode_image(picture: Path) -> None:
    jpeg = reencode_image(picture, 40)
    assert Image.open(io.BytesIO(jpeg)).size == (60, 40)
    assert reencode_image(jpeg, 40) == jpeg  # an RGB JPEG within the bound passes through untouched


def test_cli_unknown_dataset_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="Valid names: demo, .*xvnli"):
        shards_main(["build", "no_such_dataset", "--out", str(tmp_path)])
