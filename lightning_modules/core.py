"""The encoder core: a Hugging Face multilingual text encoder + a timm vision backbone + their fusion.

The core keeps its weights across phases; heads are swapped. Its surface (all a head may use):

- ``hidden_size``: width of every vector it returns.
- ``encode(input_ids, attention_mask, pixel_values=None, layer=None) -> CoreOutput``: joint encoding of
  text and (optionally) one image per sample. ``tokens`` (B, N + T, D) are the image tokens followed by
  the text tokens; ``text_tokens`` (B, T, D) the text part only; ``pooled`` (B, D) the first text token.
  ``layer`` selects an earlier text layer's hidden states (sentence retrieval; 0 = embeddings).
- ``encode_pair(input_ids, attention_mask, pixel_values (B, 2, C, H, W)) -> (B, 2, D)``: each image of a
  pair encoded with the same text, pooled.
- ``encode_image(pixel_values) -> (B, D)``: the image alone (dual-encoder retrieval).
- ``embed_text(input_ids, attention_mask) -> (B, E)`` and ``embed_image(pixel_values) -> (B, E)``: the
  dual-encoder embeddings. With ``text_embedding`` set (an aligned two-tower start: SigLIP, AltCLIP) they are
  the towers' **own** pooled, projected outputs (timm's pooling + head, the checkpoint's text pooling +
  projection), ``E = embed_dim``; otherwise the first text token and the mean image token (``E = hidden_size``),
  for a head to project. ``own_embeddings`` says which.

Fusion ``single_stream`` (default) projects the image tokens to the text width and prepends them to the
text token embeddings; the multilingual transformer runs over both, so text-only and multimodal tasks
train the same transformer. ``fusion_transformer`` serves text models that cannot take ``inputs_embeds``
(e.g. SigLIP's text tower): both towers run alone and a small transformer runs over their outputs.

Vision backbones: a ViT-style model's tokens are used as they are; a CNN's final feature map (ResNet, ConvNeXt,
EfficientNet, ...) is flattened to H*W tokens of its pre-logits width. Weights: ``pretrained`` for both
towers, ``text_pretrained`` / ``vision_pretrained`` per tower, ``vision_checkpoint`` for a local timm file
(``lightning_modules/weights.py`` checks every source before anything is built). Once built, the core prints
where each tower's weights came from and how many tensors loaded (``load_report``); a pretrained load that
supplies under 90 % of a tower's tensors, or other shapes, is refused.

~490 lines: the core is one ``nn.Module`` with the encode surface every head uses and its two fusions; splitting
the fusions or the tower builders out would spread one object's invariants (token layout, type embeddings, the
two-tower start) over several files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.lazy import LazyModule
from lightning_modules.weights import (  # load_vision_spec lives there: the source check reads vision.json too
    TowerLoad,
    WeightSources,
    check_loaded_share,
    check_weight_sources,
    checked_timm_load,
    load_vision_spec,
    print_load_report,
    random_tower,
    timm_checkpoint_overlay,
)

timm = LazyModule("timm")  # imported when a vision tower is built (it pulls torchvision's model zoo)

Fusion = Literal["single_stream", "fusion_transformer"]
Pool = Literal["first", "last"]  # where a two-tower text embedding is read (model.core.text_embedding.pool)


@dataclass
class CoreOutput:
    tokens: torch.Tensor  # (B, N + T, D)
    mask: torch.Tensor  # (B, N + T)
    text_tokens: torch.Tensor  # (B, T, D)
    pooled: torch.Tensor  # (B, D)


def build_text_encoder(
    name: str, pretrained: bool, tower: str | None, attn_implementation: str, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """A Hugging Face encoder from a hub name or a local directory (random init unless ``pretrained``), and its
    load report: the checkpoint keys ``missing`` from it, ``unexpected`` by the model, shape-``mismatched``, and
    the model's ``total`` tensors. A load that supplies under 90 % of them is refused (``check_loaded_share``)."""
    from transformers import AutoConfig, AutoModel

    kwargs = {"attn_implementation": attn_implementation, **kwargs}
    report: dict[str, Any] = {"missing": [], "unexpected": [], "mismatched": [], "total": 0}
    if pretrained:
        model, info = AutoModel.from_pretrained(name, output_loading_info=True, **kwargs)
        model.train()  # from_pretrained returns eval mode (no dropout), and Lightning keeps the modes it finds
        report = {k: sorted(map(str, info[f"{k}_keys"])) for k in ("missing", "unexpected", "mismatched")}
        report["total"] = total = len(model.state_dict())
        check_loaded_share(
            "model.core.text_model",
            name,
            f"the text model ({type(model).__name__})",
            total - len(report["missing"]),
            total,
            report["missing"],
            report["unexpected"],
        )
    else:
        model = AutoModel.from_config(AutoConfig.from_pretrained(name), **kwargs)
    if tower is not None:
        if not hasattr(model, tower):
            raise ValueError(f"model.core.text_tower={tower!r}: {type(model).__name__} has no such attribute.")
        model = getattr(model, tower)
    return model, report


