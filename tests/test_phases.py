"""Phase chaining: intermediate fit -> target fit with ``model.init_from``; scopes, lineage, freezing, and one
training step of each starting point (tiny random versions of the model configs' classes)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from transformers import AltCLIPConfig, BertConfig, Siglip2Config, SiglipConfig, XLMRobertaConfig

import train
from contracts.catalogue import NLI_LABELS
from lightning_modules.checkpoints import load_init_checkpoint, read_checkpoint, sha256_file
from lightning_modules.module import CoreConfig, Freezing, TransferModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
FAST = {  # a CPU-sized run: no W&B, no loader workers, no progress output
    "trainer": {
        "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}],
        "enable_model_summary": False,
    },
    "data": {"num_workers": 0, "batch_size": 8, "eval_batch_size": 24},
}


def _fit_args(cwd: Path, phase_config: str, root: str, *extra: str) -> list[str]:
    fast = cwd / "fast.yaml"
    fast.write_text(yaml.safe_dump(FAST))
    configs = [CONFIGS / "base.yaml", CONFIGS / "demo" / "base.yaml", CONFIGS / "demo" / phase_config, fast]
    return [*(a for c in configs for a in ("--config", str(c))), "--trainer.default_root_dir", root, *extra]


class Snapshot(Callback):
    """The module's tensors once setup (and so init_from) has run, before the first step."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[dict[str, Any]]:
    """Phase 2 (demo_nli, 3 steps) then phase 3 (demo_ve, 1 step) started from phase 2's last checkpoint."""
    cwd = tmp_path_factory.mktemp("chain")
    (cwd / "data").mkdir()
    (cwd / "data" / "demo").symlink_to(demo_dir)
    old, argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["train.py"]
    try:
        steps = ("--trainer.max_steps", "3", "--data.steps_per_epoch", "3")
        train.cli_main(args=["fit", *_fit_args(cwd, "intermediate_nli.yaml", "runs/inter", *steps)])
        parent = cwd / "runs" / "inter" / "checkpoints" / "last.ckpt"
        one = ("--trainer.max_steps", "1", "--data.steps_per_epoch", "1", "--trainer.limit_val_batches", "0")
        args = _fit_args(cwd, "target_ve.yaml", "runs/target", *one, "--model.init_from", str(parent))
        cli = train.cli_main(args=args, run=False)
        snapshot = Snapshot()
        cli.trainer.callbacks.append(snapshot)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        fresh = train.cli_main(args=_fit_args(cwd, "target_ve.yaml", "runs/fresh", *one), run=False).model
        yield {"cwd": cwd, "parent": parent, "loaded": snapshot.state, "fresh": fresh.state_dict(), "cli": cli}
    finally:
        os.chdir(old)
        sys.argv = argv


def test_core_equals_parent_and_new_head_is_fresh(chain: dict[str, Any]) -> None:
    parent = read_checkpoint(chain["parent"])["state_dict"]
    loaded, fresh = chain["loaded"], chain["fresh"]
    core = [k for k in loaded if k.startswith("core.")]
    assert core and all(torch.equal(loaded[k], parent[k]) for k in core)
    assert any(not torch.equal(parent[k], fresh[k]) for k in core), "phase 2 trained nothing: the test proves nothing"
    head = [k for k in loaded if k.startswith("heads.")]
    assert head and all(k.startswith("heads.demo_ve.") for k in head)
    assert all(torch.equal(loaded[k], fresh[k]) for k in head), "the new head is the same-seed fresh init"
    assert not any(k.startswith("heads.demo_ve.") for k in parent)


def test_lineage_in_checkpoint_and_logged_config(chain: dict[str, Any]) -> None:
    root = chain["cwd"] / "runs" / "target"
    info = read_checkpoint(root / "checkpoints" / "last.ckpt")["lineage"]
    parent = info["parent"]
    assert info["phase"] == "target" and parent["phase"] == "intermediate"
    assert parent["path"] == str(chain["parent"]) and parent["sha256"] == sha256_file(chain["parent"])
    assert parent["tasks"] == ["demo_nli"] and parent["config"]["core"]["text_model"] == "data/demo/text_model"
    assert parent["lineage"] == {"phase": "intermediate", "parent": None}
    logged = yaml.safe_load(next(root.glob("**/hparams.yaml")).read_text())  # what W&B's config also gets
    assert logged["lineage"]["parent"]["sha256"] == parent["sha256"]
    assert logged["init_missing"] == sorted(k for k in chain["fresh"] if k.startswith("heads."))


# -- load_init_checkpoint on modules built directly -------------------------------------------------------------
def _module(demo_dir: Path, train_tasks: list[str], eval_tasks: tuple[str, ...] = (), **kwargs: Any) -> TransferModule:
    tasks = {t: {"labels": list(NLI_LABELS), "train": t in train_tasks} for t in [*train_tasks, *eval_tasks]}
    torch.manual_seed(1)
    core = CoreConfig(
        str(demo_dir / "text_model"),
        str(demo_dir / "vision.json"),
        pretrained=False,
        text_kwargs={"add_pooling_layer": False},
    )
    return TransferModule(core, tasks=tasks, max_steps=10, **kwargs)


def test_scope_core_reports_exactly_the_new_head(chain: dict[str, Any], demo_dir: Path) -> None:
    module = _module(demo_dir, ["demo_ve"])
    report = load_init_checkpoint(module, chain["parent"], "core")
    assert report.missing == sorted(k for k in module.state_dict() if k.startswith("heads.demo_ve."))
    assert report.unexpected == [] and report.dropped_heads == ["demo_nli"]
    assert "heads.demo_ve.mlp.1.weight" in report.summary() and "demo_nli" in report.summary()


