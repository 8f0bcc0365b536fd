"""Weights load as said or not at all: every core prints where each tower's weights came from and how many tensors
loaded; a vision file of another architecture or size, an unreadable file, or a text directory that supplies under
90 % of the model's tensors is refused naming the key, the file and the counts; a local text directory with weights
that ``pretrained: false`` leaves unloaded is named loudly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

import train
from lightning_modules.core import EncoderCore
from lightning_modules.weights import WeightLoadError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}
DEMO = [
    "--config",
    str(CONFIGS / "base.yaml"),
    "--config",
    str(CONFIGS / "demo/base.yaml"),
    "--config",
    str(CONFIGS / "demo/target_ve.yaml"),
    "--trainer.logger",
    "false",
    "--data.num_workers",
    "0",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Vision weight files: the right ViT, a ResNet, a 48-wide ViT, and two text files named like weights."""
    out = tmp_path_factory.mktemp("vision_files")
    torch.manual_seed(0)
    models = {
        "vit": timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_VIT),
        "resnet": timm.create_model("resnet10t", pretrained=False),
        "wide": timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY_VIT, "embed_dim": 48}),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = out / f"{name}.safetensors"
        safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(paths[name]))
    for suffix in ("safetensors", "pth"):
        paths[f"text.{suffix}"] = out / f"notes.{suffix}"
        paths[f"text.{suffix}"].write_text("these are not weights\n" * 20)
    return paths


def _bert_dir(path: Path, keep: str | None = None) -> Path:
    """A tiny BERT saved with save_pretrained; ``keep``: only the tensors whose name starts so stay in the file."""
    model = BertModel(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    )
    model.save_pretrained(path)
    if keep is not None:
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k.startswith(keep)}
        safetensors.torch.save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_load_report_names_each_towers_source_and_count(
    files: dict[str, Path], tiny_model: dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    core = EncoderCore(
        tiny_model["text_model"],
        "vit_tiny_patch16_224",
        pretrained=False,
        vision_kwargs=TINY_VIT,
        vision_checkpoint=str(files["vit"]),
    )
    total = len(core.vision.state_dict())
    err = capsys.readouterr().err
    assert f"weights: vision tower: {files['vit']}: {total} of {total} tensors loaded" in err, err
    assert "weights: text tower: random (model.core.pretrained false)" in err, err


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("resnet", ["supplies 0 of the", "tensors of the vision tower", "at least 90%", "Missing e.g."]),
        ("wide", ["have other shapes", "file (48,) vs model (24,)"]),
        ("text.safetensors", ["cannot be read as weights", "SafetensorError"]),
        ("text.pth", ["cannot be read as weights", "not a file written by torch.save"]),
    ],
)
def test_bad_vision_checkpoint_is_refused(
    files: dict[str, Path], tiny_model: dict[str, str], name: str, parts: list[str]
) -> None:
    """A ResNet file for a ViT loaded 0 tensors with exit 0; the others raised 86-112-line traces without the key."""
    with pytest.raises(WeightLoadError) as info:
        EncoderCore(
            tiny_model["text_model"],
            "vit_tiny_patch16_224",
            pretrained=False,
            vision_kwargs=TINY_VIT,
            vision_checkpoint=str(files[name]),
        )
    message = str(info.value)
    for part in ["model.core.vision_checkpoint", str(files[name]), *parts]:
        assert part in message, f"{part!r} not in: {message}"
    assert "weights_only=False" not in message  # torch's advice: would run the file's pickled code
    assert len(message.splitlines()) <= 3


def test_text_directory_that_supplies_few_tensors_is_refused(tmp_path: Path) -> None:
    text = _bert_dir(tmp_path / "text", keep="embeddings.")
    with pytest.raises(WeightLoadError) as info:
        EncoderCore(str(text), None, pretrained=True)
    message = str(info.value)
    assert "model.core.text_model" in message and str(text) in message and "at least 90%" in message, message


def test_text_directory_with_weights_reports_its_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = _bert_dir(tmp_path / "text")
    core = EncoderCore(str(text), None, pretrained=True)
    total = len(core.text.state_dict())
    assert f"weights: text tower: {text}: {total} of {total} tensors loaded" in capsys.readouterr().err


def test_documented_text_dir_on_the_demo_config_says_its_weights_are_not_loaded(
    demo_cwd: Path, demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """docs/real_weights.md's `--model.core.text_model DIR --model.core.vision_pretrained false` stacked on the demo
    config (`pretrained: false`): the text tower follows `pretrained: false`; the run says so, naming the switch."""
    text = tmp_path / "my_text"
    shutil.copytree(demo_dir / "text_model", text)
    AutoModel.from_config(AutoConfig.from_pretrained(text)).save_pretrained(text)
    train.main(
        [
            "validate",
            *DEMO,
            "--model.core.text_model",
            str(text),
            "--model.core.vision_pretrained",
            "false",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert f"weights: text tower: RANDOM, {text} holds weights (model.safetensors) that are NOT loaded" in err, err
    assert "set model.core.text_pretrained true to load them" in err
    assert "weights: vision tower: random (model.core.vision_pretrained false)" in err


def test_cli_refuses_a_resnet_file_for_a_vit(
    demo_cwd: Path, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The reviewer's case: trained a fully random ViT with exit 0; now exit 2 and one message."""
    code = train.main(
        [
            "fit",
            *DEMO,
            "--model.core.vision_model",
            "vit_tiny_patch16_224",
            "--model.core.vision_kwargs",
            str(TINY_VIT),
            "--model.core.vision_checkpoint",
            str(files["resnet"]),
            "--trainer.max_steps",
            "1",
            "--trainer.default_root_dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"train.py: model.core.vision_checkpoint='{files['resnet']}' supplies 0 of the" in err, err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()