def build_vision_encoder(
    name: str, pretrained: bool, kwargs: dict[str, Any], checkpoint: str | Path | None = None, keep_head: bool = False
) -> nn.Module:
    """A timm backbone returning patch tokens or a feature map; ``name`` may also be a ``vision.json`` file.

    ``checkpoint`` (a weights file or timm model directory) goes through timm's own pretrained-file mechanism
    (``pretrained_cfg_overlay`` ``file``), so timm's key filtering (classifier dropped) and resizing (position
    embeddings to ``img_size``) apply as they do for hub weights. ``keep_head``: keep timm's own pooling and
    head (SigLIP's attention pooling, CLIP's projection) for the two-tower embedding path (``embed_image``).
    A pretrained load is checked (``weights.checked_timm_load``): under 90 % of the tensors, or other shapes, or an
    unreadable file, is refused naming the key and the file.
    """
    return build_vision_tower(name, pretrained, kwargs, checkpoint, keep_head)[0]


def build_vision_tower(
    name: str, pretrained: bool, kwargs: dict[str, Any], checkpoint: str | Path | None = None, keep_head: bool = False
) -> tuple[nn.Module, TowerLoad | None]:
    """``build_vision_encoder`` and what its pretrained load supplied (None: nothing was loaded)."""
    if name.endswith(".json"):
        name, file_kwargs = load_vision_spec(name)
        kwargs = {**file_kwargs, **kwargs}
    kwargs = dict(kwargs)
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if "img_size" in kwargs:  # keep timm's data config (input size) true to the size the model is built for
        size = kwargs["img_size"]
        input_size = (kwargs.get("in_chans", 3), *((size, size) if isinstance(size, int) else size))
        given = overlay.setdefault("input_size", input_size)  # a user overlay never drops it
        if tuple(given) != input_size:
            raise ValueError(
                f"model.core.vision_kwargs: pretrained_cfg_overlay.input_size={tuple(given)} contradicts "
                f"img_size={size}: the images would not fit the model; drop one of the two"
            )
    if checkpoint is not None:
        overlay.update(timm_checkpoint_overlay(checkpoint))
    if overlay:
        kwargs["pretrained_cfg_overlay"] = overlay
    pretrained = pretrained or checkpoint is not None
    if not keep_head:
        # global_pool="" : heads pool for themselves, so no timm pooling module sits unused (DDP needs every
        # trainable parameter to receive a gradient).
        kwargs = {"num_classes": 0, "global_pool": "", **kwargs}
    key = "model.core.vision_checkpoint" if checkpoint is not None else "model.core.vision_model"
    with checked_timm_load(key) as loads:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return model, (loads[0] if loads else None)


