"""The aligned two-tower start: retrieval runs through the checkpoint's own pooling and projections.

Tiny random towers saved as real checkpoints (so the core loads the same weights as a reference model): a
SigLIP-like pair (HF SiglipModel text tower + a timm ViT with attention pooling, ``global_pool='map'``) and an
AltCLIP-like pair (HF AltCLIPModel: XLM-R text tower + pre_LN/transformation/text_projection, and a timm CLIP ViT
with class-token pooling and a projection head). The tests assert the PATH: the embeddings retrieval scores
equal the reference model's own text features and timm's own pooled + projected image output, the token outputs
for fusion are still there, and the retrieval head adds no projection of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AltCLIPConfig, AltCLIPModel, SiglipConfig, SiglipModel

from lightning_modules.core import EncoderCore
from lightning_modules.heads import RetrievalHead

B, T, IMG = 3, 7, 32  # pairwise distinct: batch, tokens, image side
TINY_VIT = {"img_size": IMG, "patch_size": 8, "embed_dim": 40, "depth": 1, "num_heads": 2}
SIGLIP_EMBEDDING = {"pool": "last", "modules": ["text_model.head"]}
ALTCLIP_EMBEDDING = {"pool": "first", "modules": ["text_model.pre_LN", "text_model.transformation", "text_projection"]}


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    text = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "projection_size": 40,
    }
    vision = {
        "hidden_size": 40,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMG,
        "patch_size": 8,
    }
    path = tmp_path_factory.mktemp("siglip")
    SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def altclip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    text = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 40,
        "project_dim": 20,
    }
    vision = {
        "hidden_size": 40,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMG,
        "patch_size": 8,
    }
    path = tmp_path_factory.mktemp("altclip")
    # projection 512: the width of timm's OpenAI CLIP ViT-B/16 head, the image side of this pair
    AltCLIPModel(AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).save_pretrained(path)
    return path


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    ids = torch.randint(5, 99, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 5:] = 0  # one padded text
    pixels = torch.randint(0, 256, (B, 3, IMG, IMG), dtype=torch.uint8)
    return ids, mask, pixels


def _normalised(core: EncoderCore, pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float() - core.pixel_mean) / core.pixel_std


def test_siglip_like_start_retrieves_with_its_own_pooling_and_head(siglip_dir: Path) -> None:
    core = EncoderCore(
        str(siglip_dir),
        "vit_base_patch16_siglip_256",
        vision_pretrained=False,
        fusion="fusion_transformer",
        text_tower="text_model",
        vision_kwargs=TINY_VIT,
        text_embedding=SIGLIP_EMBEDDING,
    ).eval()
    reference = SiglipModel.from_pretrained(siglip_dir).eval()
    ids, mask, pixels = _inputs()
    with torch.no_grad():
        own_text = reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output  # (B, 40)
        assert torch.allclose(core.embed_text(ids, mask), own_text, atol=1e-5)
        # timm's full forward = tokens -> attention pooling (map) -> head: the tower's own image embedding
        assert core.vision.global_pool == "map" and isinstance(core.vision.attn_pool, nn.Module)
        own_image = core.vision(_normalised(core, pixels))
        assert torch.allclose(core.embed_image(pixels), own_image, atol=1e-5)
        assert not torch.allclose(own_image, core.vision.forward_features(_normalised(core, pixels)).mean(1))
        # the token outputs for fusion are still there
        out = core.encode(ids, mask, pixels)
    n = (IMG // 8) ** 2
    assert out.tokens.shape == (B, n + T, core.hidden_size) and out.text_tokens.shape == (B, T, core.hidden_size)
    assert core.embed_dim == 40


def test_altclip_like_start_uses_its_text_projection_chain(altclip_dir: Path) -> None:
    core = EncoderCore(
        str(altclip_dir),
        "vit_base_patch16_clip_224.openai",
        vision_pretrained=False,
        text_tower="text_model.roberta",
        vision_kwargs=TINY_VIT,
        text_embedding=ALTCLIP_EMBEDDING,
        attn_implementation="eager",
    ).eval()
    reference = AltCLIPModel.from_pretrained(altclip_dir, attn_implementation="eager").eval()
    ids, mask, pixels = _inputs()
    with torch.no_grad():
        own_text = reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output  # (B, 512)
        assert torch.allclose(core.embed_text(ids, mask), own_text, atol=1e-5)
        assert core.vision.global_pool == "token" and core.vision.head.out_features == 512
        assert torch.allclose(core.embed_image(pixels), core.vision(_normalised(core, pixels)), atol=1e-5)
        # single-stream fusion still runs over the XLM-R tower's tokens at its own width
        out = core.encode(ids, mask, pixels)
    assert out.text_tokens.shape == (B, T, 32) and core.embed_dim == 512


def test_retrieval_head_scores_the_own_embeddings_without_a_projection(siglip_dir: Path) -> None:
    core = EncoderCore(
        str(siglip_dir),
        "vit_base_patch16_siglip_256",
        vision_pretrained=False,
        fusion="fusion_transformer",
        text_tower="text_model",
        vision_kwargs=TINY_VIT,
        text_embedding=SIGLIP_EMBEDDING,
    )
    head = RetrievalHead(core.hidden_size, own_embeddings=core.own_embeddings)
    assert [n for n, _ in head.named_parameters()] == ["logit_scale"]  # nothing random between towers and score
    ids, mask, pixels = _inputs()
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels,
        "image_ids": ["a", "b", "c"],
        "text_image_index": torch.arange(B),
    }
    out = head(core, batch)
    with torch.no_grad():
        assert torch.allclose(out.metric_inputs["text_emb"], F.normalize(core.embed_text(ids, mask), dim=-1), atol=1e-5)
        assert torch.allclose(out.metric_inputs["image_emb"], F.normalize(core.embed_image(pixels), dim=-1), atol=1e-5)
    out.loss.backward()
    # training the dual encoder reaches the towers' own heads, not the fusion path's image projection
    for module in core.embedding_heads():
        assert all(p.grad is not None for p in module.parameters())
    assert core.image_proj[0].weight.grad is None


def test_default_core_keeps_the_projecting_head(tiny_model: dict[str, str]) -> None:
    core = EncoderCore(tiny_model["text_model"], tiny_model["vision_model"], pretrained=False)
    assert not core.own_embeddings and core.embedding_heads() == [] and core.embed_dim == core.hidden_size
    head = RetrievalHead(core.hidden_size, own_embeddings=core.own_embeddings)
    assert isinstance(head.text_proj, nn.Linear) and isinstance(head.image_proj, nn.Linear)


def test_bad_text_embedding_names_the_key(siglip_dir: Path) -> None:
    with pytest.raises(ValueError, match="model.core.text_embedding.modules.*text_model.nope"):
        EncoderCore(
            str(siglip_dir),
            None,
            pretrained=True,
            text_tower="text_model",
            text_embedding={"pool": "last", "modules": ["text_model.nope"]},
        )
    with pytest.raises(ValueError, match="pool: first\\|last"):
        EncoderCore(
            str(siglip_dir),
            None,
            pretrained=True,
            text_tower="text_model",
            text_embedding={"pool": "mean", "modules": ["text_model.head"]},
        )


def test_vision_check_refuses_an_image_tower_the_text_was_not_aligned_with(siglip_dir: Path, tmp_path: Path) -> None:
    """The timm tower comes from a local file (model.core.vision_checkpoint): random weights are refused, the
    checkpoint's own patch embedding is accepted."""
    import timm
    from safetensors.torch import save_file

    spec = {**SIGLIP_EMBEDDING, "vision_check": "vision_model.embeddings.patch_embedding.weight"}
    kwargs = {
        "fusion": "fusion_transformer",
        "text_tower": "text_model",
        "vision_kwargs": TINY_VIT,
        "text_embedding": spec,
    }
    tower = timm.create_model("vit_base_patch16_siglip_256", **TINY_VIT)
    save_file(tower.state_dict(), tmp_path / "random.safetensors")
    with pytest.raises(ValueError, match="is not the image tower .* was aligned with"):
        EncoderCore(
            str(siglip_dir),
            "vit_base_patch16_siglip_256",
            vision_checkpoint=str(tmp_path / "random.safetensors"),
            **kwargs,
        )
    aligned = SiglipModel.from_pretrained(siglip_dir).vision_model.embeddings.patch_embedding.weight.detach()
    tower.patch_embed.proj.weight.data.copy_(aligned)
    save_file(tower.state_dict(), tmp_path / "aligned.safetensors")
    core = EncoderCore(
        str(siglip_dir),
        "vit_base_patch16_siglip_256",
        vision_checkpoint=str(tmp_path / "aligned.safetensors"),
        **kwargs,
    )
    assert core.own_embeddings and torch.equal(core.vision.patch_embed.proj.weight, aligned)