def test_scope_all_and_list_carry_heads(chain: dict[str, Any], demo_dir: Path) -> None:
    parent = read_checkpoint(chain["parent"])["state_dict"]
    for scope in ("all", ["demo_nli"]):
        module = _module(demo_dir, ["demo_ve", "demo_nli"])
        report = load_init_checkpoint(module, chain["parent"], scope)
        state = module.state_dict()
        assert all(torch.equal(state[k], parent[k]) for k in parent if k.startswith(("core.", "heads.demo_nli.")))
        assert report.missing == sorted(k for k in state if k.startswith("heads.demo_ve.")) and not report.dropped_heads


def test_scope_errors_name_the_valid_heads(chain: dict[str, Any], demo_dir: Path) -> None:
    module = _module(demo_dir, ["demo_ve"], ("demo_nli",))
    with pytest.raises(ValueError, match=r"'demo_vqa'.*\['demo_nli', 'demo_ve'\]"):
        load_init_checkpoint(module, chain["parent"], ["demo_vqa"])
    with pytest.raises(ValueError, match="'demo_ve', which the checkpoint does not have"):
        load_init_checkpoint(module, chain["parent"], ["demo_ve"])


def test_shape_mismatch_fails(chain: dict[str, Any], demo_dir: Path, tmp_path: Path) -> None:
    state = dict(read_checkpoint(chain["parent"])["state_dict"])
    state["core.image_type"] = torch.zeros(7)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"shape mismatch.*core.image_type: checkpoint \(7,\) vs model \(64,\)"):
        load_init_checkpoint(_module(demo_dir, ["demo_ve"]), tmp_path / "bad.ckpt")


def test_freezing_is_idempotent_both_ways(demo_dir: Path) -> None:
    module = _module(demo_dir, ["demo_ve"], freezing=Freezing(vision=True, text_embeddings=True, text_layers=1))
    core = module.core
    layers = core.text.encoder.layer
    assert not any(p.requires_grad for p in [*core.vision.parameters(), *core.text.embeddings.parameters()])
    assert not any(p.requires_grad for p in layers[0].parameters()) and all(
        p.requires_grad for p in layers[1].parameters()
    )
    module.apply_freezing()  # again: same state
    assert not any(p.requires_grad for p in layers[0].parameters())
    module.freezing = Freezing()  # a later phase: nothing frozen
    module.apply_freezing()
    assert all(p.requires_grad for p in module.parameters())


# -- starting points: the model configs' classes, tiny and random ----------------------------------------------
TINY_TEXT = {
    "xlm-roberta-base": lambda: XLMRobertaConfig(**TEXT_DIMS, max_position_embeddings=40, type_vocab_size=1),
    "xlm-roberta-large": lambda: XLMRobertaConfig(**TEXT_DIMS, max_position_embeddings=40, type_vocab_size=1),
    "intfloat/multilingual-e5-small": lambda: BertConfig(**TEXT_DIMS, max_position_embeddings=40),
    "google/siglip-base-patch16-256-multilingual": lambda: SiglipConfig(
        text_config={**TEXT_DIMS, "max_position_embeddings": 16},
        vision_config={
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 20,
            "image_size": 32,
            "patch_size": 8,
        },
    ),
    "google/siglip2-base-patch16-256": lambda: Siglip2Config(
        text_config={**TEXT_DIMS, "max_position_embeddings": 64}, vision_config=TINY_HF_VISION
    ),
    "BAAI/AltCLIP-m18": lambda: AltCLIPConfig(
        text_config={**TEXT_DIMS, "max_position_embeddings": 40, "project_dim": 20},
        vision_config=TINY_HF_VISION,
        projection_dim=24,
    ),
}
TINY_HF_VISION = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 20}
TEXT_DIMS = {
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
}
TINY_VISION = {"img_size": 32, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}


@pytest.mark.parametrize("config", sorted((CONFIGS / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_starting_point_trains_one_step(config: Path, tmp_path: Path) -> None:
    model = {
        **yaml.safe_load((CONFIGS / "base.yaml").read_text())["model"]["core"],
        **yaml.safe_load(config.read_text())["model"]["core"],
    }
    TINY_TEXT[model["text_model"]]().save_pretrained(tmp_path)
    arch = model["vision_model"].split(".")[0]  # timm architecture without its pretrained tag
    tasks = {
        "demo_ve": {"labels": list(NLI_LABELS), "train": True},
        "demo_nli": {"labels": list(NLI_LABELS), "train": True},
    }
    core = CoreConfig(
        **{
            **model,
            "text_model": str(tmp_path),
            "vision_model": arch,
            "vision_kwargs": TINY_VISION,
            "pretrained": False,
        }
    )
    module = TransferModule(core, tasks=tasks, max_steps=1)
    optimizer = module.configure_optimizers()["optimizer"]
    b, t = 3, 7
    ids = torch.randint(3, 99, (b, t))
    image_batch = {
        "task": "demo_ve",
        "input_ids": ids,
        "attention_mask": torch.ones(b, t, dtype=torch.long),
        "pixel_values": torch.randn(b, 3, 32, 32),
        "labels": torch.tensor([0, 1, 2]),
    }
    module(image_batch).loss.backward()
    no_grad = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert all(n.startswith("heads.demo_nli.") for n in no_grad), no_grad  # DDP: every other parameter is used
    optimizer.step()
    text_batch = {k: v for k, v in image_batch.items() if k != "pixel_values"} | {"task": "demo_nli"}
    loss = module(text_batch).loss
    assert torch.isfinite(loss)