def _submodule(model: nn.Module, path: str, key: str) -> nn.Module:
    """``model.<path>`` for a dotted path (``text_model.head``), or an error naming the config key."""
    try:
        module = model.get_submodule(path)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{key}: {type(model).__name__} has no submodule {path!r}")
    return module


def build_text_tower_with_embedding(
    name: str,
    pretrained: bool,
    tower: str | None,
    attn_implementation: str,
    kwargs: dict[str, Any],
    modules: Sequence[str],
    vision_check: str | None = None,
) -> tuple[nn.Module, dict[str, Any], nn.ModuleList, torch.Tensor | None]:
    """The text tower of a two-tower checkpoint (with its load report) plus the modules that turn its pooled token
    into the checkpoint's own text embedding; paths (``tower`` too) are dotted and relative to the whole checkpoint.

    SigLIP: tower ``text_model``, modules ``[text_model.head]``. AltCLIP: tower ``text_model.roberta``, modules
    ``[text_model.pre_LN, text_model.transformation, text_projection]`` (its ``get_text_features``).
    ``vision_check`` names the checkpoint's own patch-embedding weight, returned (a copy) so the timm image tower
    can be checked against it: the rest of the checkpoint (its image tower) is dropped.
    """
    full, report = build_text_encoder(name, pretrained, None, attn_implementation, kwargs)
    text = _submodule(full, tower, "model.core.text_tower") if tower else full
    chain = nn.ModuleList(_submodule(full, path, "model.core.text_embedding.modules") for path in modules)
    patches = None
    if vision_check:
        try:
            patches = full.get_parameter(vision_check).detach().clone()
        except AttributeError:
            raise ValueError(
                f"model.core.text_embedding.vision_check: {type(full).__name__} has no parameter {vision_check!r}"
            ) from None
    return text, report, chain, patches


def _check_aligned_image_tower(patches: torch.Tensor, vision: nn.Module, vision_model: str, text_model: str) -> None:
    """The timm image tower must be the one the text tower was aligned with: same patch-embedding weights."""
    own = getattr(getattr(getattr(vision, "patch_embed", None), "proj", None), "weight", None)  # (D, C, P, P)
    ref = None if own is None or own.numel() != patches.numel() else own.detach().float()
    candidates = []
    if ref is not None:
        candidates.append(patches.reshape(ref.shape))  # a conv patch embedding, as timm's
        if ref.ndim == 4:  # a linear one over flattened (P, P, C) patches (SigLIP 2 NaFlex)
            d, c, p, q = ref.shape
            candidates.append(patches.reshape(d, p, q, c).permute(0, 3, 1, 2))
    if not any(torch.allclose(ref, x.float(), atol=1e-3, rtol=1e-3) for x in candidates):
        raise ValueError(
            f"model.core.vision_model={vision_model!r} is not the image tower {text_model!r} was aligned with (its "
            "patch embedding differs from the checkpoint's model.core.text_embedding.vision_check): retrieval through "
            "the own embeddings would compare unaligned spaces. Name the matching timm weights, or drop vision_check."
        )


