"""Preflight: shards vs manifests, streams vs workers × ranks, vocabularies across tasks and phases, VQA
answer coverage, position limits, empty evaluation sets, and the on-demand command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import jpeg_bytes, vision_config, write_task_shards

from datamodules.datamodule import TaskData, TransferDataModule
from datamodules.preflight import PreflightReport
from lightning_modules.module import CoreConfig, TransferModule
from shards.manifest import select_shards
from shards.writer import build_shards
from train import full_preflight, preflight_main


@pytest.fixture
def ve_dir(tmp_path: Path) -> Path:
    write_task_shards(
        tmp_path / "ve", "demo_ve", {("train", "en"): 12, ("dev", "en"): 4, ("test", "en"): 4, ("test", "de"): 4}
    )
    return tmp_path / "ve"


def datamodule(tiny_model: dict[str, str], tasks: list[TaskData], **kwargs) -> TransferDataModule:
    return TransferDataModule(
        tasks,
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        num_workers=kwargs.pop("num_workers", 1),
        pin_memory=False,
        **kwargs,
    )


def preflight(
    dm: TransferDataModule, world: int, model: TransferModule | None = None, *, full: bool = False
) -> PreflightReport:
    """Both halves, data and model, as ``train.py`` runs them; a tiny model for the data's tasks by default."""
    if model is None:
        core = CoreConfig(dm.tokenizer_name, TINY["vision_model"], pretrained=False)
        model = TransferModule(core, tasks=dm.task_info, max_steps=10)
    return full_preflight(dm, world, model, full=full)


TINY: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _tiny(tiny_model: dict[str, str]) -> None:
    TINY.update(tiny_model)


def ve_task(directory: Path) -> TaskData:
    return TaskData("demo_ve", str(directory), train_split="train", val_split="dev", test_split="test")


