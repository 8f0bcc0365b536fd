"""Evaluation never scores changed data: every evaluation shard is checked against the manifest's sha256 before a
test or validation reads it. Before, a flipped byte inside a JPEG of a test shard was scored silently (only
``python -m shards verify`` noticed)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

import train
from datamodules import datamodule as dm_module
from datamodules.datamodule import TaskData, TransferDataModule
from datamodules.pipeline import DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO = [
    "--config",
    str(CONFIGS / "base.yaml"),
    "--config",
    str(CONFIGS / "demo/base.yaml"),
    "--config",
    str(CONFIGS / "demo/target_ve.yaml"),
    "--data.num_workers",
    "0",
    "--trainer.logger",
    "false",
]


def flip_jpeg_byte(shard: Path) -> None:
    """Flips one byte in the middle of the first JPEG member: the tar still reads, the image may still decode."""
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))


@pytest.fixture
def world_copy(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose ``data/demo`` is the demo world with a copied (writable) ``demo_ve``."""
    demo = tmp_path / "data" / "demo"
    demo.mkdir(parents=True)
    for entry in demo_dir.iterdir():
        if entry.name == "demo_ve":
            shutil.copytree(entry, demo / entry.name)
        else:
            (demo / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shard_of(world: Path, split: str, lang: str) -> Path:
    directory = world / "data" / "demo" / "demo_ve"
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory / next(s["file"] for s in manifest["shards"] if s["split"] == split and s["lang"] == lang)


@pytest.mark.parametrize(("command", "split", "lang"), [("test", "test", "de"), ("validate", "dev", "en")])
def test_changed_evaluation_shard_fails_naming_it(
    world_copy: Path, capsys: pytest.CaptureFixture, command: str, split: str, lang: str
) -> None:
    shard = shard_of(world_copy, split, lang)
    flip_jpeg_byte(shard)
    root = world_copy / "runs" / "flip"
    code = train.main([command, *DEMO, "--trainer.default_root_dir", str(root), "--trainer.limit_val_batches", "2"])
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert f"data/demo/demo_ve/{shard.name}: sha256 differs from the manifest" in err, err[-3000:]
    assert "python -m shards verify" in err and "Traceback" not in err
    assert not (root / "results.json").exists()


def test_each_evaluation_shard_is_hashed_once(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation in a fit calls the loaders again: an unchanged shard is hashed once per data module."""
    hashed: list[str] = []
    real = dm_module.sha256_file
    monkeypatch.setattr(dm_module, "sha256_file", lambda path: hashed.append(str(path)) or real(path))
    dm = TransferDataModule(
        [TaskData("demo_ve", str(demo_dir / "demo_ve"), val_split="dev", test_split="test")], num_workers=0
    )
    dm._check_eval_shards("test")
    dm._check_eval_shards("test")
    urls = [u for _, _, urls in dm.eval_sets["test"] for u in urls]
    assert sorted(hashed) == sorted(urls) and len(urls) > 1


def test_changed_shard_message_names_shard_and_fix(world_copy: Path) -> None:
    shard = shard_of(world_copy, "test", "es")
    flip_jpeg_byte(shard)
    dm = TransferDataModule([TaskData("demo_ve", "data/demo/demo_ve", test_split="test")], num_workers=0)
    with pytest.raises(DataError, match=r"data.tasks\[demo_ve\]: data/demo/demo_ve/test-es-\d+\.tar: sha256 differs"):
        dm._check_eval_shards("test")
