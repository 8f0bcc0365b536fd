"""Starting a phase from an earlier phase's checkpoint (``init_from``), kept apart from resuming (``ckpt_path``).

Loading never executes pickle code (``torch.load(weights_only=True)``), fails on any shape mismatch, and
reports the exact missing and unexpected keys: only heads that are new in this phase may be missing.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class InitReport:
    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    parent_hparams: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"init_from {self.path}: loaded {self.loaded} tensors; missing (fresh) keys: {self.missing or 'none'}; "
            f"unexpected keys: {self.unexpected or 'none'}"
        )


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict, loaded without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from={path}: no such file. Point it at an earlier phase's checkpoint.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"model.init_from={path} refuses to load: the file needs pickle code execution ({err}). "
            "Only tensors and plain values are accepted; re-save the weights with torch.save(state_dict)."
        ) from None


def _scope_prefixes(scope: str | list[str], module: nn.Module, parent_keys: set[str]) -> list[str]:
    heads = getattr(module, "heads", {})
    if scope == "core":
        return ["core."]
    if scope == "all":
        return ["core.", "heads."]
    if isinstance(scope, str):
        scope = [scope]
    for name in scope:
        if name not in heads:
            raise ValueError(f"model.init_scope names head {name!r}, which this run does not have; "
                             f"valid: core, all, or a list of {sorted(heads)}")  # fmt: skip
        if not any(k.startswith(f"heads.{name}.") for k in parent_keys):
            raise ValueError(f"model.init_scope names head {name!r}, which the checkpoint does not have")
    return ["core.", *[f"heads.{name}." for name in scope]]


def load_init_checkpoint(module: nn.Module, path: str | Path, scope: str | list[str] = "core") -> InitReport:
    """Copy the scoped tensors of ``path`` into ``module``; see the module docstring for the rules."""
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    prefixes = _scope_prefixes(scope, module, set(state))
    chosen = {k: v for k, v in state.items() if k.startswith(tuple(prefixes))}
    own = module.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in chosen.items() if k in own and own[k].shape != v.shape]  # fmt: skip
    if mismatched:
        raise ValueError(f"model.init_from={path}: shape mismatch for {len(mismatched)} tensors: {mismatched[:10]}")
    result = module.load_state_dict(chosen, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(tuple(prefixes))]
    if missing:
        raise ValueError(f"model.init_from={path} lacks {len(missing)} tensors of the carried-over scope "
                         f"{scope!r}: {missing[:10]} — is it a checkpoint of the same model?")  # fmt: skip
    if result.unexpected_keys:
        raise ValueError(f"model.init_from={path} has tensors this model does not: {result.unexpected_keys[:10]}")
    fresh = sorted({k for k in own if not k.startswith(tuple(prefixes))})
    return InitReport(str(path), len(chosen), fresh, [], dict(ckpt.get("hyper_parameters", {})))


def lineage(path: str | Path | None, parent_hparams: dict[str, Any] | None, phase: str) -> dict[str, Any]:
    """Where this phase's weights came from: stored in its checkpoints and in the W&B run config."""
    if path is None:
        return {"phase": phase, "parent": None}
    parent = dict(parent_hparams or {})
    tasks = parent.pop("tasks", None) or {}
    return {
        "phase": phase,
        "parent": {
            "path": str(path),
            "sha256": sha256_file(path),
            "phase": parent.get("phase"),
            "tasks": sorted(tasks),
            "config": parent,
        },  # fmt: skip
    }