def test_siglip_pad_to_reproduces_its_fixed_length_unmasked_text_encoding(siglip_dir: Path) -> None:
    """SigLIP's texts are padded to a fixed length with no attention mask and pooled at the last position."""
    core = EncoderCore(
        str(siglip_dir),
        None,
        pretrained=True,
        text_tower="text_model",
        text_embedding={**SIGLIP_EMBEDDING, "pad_to": 12},
    ).eval()
    reference = SiglipModel.from_pretrained(siglip_dir).eval()
    ids, mask, _ = _inputs()
    pad = reference.config.text_config.pad_token_id
    fixed = torch.full((B, 12), pad, dtype=torch.long)
    fixed[:, :T] = ids.masked_fill(mask == 0, pad)
    with torch.no_grad():
        own = reference.get_text_features(input_ids=fixed).pooler_output
        assert torch.allclose(core.embed_text(ids, mask), own, atol=1e-5)
        assert not torch.allclose(core.embed_text(ids, mask), reference.get_text_features(input_ids=ids).pooler_output)


def _tiny_siglip_with_tokenizer(root: Path, tokenizer_dir: Path) -> tuple[str, str]:
    """A random SigLIP-like checkpoint using the demo tokenizer, and a tiny timm SigLIP ViT spec (vision.json)."""
    import json
    import shutil

    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    text = {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "projection_size": 40,
    }
    vision = {
        "hidden_size": 40,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMG,
        "patch_size": 8,
    }
    SiglipConfig(text_config=text, vision_config=vision).save_pretrained(root / "siglip")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, root / "siglip" / name)
    (root / "vision.json").write_text(json.dumps({"model_name": "vit_base_patch16_siglip_256", "kwargs": TINY_VIT}))
    return str(root / "siglip"), str(root / "vision.json")