def vision_data_config(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """timm's data config (input size, mean, std, interpolation, crop) without building weights."""
    with torch.device("meta"):
        model = build_vision_encoder(name, pretrained=False, kwargs=kwargs)
    return timm.data.resolve_model_data_config(model)


# Families whose forward_features the core turns into tokens; anything else is refused when the core is built.
WORKING_BACKBONES = (
    "tokens (B, N, C): ViT, DeiT (not distilled), EVA, SigLIP, BEiT, LeViT, Hiera; feature maps (B, C, H, W) "
    "flattened to H*W tokens: ResNet, ConvNeXt, EfficientNet, RegNet, MobileNetV3, MaxViT, CoAtNet, FastViT, "
    "DenseNet, NFNet; NHWC maps: Swin"
)


def vision_width(model: nn.Module) -> int:
    """Channels of the backbone's tokens: timm's pre-logits width (MobileNetV3's conv head), else num_features."""
    return getattr(model, "head_hidden_size", None) or model.num_features


def backbone_tokens(model: nn.Module, pixel_values: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """(B, C, H, W) images -> (B, N, vision_width) tokens: ViT-style tokens as they are, a CNN map flattened.

    ``forward_head(pre_logits=True)`` runs too: with ``global_pool=""`` it keeps every position and applies the
    parts of the head that belong to the features (ConvNeXt's final norm), so no parameter sits unused (DDP)."""
    feats = model.forward_head(model.forward_features(pixel_values), pre_logits=True)
    if feats.ndim == 4 and output_fmt == "NHWC":
        return feats.flatten(1, 2)  # (B, H, W, C) -> (B, H*W, C)
    if feats.ndim == 4:
        return feats.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
    return feats


def vision_token_count(name: str, kwargs: dict[str, Any]) -> int:
    """Image tokens the backbone yields at its data config's input size (a meta-device forward: no compute).

    Raises ``ValueError`` naming what works when its output is neither tokens nor a feature map whose channels
    are ``vision_width`` (the width ``image_proj`` is built for)."""
    try:
        with torch.device("meta"):
            model = build_vision_encoder(name, pretrained=False, kwargs=kwargs)
            size = timm.data.resolve_model_data_config(model)["input_size"]
            feats = backbone_tokens(model, torch.empty(1, *size), getattr(model, "output_fmt", "NCHW"))
        width = vision_width(model)
        problem = None if feats.ndim == 3 and feats.shape[-1] == width else f"tokens of shape {tuple(feats.shape)}"
    except (AssertionError, RuntimeError, TypeError, AttributeError) as err:  # timm refuses global_pool="" etc.
        problem, width = f"{type(err).__name__}: {err}", None
    if problem:
        raise ValueError(
            f"model.core.vision_model={name!r} cannot give the core image tokens ({problem}; width "
            f"{width}). Backbones that work: {WORKING_BACKBONES}"
        )
    return feats.shape[1]


class EncoderCore(nn.Module):
    """Text tower + vision tower + fusion; see the module docstring for the surface heads use."""

    def __init__(
        self,
        text_model: str,
        vision_model: str | None,
        *,
        pretrained: bool = True,
        fusion: Fusion = "single_stream",
        text_tower: str | None = None,
        text_drop: Sequence[str] = (),
        text_kwargs: dict[str, Any] | None = None,
        vision_kwargs: dict[str, Any] | None = None,
        attn_implementation: str = "sdpa",
        fusion_layers: int = 2,
        text_pretrained: bool | None = None,
        vision_pretrained: bool | None = None,
        vision_checkpoint: str | None = None,
        text_embedding: dict[str, Any] | None = None,
    ) -> None:
        """See ``module.CoreConfig`` for the arguments; ``text_pretrained`` / ``vision_pretrained`` override
        ``pretrained`` per tower and ``vision_checkpoint`` loads the vision tower from a local file."""
        super().__init__()
        self.sources = WeightSources.resolve(
            text_model,
            vision_model,
            vision_kwargs,
            pretrained=pretrained,
            text_pretrained=text_pretrained,
            vision_pretrained=vision_pretrained,
            vision_checkpoint=vision_checkpoint,
        )
        check_weight_sources(self.sources)  # a few lines of advice instead of a download trace
        self.load_report: list[TowerLoad] = []  # where each tower's weights came from: printed once built
        # tokens one image adds to the sequence (position budget: preflight); refuses unusable backbones early
        self.num_image_tokens = vision_token_count(vision_model, vision_kwargs or {}) if vision_model else 0
        self.own_embeddings = text_embedding is not None  # the towers' own pooling + projections (embed_*)
        if self.own_embeddings:
            self.text, self.text_load_report, self.text_embed, self.text_pool, aligned_patches = (
                self._own_text_embedding(text_model, text_tower, attn_implementation, text_kwargs or {}, text_embedding)
            )
            self.text_pad_to: int | None = text_embedding.get("pad_to")
        else:
            self.text, self.text_load_report = build_text_encoder(
                text_model, self.sources.text_pretrained, text_tower, attn_implementation, text_kwargs or {}
            )
        self.load_report.append(self._text_load(text_model, pretrained, text_pretrained))
        for name in text_drop or ():  # e.g. SigLIP's text projection: computed in forward, used by no head
            if not isinstance(getattr(self.text, name, None), nn.Module):
                raise ValueError(f"model.core.text_drop: {type(self.text).__name__} has no submodule {name!r}")
            setattr(self.text, name, nn.Identity())  # its parameters would never get a gradient (DDP)
        self.hidden_size: int = self.text.config.hidden_size
        self.fusion = fusion
        self.vision = None
        if vision_model:
            self.vision, loaded = build_vision_tower(
                vision_model,
                self.sources.vision_pretrained,
                vision_kwargs or {},
                vision_checkpoint,
                keep_head=self.own_embeddings,
            )
            self.load_report.append(loaded or self._unloaded_vision(vision_model, pretrained, vision_pretrained))
            if self.own_embeddings and aligned_patches is not None and self.sources.vision_pretrained:
                _check_aligned_image_tower(aligned_patches, self.vision, vision_model, text_model)
            self._vision_fmt: str = getattr(self.vision, "output_fmt", "NCHW")  # Swin: NHWC maps
            self.image_proj = nn.Sequential(
                nn.Linear(vision_width(self.vision), self.hidden_size), nn.LayerNorm(self.hidden_size)
            )
            self.image_type = nn.Parameter(torch.zeros(self.hidden_size))  # marks image tokens as such
            # uint8 pixels from the loader are normalised here, on the device (4× less to send from workers)
            data = timm.data.resolve_model_data_config(self.vision)
            self.register_buffer("pixel_mean", 255 * torch.tensor(data["mean"]).view(-1, 1, 1), persistent=False)
            self.register_buffer("pixel_std", 255 * torch.tensor(data["std"]).view(-1, 1, 1), persistent=False)
        if fusion == "fusion_transformer":
            heads = max(1, self.hidden_size // 64)
            layer = nn.TransformerEncoderLayer(self.hidden_size, heads, 4 * self.hidden_size, batch_first=True)
            self.fuser = nn.TransformerEncoder(layer, fusion_layers)
        elif fusion != "single_stream":
            raise ValueError(f"model.core.fusion={fusion!r}; valid: single_stream, fusion_transformer")
        print_load_report(self.load_report)

    def _text_load(self, text_model: str, pretrained: bool, text_pretrained: bool | None) -> TowerLoad:
        if not self.sources.text_pretrained:
            return random_tower("text", text_model, pretrained, text_pretrained)
        total = self.text_load_report["total"]
        return TowerLoad("text", text_model, total - len(self.text_load_report["missing"]), total)

    def _unloaded_vision(self, vision_model: str, pretrained: bool, vision_pretrained: bool | None) -> TowerLoad:
        if self.sources.vision_pretrained:  # timm loaded through its own method (a .npz file): no count
            return TowerLoad("vision", vision_model, note="loaded by the model's own method, tensors not counted")
        return random_tower("vision", vision_model, pretrained, vision_pretrained)

    # -- towers --------------------------------------------------------------------------------------
    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) image tokens at the text width; uint8 pixels are normalised first."""
        if self.vision is None:
            raise ValueError("This batch has images but model.core.vision_model is null: name a timm model.")
        if pixel_values.dtype == torch.uint8:
            pixel_values = (pixel_values.float() - self.pixel_mean) / self.pixel_std
        if self.own_embeddings:  # its forward_head pools (embed_image): the tokens are forward_features'
            feats = self.vision.forward_features(pixel_values)  # (B, N, Dv)
        else:
            feats = backbone_tokens(self.vision, pixel_values, self._vision_fmt)  # (B, N, Dv)
        return self.image_proj(feats) + self.image_type

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): mean of the image tokens."""
        return self.image_tokens(pixel_values).mean(dim=1)

    def _run_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix: torch.Tensor | None, layer: int | None
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "output_hidden_states": layer is not None}
        if prefix is None:
            out = self.text(input_ids=input_ids, **kwargs)
        else:
            embeds = torch.cat([prefix, self.text.get_input_embeddings()(input_ids)], dim=1)  # (B, N + T, D)
            out = self.text(inputs_embeds=embeds, **kwargs)
        return out.hidden_states[layer] if layer is not None else out.last_hidden_state

    # -- joint encoding ------------------------------------------------------------------------------
    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        layer: int | None = None,
    ) -> CoreOutput:
        """Text (B, T) and optionally one image (B, C, H, W) per sample -> ``CoreOutput``."""
        if pixel_values is None:
            hidden = self._run_text(input_ids, attention_mask, None, layer)  # (B, T, D)
            return CoreOutput(hidden, attention_mask, hidden, hidden[:, 0])
        img = self.image_tokens(pixel_values)  # (B, N, D)
        img_mask = attention_mask.new_ones(img.shape[:2])
        mask = torch.cat([img_mask, attention_mask], dim=1)  # (B, N + T)
        n = img.shape[1]
        if self.fusion == "single_stream":
            hidden = self._run_text(input_ids, mask, img, layer)  # (B, N + T, D)
        else:
            text = self._run_text(input_ids, attention_mask, None, layer)
            hidden = self.fuser(torch.cat([img, text], dim=1), src_key_padding_mask=mask == 0)
        return CoreOutput(hidden, mask, hidden[:, n:], hidden[:, n])

    def encode_pair(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor
    ) -> torch.Tensor:
        """Text (B, T) with two images (B, 2, C, H, W) -> pooled (B, 2, D), one per image."""
        b = pixel_values.shape[0]
        assert pixel_values.shape[1] == 2, f"image pairs need (B, 2, C, H, W), got {tuple(pixel_values.shape)}"
        ids = input_ids.repeat_interleave(2, dim=0)  # (2B, T): sample i -> rows 2i, 2i+1
        mask = attention_mask.repeat_interleave(2, dim=0)
        pooled = self.encode(ids, mask, pixel_values.flatten(0, 1)).pooled  # (2B, D)
        return pooled.view(b, 2, -1)

    # -- dual-encoder embeddings: the towers' own (aligned two-tower start) or the tokens, for a head to project --
    def _own_text_embedding(
        self, text_model: str, tower: str | None, attn: str, kwargs: dict[str, Any], spec: dict[str, Any]
    ) -> tuple[nn.Module, dict[str, Any], nn.ModuleList, Pool, torch.Tensor | None]:
        unknown = sorted(set(spec) - {"pool", "modules", "vision_check", "pad_to"})
        pool = spec.get("pool", "first")
        if unknown or pool not in ("first", "last") or not spec.get("modules"):
            raise ValueError(
                f"model.core.text_embedding={spec!r}: expected {{pool: first|last, modules: [dotted paths], optional "
                "vision_check: a dotted parameter path, optional pad_to: tokens}, e.g. SigLIP "
                "{pool: last, modules: [text_model.head]}; null uses the first token and a head's projection."
            )
        pretrained = self.sources.text_pretrained
        check = spec.get("vision_check") if pretrained else None  # random towers (tests, demo) have nothing to check
        text, report, chain, patches = build_text_tower_with_embedding(
            text_model, pretrained, tower, attn, kwargs, spec["modules"], check
        )
        return text, report, chain, pool, patches

    @property
    def embed_dim(self) -> int:
        """Width of ``embed_text`` / ``embed_image``."""
        if not self.own_embeddings:
            return self.hidden_size
        linears = [m for m in self.text_embed.modules() if isinstance(m, nn.Linear)]
        return linears[-1].out_features if linears else self.hidden_size

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, E): the checkpoint's own text embedding, or the first text token (``pooled``)."""
        if not self.own_embeddings:
            return self.encode(input_ids, attention_mask).pooled
        if self.text_pad_to:  # SigLIP: texts padded to 64 tokens, no attention mask, pooled at position 64 (a pad)
            pad = self.text_pad_to - input_ids.shape[1]
            assert pad >= 0, f"texts of {input_ids.shape[1]} tokens exceed text_embedding.pad_to={self.text_pad_to}"
            input_ids = F.pad(
                input_ids.masked_fill(attention_mask == 0, self.text.config.pad_token_id),
                (0, pad),
                value=self.text.config.pad_token_id,
            )
            hidden = self.text(input_ids=input_ids).last_hidden_state  # (B, pad_to, D), as the checkpoint was trained
        else:
            hidden = self._run_text(input_ids, attention_mask, None, None)  # (B, T, D), the tower alone
        x = hidden[:, 0] if self.text_pool == "first" else hidden[:, -1]  # (B, D)
        for module in self.text_embed:
            x = module(x)
        return x

    def embed_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, E): timm's own pooling + head, or the mean image token (``encode_image``)."""
        if not self.own_embeddings:
            return self.encode_image(pixel_values)
        if pixel_values.dtype == torch.uint8:
            pixel_values = (pixel_values.float() - self.pixel_mean) / self.pixel_std
        return self.vision.forward_head(self.vision.forward_features(pixel_values))  # (B, N, Dv) -> (B, E)

    def embedding_heads(self) -> list[nn.Module]:
        """Modules only ``embed_text`` / ``embed_image`` use (nothing without ``text_embedding``): a run that
        trains no dual-encoder task freezes them, since no gradient would reach them (DDP)."""
        if not self.own_embeddings:
            return []
        names = ("attn_pool", "fc_norm", "head")  # timm's pooling and head (ViT: map pooling, CLIP projection)
        vision = [getattr(self.vision, n) for n in names if isinstance(getattr(self.vision, n, None), nn.Module)]
        return [*self.text_embed, *vision]

    # -- training switches ---------------------------------------------------------------------------
    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self.text.gradient_checkpointing_enable()
        elif getattr(self.text, "is_gradient_checkpointing", False):
            self.text.gradient_checkpointing_disable()
        if self.vision is not None and hasattr(self.vision, "set_grad_checkpointing"):
            self.vision.set_grad_checkpointing(enabled)

    def freeze(self, vision: bool = False, text_embeddings: bool = False, text_layers: int = 0) -> None:
        """Idempotent: every call sets ``requires_grad`` both ways, so a later phase can unfreeze."""
        for p in self.parameters():
            p.requires_grad_(True)
        if self.vision is not None:
            for p in self.vision.parameters():
                p.requires_grad_(not vision)
        for p in self.text.get_input_embeddings().parameters():
            p.requires_grad_(not text_embeddings)
        embeddings = getattr(self.text, "embeddings", None)
        if embeddings is not None:
            for p in embeddings.parameters():
                p.requires_grad_(not text_embeddings)
        if text_layers:
            layers = _text_layers(self.text)
            if text_layers > len(layers):
                raise ValueError(f"model.freezing.text_layers={text_layers} but the text model has {len(layers)}")
            for layer in layers[:text_layers]:
                for p in layer.parameters():
                    p.requires_grad_(False)


def _text_layers(text: nn.Module) -> nn.ModuleList:
    encoder = getattr(text, "encoder", None)
    layers = getattr(encoder, "layer", None) or getattr(encoder, "layers", None)
    if layers is None:
        raise ValueError(f"Cannot find the transformer layers of {type(text).__name__} (expected encoder.layer)")
    return layers
