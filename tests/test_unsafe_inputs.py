"""Unsafe inputs: pickle members in shards are never unpickled, init_from refuses code-executing pickles,
the writer rejects keys with path separators."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
import webdataset as wds
from conftest import task_records, write_task_shards

from datamodules.pipeline import SafeDecoder, eval_pipeline, train_pipeline
from lightning_modules.checkpoints import read_checkpoint
from shards.manifest import select_shards
from shards.writer import build_shards


class Sentinel:
    """Unpickling this creates ``path``: the side effect shows whether pickle code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.makedirs, (str(self.path),))


def add_pickle_members(shard: Path, payload: bytes) -> None:
    """Rewrite ``shard`` with .pyd, .pth and .pkl members holding ``payload`` next to every sample."""
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    with open(shard, "wb") as stream:
        writer = wds.TarWriter(stream, encoder=False)
        for s in samples:
            members = {k: v for k, v in s.items() if k in ("__key__", "json", "jpg")}
            writer.write({**members, "pyd": payload, "pth": payload, "pkl": payload})
        writer.close()


def test_pickle_members_are_never_unpickled(tmp_path: Path) -> None:
    sentinel = tmp_path / "pickle-code-ran"
    payload = pickle.dumps(Sentinel(sentinel))
    pickle.loads(payload)  # the payload does run code when unpickled ...
    assert sentinel.exists()
    sentinel.rmdir()

    write_task_shards(tmp_path / "ve", "demo_ve", {("train", "en"): 4, ("test", "en"): 4})
    urls = [str(p) for p in select_shards(tmp_path / "ve", "train")] + [
        str(p) for p in select_shards(tmp_path / "ve", "test")
    ]
    for url in urls:
        add_pickle_members(Path(url), payload)

    def dec(strict: bool) -> SafeDecoder:
        return SafeDecoder(None, draft_size=None, required=("text", "label"), num_images=1, num_labels=3, strict=strict)

    train = train_pipeline(urls[:1], collate=list, batch_size=2, decoder=dec(False), seed=0, rank=0, world_size=1)
    batches = [b for _, b in zip(range(4), train)]
    evaluated = list(eval_pipeline(urls[1:], collate=list, batch_size=2, decoder=dec(True), rank=0, world_size=1))
    samples = [s for b in [*batches, *evaluated] for s in b]
    assert len(samples) == 12
    assert not any(k in s for s in samples for k in ("pyd", "pth", "pkl"))  # ... never even read here
    assert not sentinel.exists()


def test_init_from_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    sentinel = tmp_path / "checkpoint-code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"core.x": torch.zeros(1)}, "payload": Sentinel(sentinel)}, path)
    with pytest.raises(ValueError, match="pickle code execution") as info:
        read_checkpoint(path)
    assert "model.init_from" in str(info.value) and "state_dict" in str(info.value)
    assert not sentinel.exists()


def test_init_from_reads_a_plain_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"core.x": torch.ones(2)}, "hyper_parameters": {"phase": "intermediate"}}, path)
    assert read_checkpoint(path)["state_dict"]["core.x"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("key", ["a/b", "a\\b", "../escape", "/abs"])
def test_writer_rejects_path_separators(tmp_path: Path, key: str) -> None:
    record = task_records("demo_nli", "train", "en", 1)[0] | {"key": key}
    with pytest.raises(ValueError, match="no '/'"):
        build_shards(tmp_path / "out", [record], dataset="x", tasks={"demo_nli": {}}, progress=False)
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True