def test_healthy_run_passes(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    report = preflight(datamodule(tiny_model, [ve_task(ve_dir)]), 1, full=True)
    assert report.ok, report.text()
    assert any("positions: 145 of 256 used (17 image tokens)" in line for line in report.info), report.info


def test_missing_and_truncated_shards(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    dm = datamodule(tiny_model, [ve_task(ve_dir)])
    missing, truncated = select_shards(ve_dir, "train")[:2]
    missing.unlink()
    truncated.write_bytes(truncated.read_bytes()[:-700])
    errors = preflight(dm, 1).errors
    assert any(str(missing) in e and "missing" in e for e in errors), errors
    assert any(str(truncated) in e and "truncated" in e for e in errors), errors


def test_full_mode_hashes(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    dm = datamodule(tiny_model, [ve_task(ve_dir)])
    shard = select_shards(ve_dir, "test", lang="de")[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # same size: only the hash sees it
    shard.write_bytes(bytes(data))
    assert preflight(dm, 1).ok
    errors = preflight(dm, 1, full=True).errors
    assert any(str(shard) in e and "sha256" in e for e in errors), errors


def test_train_streams_count_the_shards_of_the_languages_read(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    """IGLUE's few-shot shape: ``train_1`` is one shard per language; a run reads one language with the shipped
    6 workers. It used to fail ("5 shard(s) but data.num_workers=6 x 1 rank(s)", counting every language)."""
    langs = ("ar", "en", "es", "fr", "ru")
    write_task_shards(
        tmp_path / "xvnli",
        "demo_ve",
        {**{("train_1", lang): 3 for lang in langs}, **{("test", lang): 4 for lang in langs}},
    )
    task = TaskData("demo_ve", str(tmp_path / "xvnli"), train_split="train_1", train_langs=["ar"], test_split="test")
    dm = datamodule(tiny_model, [task], num_workers=6)
    report = preflight(dm, 1)
    assert report.ok, report.text()
    assert any(
        "'train_1' (ar) has 1 shard(s): read by 1 worker(s) per rank (data.num_workers=6)" in line
        for line in report.info
    ), report.info
    assert dm.train_workers("demo_ve", 1) == 1
    errors = preflight(dm, 2).errors  # two ranks, one shard: a rank would read nothing
    assert any("'train_1' (ar) has 1 shard(s) for 2 ranks" in e for e in errors), errors


def test_train_workers_follow_the_shards_per_rank(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    dm = datamodule(tiny_model, [ve_task(ve_dir)], num_workers=2)  # 3 train shards
    assert preflight(dm, 1).ok and dm.train_workers("demo_ve", 1) == 2
    assert preflight(dm, 2).ok and dm.train_workers("demo_ve", 2) == 1


def test_empty_eval_set(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    path = ve_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["shards"]:
        if entry["split"] == "test" and entry["lang"] == "de":
            entry["count"] = 0
    path.write_text(json.dumps(manifest))
    errors = preflight(datamodule(tiny_model, [ve_task(ve_dir)]), 1).errors
    assert any("test set for 'de' is empty" in e and "test_langs" in e for e in errors), errors


def test_max_length_beyond_positions(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    dm = datamodule(tiny_model, [ve_task(ve_dir)], max_length=248)
    errors = preflight(dm, 1).errors
    assert any("data.max_length=248 + 17 image tokens" in e and "lower data.max_length to 232" in e for e in errors), (
        errors
    )


def vqa_dir(out: Path, task: str, split: str, vocab: list[str], labels: dict[str, list[list[int]]]) -> Path:
    records = []
    for lang, per_sample in labels.items():
        for i, lab in enumerate(per_sample):
            sample = {
                "task": task,
                "lang": lang,
                "id": i,
                "text": "what colour",
                "answer": "red",
                "labels": lab,
                "scores": [1.0] * len(lab),
            }
            records.append(
                {"key": f"{lang}-{i}", "split": split, "lang": lang, "json": sample, "images": {"jpg": jpeg_bytes(i)}}
            )
    build_shards(out, records, dataset=task, tasks={task: {"label_names": vocab}}, progress=False)
    return out


def test_vqa_vocabulary_agreement_and_coverage(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    gqa = vqa_dir(tmp_path / "gqa", "gqa", "train", ["red", "blue", "yes"], {"en": [[0], [1], [2], [0]]})
    xgqa = vqa_dir(
        tmp_path / "xgqa", "xgqa", "test", ["red", "blue", "no"], {"en": [[0], [1], [0], [1]], "de": [[0], [], [], [1]]}
    )
    tasks = [TaskData("gqa", str(gqa), train_split="train"), TaskData("xgqa", str(xgqa), test_split="test")]
    report = preflight(datamodule(tiny_model, tasks), 1)
    assert any("gqa and xgqa share head 'gqa'" in e for e in report.errors), report.errors
    assert "xgqa/en: 100.0% of 4 test answers inside the answer vocabulary" in report.info
    assert "xgqa/de: 50.0% of 4 test answers inside the answer vocabulary" in report.info


def test_init_scope_and_label_order_across_phases(ve_dir: Path, tiny_model: dict[str, str], tmp_path: Path) -> None:
    dm = datamodule(tiny_model, [ve_task(ve_dir)])
    parent = tmp_path / "parent.ckpt"
    flipped = ["contradiction", "neutral", "entailment"]
    torch.save({"state_dict": {}, "hyper_parameters": {"tasks": {"demo_ve": {"labels": flipped}}}}, parent)

    def errors(scope: str | list[str]) -> list[str]:
        core = CoreConfig(tiny_model["text_model"], tiny_model["vision_model"], pretrained=False)
        model = TransferModule(core, tasks=dm.task_info, max_steps=10, init_from=str(parent), init_scope=scope)
        return preflight(dm, 1, model).errors

    assert errors("core") == []
    family = errors(["classification"])
    assert any("'classification' (a head family" in e and "['demo_ve']" in e for e in family), family
    assert any("init_scope names head 'demo_nli'" in e for e in errors(["demo_nli"]))
    order = errors("all")
    assert any("carries head 'demo_ve'" in e and "label order" in e for e in order), order


def test_command(ve_dir: Path, tiny_model: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps(
            {
                "model": {"core": tiny_model},
                "data": {
                    "tasks": [{"name": "demo_ve", "shards": str(ve_dir), "train_split": "train", "val_split": "dev"}]
                },
                "trainer": {"default_root_dir": str(tmp_path / "run"), "logger": False},
            }
        )
    )
    args = ["--config", "configs/base.yaml", "--config", "configs/demo/base.yaml", "--config", str(config)]
    assert preflight_main([*args, "--full"]) == 0
    assert "preflight: 0 problem(s)" in capsys.readouterr().out
    select_shards(ve_dir, "dev")[0].unlink()
    assert preflight_main(args) == 1
    assert "dev-en-000000.tar is missing" in capsys.readouterr().out