def test_start_phase_trains_own_heads_and_fusion_and_nothing_idle(tmp_path: Path, demo_dir: Path) -> None:
    """Captions (dual encoder) + image-text matching (fusion) on img2dataset shards: every trainable parameter of
    the two-tower core gets a gradient (DDP needs it), including SigLIP's own heads, the fuser and image_proj; a
    run without a dual-encoder task freezes the own heads instead."""
    from conftest import vision_config
    from test_img2dataset import write_img2dataset

    from datamodules.datamodule import TaskData, TransferDataModule
    from lightning_modules.module import CoreConfig, TransferModule
    from shards.converters import CONVERTERS

    text_model, vision_model = _tiny_siglip_with_tokenizer(tmp_path, demo_dir / "text_model")
    write_img2dataset(
        tmp_path / "cc",
        [
            {
                "shard": "00000",
                "key": f"{i:09d}",
                "url": f"https://e.org/{i}.jpg",
                "caption": f"a red circle {i}",
                "extra": {},
            }
            for i in range(16)
        ],
    )
    CONVERTERS["img2dataset"](src=tmp_path / "cc", out=tmp_path / "idx", exclude=["none"])
    tasks = [TaskData(name=n, shards=str(tmp_path / "idx"), train_split="train") for n in ("captions", "captions_itm")]
    dm = TransferDataModule(
        tasks,
        tokenizer=text_model,
        image_config=vision_config(vision_model),
        batch_size=5,
        num_workers=0,
        shuffle_buffer=4,
    )
    core = CoreConfig(
        text_model,
        vision_model,
        text_tower="text_model",
        text_kwargs={},
        pretrained=False,
        fusion="fusion_transformer",
        text_embedding=SIGLIP_EMBEDDING,
    )
    model = TransferModule(core, tasks=dm.task_info, max_steps=2)
    loaders = dm.train_dataloader().loaders
    for name in ("captions", "captions_itm"):
        model.training_step(next(iter(loaders[name])), 0).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    idle = sorted(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)
    assert not idle, idle
    assert {"core.text.head.weight", "core.fuser.layers.0.linear1.weight", "core.image_proj.0.weight"} <= trainable
    assert any(n.startswith("core.vision.attn_pool") for n in trainable)
    no_dual = {**dm.task_info, "captions": {**dm.task_info["captions"], "train": False}}
    itm_only = TransferModule(core, max_steps=2, tasks=no_dual)
    frozen = {n for n, p in itm_only.named_parameters() if not p.requires_grad}
    assert "core.text.head.weight" in frozen and any(n.startswith("core.vision.attn_pool") for n in frozen)


def test_vision_check_reads_conv_and_flattened_patch_embeddings() -> None:
    from types import SimpleNamespace

    from lightning_modules.core import _check_aligned_image_tower

    conv = torch.randn(40, 3, 8, 8)  # timm: (D, C, P, P)
    vision = SimpleNamespace(patch_embed=SimpleNamespace(proj=SimpleNamespace(weight=conv)))
    _check_aligned_image_tower(conv.clone(), vision, "vit", "siglip")  # HF SigLIP: the same conv
    _check_aligned_image_tower(conv.permute(0, 2, 3, 1).reshape(40, -1), vision, "vit", "siglip2")  # NaFlex linear
    with pytest.raises(ValueError, match="'vit' is not the image tower 'siglip2' was aligned with"):
        _check_aligned_image_tower(torch.randn(40, 192), vision, "vit", "siglip2")  # another tower
