"""Starting a phase from an earlier phase's checkpoint (``init_from``), kept apart from resuming (``ckpt_path``).

Loading never executes pickle code (``torch.load(weights_only=True)``), fails on any shape mismatch, and
reports the exact missing and unexpected keys: only heads that are new in this phase may be missing.

``init_scope`` says what is carried over: ``core`` (the encoder core; every head starts fresh), ``all`` (the core
and every head the checkpoint shares with this run; heads only this run has start fresh) or a list of head names
(the core and those heads; each must exist on both sides). Heads of the checkpoint outside the scope are left
behind and named in the report.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contracts.files import sha256_file


@dataclass
class InitReport:
    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_heads: list[str] = field(default_factory=list)  # heads of the checkpoint left behind (out of scope)
    parent_hparams: dict[str, Any] = field(default_factory=dict)
    parent_lineage: dict[str, Any] = field(default_factory=dict)
    parent_trained_on: list[dict[str, Any]] | None = None  # the checkpoint's protocol record: what its run trained on
    parent_weights: dict[str, Any] = field(default_factory=dict)  # which weights: ``checkpoint_weights``

    def summary(self) -> str:
        return (
            f"init_from {self.path}: loaded {self.loaded} tensors; missing (fresh) keys: {self.missing or 'none'}; "
            f"unexpected keys: {self.unexpected or 'none'}; checkpoint heads not carried over: "
            f"{self.dropped_heads or 'none'}"
        )


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


def _head_names(keys: set[str] | dict[str, Any]) -> set[str]:
    return {k.split(".")[1] for k in keys if k.startswith("heads.")}


def _carried_heads(scope: str | list[str], own_heads: set[str], parent_heads: set[str]) -> list[str]:
    """The heads whose tensors ``scope`` carries over; a named head that either side lacks is an error."""
    if scope == "core":
        return []
    if scope == "all":
        return sorted(own_heads & parent_heads)  # heads only this run has are new: they stay fresh
    names = [scope] if isinstance(scope, str) else list(scope)
    for name in names:
        if name not in own_heads:
            raise ValueError(
                f"model.init_scope names head {name!r}, which this run does not have; "
                f"valid: core, all, or a list of {sorted(own_heads)}"
            )
        if name not in parent_heads:
            raise ValueError(
                f"model.init_scope names head {name!r}, which the checkpoint does not have; "
                f"it has {sorted(parent_heads)}"
            )
    return names


def load_init_checkpoint(module: nn.Module, path: str | Path, scope: str | list[str] = "core") -> InitReport:
    """Copy the scoped tensors of ``path`` into ``module``; see the module docstring for the rules."""
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    own = module.state_dict()
    heads = _carried_heads(scope, _head_names(own), _head_names(state))
    prefixes = ("core.", *[f"heads.{name}." for name in heads])
    chosen = {k: v for k, v in state.items() if k.startswith(prefixes)}
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in chosen.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"model.init_from={path}: shape mismatch for {len(mismatched)} tensors: {mismatched[:10]}")
    result = module.load_state_dict(chosen, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(prefixes)]
    if missing:
        raise ValueError(
            f"model.init_from={path} lacks {len(missing)} tensors of the carried-over scope "
            f"{scope!r}: {missing[:10]} — is it a checkpoint of the same model?"
        )
    if result.unexpected_keys:
        raise ValueError(f"model.init_from={path} has tensors this model does not: {result.unexpected_keys[:10]}")
    fresh = sorted(k for k in own if not k.startswith(prefixes))
    dropped = sorted(_head_names(state) - set(heads))
    return InitReport(
        str(path),
        len(chosen),
        fresh,
        [],
        dropped,
        dict(ckpt.get("hyper_parameters", {})),
        dict(ckpt.get("lineage") or {}),
        (ckpt.get("protocol") or {}).get("trained_on"),
        checkpoint_weights(ckpt, path),
    )


def checkpoint_weights(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Which weights a checkpoint file holds: its global ``step``, ``final`` (the weights of its fit's last step,
    saved by ``callbacks.FinalCheckpoint``) and ``selected`` (a checkpoint callback chose it on a finite score)."""
    from lightning_modules.protocol import selected_by

    return {
        "step": ckpt.get("global_step"),
        "final": bool((ckpt.get("protocol") or {}).get("final")),
        "selected": selected_by(ckpt, path) is not None,
    }


def lineage(
    path: str | Path | None,
    parent_hparams: dict[str, Any] | None,
    phase: str,
    parent_lineage: dict[str, Any] | None = None,
    parent_trained_on: list[dict[str, Any]] | None = None,
    parent_weights: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Where this phase's weights came from: stored in its checkpoints and in the W&B run config.

    ``parent.lineage`` is the parent checkpoint's own lineage, so a chain start -> intermediate -> target
    stays traceable from its last checkpoint; ``parent.trained_on`` is what the parent's run trained on (task,
    split, languages: its protocol record), so a test report can tell when an earlier phase broke zero-shot;
    ``parent.step``, ``parent.final`` and ``parent.selected`` say which of the parent's weights the file holds
    (``checkpoint_weights``: its final weights, its selected best, or neither).
    """
    if path is None:
        return {"phase": phase, "parent": None}
    parent = dict(parent_hparams or {})
    tasks = parent.pop("tasks", None) or {}
    return {
        "phase": phase,
        "parent": {
            "path": str(path),
            "sha256": sha256_file(path),
            **{"step": None, "final": None, "selected": None, **(parent_weights or {})},
            "phase": parent.get("phase"),
            "tasks": sorted(tasks),
            "config": parent,
            "trained_on": parent_trained_on,
            "lineage": dict(parent_lineage or {}),
        },
    }


# what a finished run's checkpoints are still read for: init_from (state_dict, hyper_parameters, lineage, protocol,
# global_step), re-evaluation (LightningCLI reads hyper_parameters; the module its lineage) and the protocol record
# (protocol.read_record: protocol, and the checkpoint callbacks' selection state below)
WEIGHTS_ONLY_KEYS = (
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    "datamodule_hyper_parameters",
    "datamodule_hparams_name",
    "lineage",
    "protocol",
    "global_step",
    "epoch",
    "pytorch-lightning_version",
)
SELECTION_STATE = ("monitor", "best_model_path", "best_model_score")  # what protocol.selected_by / read_record read


def weights_only(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without what only a resume reads: optimizer states, LR schedulers, loops, the datamodule's
    sampler position and the callbacks' state (bar the checkpoint callbacks' selection). Marked ``weights_only``."""
    kept = {key: ckpt[key] for key in WEIGHTS_ONLY_KEYS if key in ckpt}
    kept["callbacks"] = {
        key: {k: state[k] for k in SELECTION_STATE if k in state}
        for key, state in (ckpt.get("callbacks") or {}).items()
        if str(key).startswith("ModelCheckpoint")
    }
    kept["weights_only"] = True
    return kept


def is_weights_only(path: str | Path) -> bool:
    """Whether ``path`` was rewritten by ``keep_weights_only`` (tensors memory-mapped, not read)."""
    return bool(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("weights_only"))


def keep_weights_only(paths: list[str]) -> list[str]:
    """Rewrites each checkpoint of a finished fit weights-only (``weights_only``), atomically; returns them. A
    finished run is never resumed, so its optimizer state (2 of AdamW's ~3 parts) only costs disk."""
    from contracts.files import atomic_open

    done = []
    for path in dict.fromkeys(p for p in paths if p):
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not ckpt.get("weights_only"):
            with atomic_open(path, "wb") as f:
                torch.save(weights_only(ckpt), f)
        done.append(path)
    return done
