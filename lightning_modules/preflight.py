"""The model's half of the preflight (``train.py`` runs it after the data half, ``datamodules.preflight``).

- ``model.init_scope`` names heads this run has, and heads carried over from ``model.init_from`` were
  trained with this run's label vocabulary (MNLI → XNLI keep one label order);
- ``data.max_length`` (+ image tokens for single-stream fusion) fits the text model's position limit.

Each check returns ``(errors, info)`` lines; every error names the config key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.catalogue import FAMILIES, get_task
from lightning_modules.checkpoints import read_checkpoint

# Models whose position ids start after the padding index (RoBERTa family: padding_idx + 1 = 2).
POSITION_OFFSET_MODEL_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer"})

Lines = tuple[list[str], list[str]]


def model_checks(model: Any, max_length: int) -> Lines:
    """Every model-side problem of a ``TransferModule`` about to train on ``max_length``-token texts."""
    errors, info = init_scope_errors(model), []
    position_errors, position_info = positions(model, max_length)
    return errors + position_errors, info + position_info


def _head_labels(model: Any) -> dict[str, list[str]]:
    return {get_task(task).head: list(info.get("labels", [])) for task, info in model.task_info.items()}


def init_scope_errors(model: Any) -> list[str]:
    """``init_scope`` names existing heads; carried heads keep the parent's label vocabulary."""
    hp, errors = model.hparams, []
    if not hp.get("init_from"):
        return errors
    scope, heads = hp.init_scope, sorted(model.heads)
    names = [] if scope == "core" else heads if scope == "all" else [scope] if isinstance(scope, str) else scope
    unknown = [n for n in names if n not in heads]
    for name in unknown:
        hint = " (a head family: heads are named by the catalogue's `head` field)" if name in FAMILIES else ""
        errors.append(
            f"model.init_scope names head {name!r}{hint}, which this run does not have; valid: "
            f"core, all, or a list of {heads}"
        )
    if unknown or not names:
        return errors
    if not Path(hp.init_from).is_file():
        return [f"model.init_from={hp.init_from}: no such file; point it at an earlier phase's checkpoint"]
    labels = _head_labels(model)
    parent_tasks = read_checkpoint(hp.init_from).get("hyper_parameters", {}).get("tasks") or {}
    for task, info in parent_tasks.items():
        head = get_task(task).head
        if head in names and head in labels and list(info.get("labels", [])) != labels[head]:
            errors.append(
                f"model.init_scope carries head {head!r}, but {task} in model.init_from was trained "
                "with another label order/vocabulary than this run; rebuild the shards with the "
                "parent's vocabulary or use init_scope: core"
            )
    return errors


def positions(model: Any, max_length: int) -> Lines:
    """``max_length`` text tokens + the image tokens prepended to them fit the position embeddings."""
    config = model.core.text.config
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return [], []
    offset = config.pad_token_id + 1 if config.model_type in POSITION_OFFSET_MODEL_TYPES else 0
    image_tokens = _image_tokens(model)
    need = max_length + image_tokens
    errors = []
    if need > limit - offset:
        errors.append(
            f"data.max_length={max_length} + {image_tokens} image tokens needs {need} positions but the text "
            f"model has {limit - offset} (max_position_embeddings {limit} - offset {offset}); lower data.max_length "
            f"to {(limit - offset - image_tokens) // 8 * 8}"  # a multiple of 8 (contracts/ranges.py)
        )
    return errors, [f"positions: {need} of {limit - offset} used ({image_tokens} image tokens)"]


def _image_tokens(model: Any) -> int:
    """Image tokens prepended to the text (single-stream fusion with an image task), else 0."""
    vision = model.core.vision
    if vision is None or model.core.fusion != "single_stream":
        return 0
    if not any(spec.modality != "text" for spec in model.specs.values()):
        return 0
    return model.core.num_image_tokens  # ViT tokens or a CNN's flattened feature map
