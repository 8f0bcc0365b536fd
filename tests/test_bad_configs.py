"""Typos and invalid configs fail before any training step, naming the config key and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import write_task_shards

from train import cli_main


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict[str, str]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bad_configs")
    write_task_shards(out / "ve", "demo_ve", {("train", "en"): 8, ("dev", "en"): 4, ("test", "en"): 4})
    parent = out / "parent.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"tasks": {}}}, parent)
    return {"out": out, "ve": str(out / "ve"), "parent": str(parent), **tiny_model}


def ve(world: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"name": "demo_ve", "shards": world["ve"], "train_split": "train", "val_split": "dev", **changes}


def fit(
    world: dict[str, Any],
    tmp_path: Path,
    tasks: list[dict] | None = None,
    model: dict | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """Run ``train.py fit`` in this process with the demo configs and these overrides; returns the run dir."""
    root = tmp_path / "run"
    config = {
        "model": {"core": {"text_model": world["text_model"], "vision_model": world["vision_model"]}, **(model or {})},
        "data": {"tasks": tasks or [ve(world)], "num_workers": 0},
        "trainer": {"logger": False, "default_root_dir": str(root), "max_steps": 2},
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    cli_main(
        ["fit", "--config", "configs/base.yaml", "--config", "configs/demo/base.yaml", "--config", str(path), *extra]
    )
    return root


def fails(world: dict[str, Any], tmp_path: Path, *parts: str, **kwargs: Any) -> str:
    """The error message of a run that must fail before training; asserts each of ``parts`` is in it."""
    with pytest.raises((ValueError, KeyError)) as info:
        fit(world, tmp_path, **kwargs)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"
    assert not (tmp_path / "run" / "checkpoints").exists(), "training started"
    return message


def test_unknown_task(world: dict[str, Any], tmp_path: Path) -> None:
    message = fails(
        world,
        tmp_path,
        "data.tasks[*].name",
        "Unknown task 'demo_vee'",
        "Valid tasks:",
        tasks=[ve(world, name="demo_vee")],
    )
    assert "demo_ve," in message


def test_missing_shards_directory(world: dict[str, Any], tmp_path: Path) -> None:
    fails(
        world,
        tmp_path,
        "data.tasks[demo_ve].shards",
        "No shard manifest",
        "python -m shards build",
        tasks=[ve(world, shards=str(tmp_path / "nowhere"))],
    )


def test_missing_shard_file(world: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "ve"
    shutil.copytree(world["ve"], copy)
    (copy / "train-en-000001.tar").unlink()
    fails(
        world,
        tmp_path,
        "data.tasks[demo_ve]",
        "train-en-000001.tar is missing",
        "python -m shards build",
        tasks=[ve(world, shards=str(copy))],
    )


def test_train_split_typo(world: dict[str, Any], tmp_path: Path) -> None:
    fails(
        world,
        tmp_path,
        "data.tasks[demo_ve].train_split='trian'",
        "it has ['dev', 'test', 'train']",
        tasks=[ve(world, train_split="trian")],
    )


def test_eval_language_typo(world: dict[str, Any], tmp_path: Path) -> None:
    fails(
        world,
        tmp_path,
        "data.tasks[demo_ve].val_langs",
        "lang='eng'",
        "(split/lang)",
        tasks=[ve(world, val_langs=["eng"])],
    )


def test_init_scope_names_a_head_family(world: dict[str, Any], tmp_path: Path) -> None:
    fails(
        world,
        tmp_path,
        "model.init_scope",
        "'classification' (a head family",
        "valid: core, all, or a list of ['demo_ve']",
        model={"init_from": world["parent"], "init_scope": ["classification"]},
    )


def test_init_scope_names_a_missing_head(world: dict[str, Any], tmp_path: Path) -> None:
    fails(
        world,
        tmp_path,
        "model.init_scope names head 'demo_nli'",
        "['demo_ve']",
        model={"init_from": world["parent"], "init_scope": ["demo_nli"]},
    )


def test_sampler_weight_for_a_task_not_trained(world: dict[str, Any], tmp_path: Path) -> None:
    eval_only = {"name": "demo_nli", "shards": world["ve"], "test_split": "test", "weight": 0.5}
    fails(
        world,
        tmp_path,
        "data.tasks[demo_nli].weight",
        "no train_split",
        "remove the weight or set train_split",
        tasks=[ve(world), eval_only],
    )


def test_max_length_beyond_position_limit(world: dict[str, Any], tmp_path: Path) -> None:
    fails(world, tmp_path, "data.max_length=304", "lower data.max_length to 232", extra=("--data.max_length", "304"))


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("trainer.precision", "bf16-mix", "bf16-mixed"),
        ("data.sampler", "proportinal", "proportional"),
        ("model.core.fusion", "single-stream", "single_stream"),
    ],
)
def test_parser_typos(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, option: str, value: str, valid: str
) -> None:
    with pytest.raises(SystemExit):
        fit(world, tmp_path, extra=(f"--{option}", value))
    err = capsys.readouterr().err
    assert option in err and value in err and valid in err, err[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_warmup_steps_and_fraction_both_given(world: dict[str, Any], tmp_path: Path) -> None:
    """base.yaml gives warmup_fraction; adding warmup_steps without nulling it is ambiguous, so it fails."""
    fails(
        world,
        tmp_path,
        "model.schedule.warmup_steps=3",
        "model.schedule.warmup_fraction=0.1",
        "give one and set the other to null",
        model={"schedule": {"warmup_steps": 3}},
    )


def test_warmup_lengths() -> None:
    from lightning_modules.module import Schedule

    assert Schedule(warmup_steps=7).warmup(100) == 7  # steps, even below 1 % of the run
    assert Schedule(warmup_fraction=0.25).warmup(200) == 50
    assert Schedule().warmup(300) == 30  # neither: 10 % of max_steps
    with pytest.raises(ValueError, match="warmup_fraction=2.0 must be in \\[0, 1\\]; for steps use warmup_steps"):
        Schedule(warmup_fraction=2.0).warmup(100)


@pytest.mark.parametrize(
    ("where", "hint"),
    [
        ("yaml", "model.text_model is now model.core.text_model"),
        ("--model.fusion", "model.fusion is now model.core.fusion"),
        ("--model.lr", "model.lr is now model.optimizer.lr"),
    ],
)
def test_flat_model_key_names_its_new_home(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, where: str, hint: str
) -> None:
    """A config written before model.core / model.optimizer existed fails at parsing and says where the key went."""
    old = tmp_path / "old.yaml"
    old.write_text(json.dumps({"model": {"text_model": world["text_model"]}}))
    extra = ("--config", str(old)) if where == "yaml" else (where, "single_stream" if "fusion" in where else "1e-5")
    with pytest.raises(SystemExit):
        fit(world, tmp_path, extra=extra)
    err = capsys.readouterr().err
    assert hint in err, err[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_moved_keys_hint_ignores_current_keys() -> None:
    from train import moved_keys_hint

    assert moved_keys_hint("unrecognized arguments: --model.core.text_model x --data.text_model y") == ""
    assert moved_keys_hint("'model.freeze_vision' and 'model.compile'") == (
        " (model.freeze_vision is now model.freezing.vision; model.compile is now model.core.compile)"
    )
