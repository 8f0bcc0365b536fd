"""Where the core's pretrained weights come from, and whether they can be reached before anything is built.

A run names its weight sources in ``model.core.*``: ``pretrained`` switches both towers, ``text_pretrained`` and
``vision_pretrained`` override it per tower, and ``vision_checkpoint`` points the vision tower at a local file
or timm model directory (loaded through timm's own pretrained-file mechanism). ``WeightSources`` resolves
these once; ``weight_source_problems`` says, without downloading anything, which source cannot be reached:
a local path that does not exist, or a hub name that the Hugging Face cache does not hold while the hub is
offline or does not answer. Each problem is a few lines naming the model, the cache (``HF_HOME``), how to
pre-fetch it on a connected machine and the local-path alternative: printed instead of a download trace.

Once built, each tower says where its weights came from and how many of its tensors they supplied
(``TowerLoad``, printed by the core); a pretrained load that supplies fewer than ``MIN_LOADED_SHARE`` of a tower's
tensors, or tensors of other shapes, or a file that cannot be read as weights, is refused (``WeightLoadError``)
naming the key, the file and the counts. ``check_checkpoint_file`` refuses a truncated Lightning checkpoint
(``--ckpt_path``, ``model.init_from``) before anything is built.

Also here: the learning-rate check for pretrained cores and the quiet load of a masked-LM checkpoint whose
LM head may be missing (embedding models such as all-MiniLM-L6-v2 or multilingual-e5).

~500 lines: many short functions, each one check of one weight source with its own message (hub, local
directory, safetensors, timm file, Lightning checkpoint); they share the source descriptions and the report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from torch import nn

from lightning_modules.lazy import LazyModule

timm = LazyModule("timm")  # imported on first use (lightning_modules.lazy)
logger = logging.getLogger(__name__)

# A learning rate above this bound collapses a pretrained transformer to a constant prediction
# (demo_ve with a real text encoder: 34.5 in every language at 1e-3; 5e-5 trained).
PRETRAINED_LR_BOUND = 1e-4
# Weight files of a Hugging Face model (directory or hub snapshot), single or sharded.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# What timm's pretrained-file mechanism loads (timm.models.load_state_dict / load_state_dict_from_path).
TIMM_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".bin", ".pt")
SOURCE_KEYS = ("file", "url", "hf_hub_id", "state_dict")  # timm pretrained_cfg keys that say where weights are
# A pretrained load must supply at least this share of a tower's tensors: a ResNet file given to a ViT supplies none,
# and timm (non-strict once the classifier is dropped) would train a random ViT without a word.
MIN_LOADED_SHARE = 0.9


class WeightSourceError(RuntimeError):
    """A weight source cannot be reached; the message says what to do (printed without a traceback)."""


class WeightLoadError(ValueError):
    """Weights were reached but do not fit the tower, or cannot be read; the message names key, file and counts."""


@dataclass(frozen=True)
class WeightSources:
    """Which tower starts from pretrained weights, and from where."""

    text_model: str
    text_pretrained: bool
    vision_model: str | None = None
    vision_kwargs: Mapping[str, Any] = field(default_factory=dict)
    vision_pretrained: bool = False
    vision_checkpoint: str | None = None

    @classmethod
    def resolve(
        cls,
        text_model: str,
        vision_model: str | None = None,
        vision_kwargs: Mapping[str, Any] | None = None,
        *,
        pretrained: bool = True,
        text_pretrained: bool | None = None,
        vision_pretrained: bool | None = None,
        vision_checkpoint: str | None = None,
    ) -> WeightSources:
        """Per-tower switches override ``pretrained``; a ``vision_checkpoint`` means pretrained vision weights."""
        if vision_checkpoint is not None:
            if vision_model is None:
                raise ValueError(
                    f"model.core.vision_checkpoint={vision_checkpoint!r} but model.core.vision_model is "
                    "null: name the timm architecture the checkpoint belongs to"
                )
            if vision_pretrained is False:
                raise ValueError(
                    f"model.core.vision_checkpoint={vision_checkpoint!r} loads pretrained vision weights "
                    "but model.core.vision_pretrained=false: drop one of the two"
                )
            overlay = (vision_kwargs or {}).get("pretrained_cfg_overlay") or {}
            if any(overlay.get(k) for k in SOURCE_KEYS):
                raise ValueError(
                    "model.core.vision_checkpoint and model.core.vision_kwargs.pretrained_cfg_overlay "
                    "both name a weight source: keep model.core.vision_checkpoint only"
                )
        return cls(
            text_model=text_model,
            text_pretrained=pretrained if text_pretrained is None else text_pretrained,
            vision_model=vision_model,
            vision_kwargs=dict(vision_kwargs or {}),
            vision_pretrained=vision_model is not None
            and (vision_checkpoint is not None or (pretrained if vision_pretrained is None else vision_pretrained)),
            vision_checkpoint=vision_checkpoint,
        )

    @classmethod
    def from_config(cls, core: Mapping[str, Any]) -> WeightSources:
        """From the ``model.core`` section of a parsed run config (``module.CoreConfig``'s fields)."""
        return cls.resolve(
            core["text_model"],
            core.get("vision_model"),
            core.get("vision_kwargs"),
            pretrained=core.get("pretrained", True),
            text_pretrained=core.get("text_pretrained"),
            vision_pretrained=core.get("vision_pretrained"),
            vision_checkpoint=core.get("vision_checkpoint"),
        )

    @property
    def any_pretrained(self) -> bool:
        return self.text_pretrained or self.vision_pretrained


def load_vision_spec(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Reads a ``vision.json`` (``{"model_name": ..., "kwargs": {...}}``) as written by the demo world."""
    spec = json.loads(Path(path).read_text())
    return spec["model_name"], spec.get("kwargs", {})


def timm_checkpoint_overlay(path: str | Path) -> dict[str, str]:
    """timm ``pretrained_cfg_overlay`` entries that load ``path`` (a weights file, or a timm model directory)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return {"file": str(path), "source": "local-dir"}  # timm picks model.safetensors / pytorch_model.bin / ...
    return {"file": str(path)}


# -- reachability ---------------------------------------------------------------------------------------------
def check_weight_sources(sources: WeightSources) -> None:
    """Raises ``WeightSourceError`` listing every unreachable weight source (see the module docstring)."""
    problems = weight_source_problems(sources)
    if problems:
        raise WeightSourceError("\n".join(problems))


def weight_source_problems(sources: WeightSources) -> list[str]:
    """One block of lines per weight source that cannot be reached; empty when all can."""
    problems = [_text_problem(sources.text_model, sources.text_pretrained)]
    if sources.vision_model is not None:
        problems.append(_vision_problem(sources))
    return [p for p in problems if p]


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a separator is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _text_problem(name: str, pretrained: bool) -> str | None:
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            return (
                f"model.core.text_model={name!r}: this directory has no config.json, so it is not a Hugging Face model "
                "directory; write one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
            )
        if pretrained and not any((path / f).is_file() for f in HF_WEIGHT_FILES):
            return (
                f"model.core.text_model={name!r}: no weights in this directory (looked for "
                f"{', '.join(HF_WEIGHT_FILES)}); add them with model.save_pretrained(DIR), or set "
                "model.core.text_pretrained=false for random weights"
            )
        return None
    if _looks_like_path(name):
        return f"model.core.text_model={name!r}: no such directory (a local model directory or a Hugging Face hub name)"
    files = [("config.json",), HF_WEIGHT_FILES] if pretrained else [("config.json",)]
    if all(_cached(name, options) for options in files):
        return None
    why = _hub_unreachable(name)
    if why is None:
        return None
    if "/" in name:  # "org/name" is also a relative path: say that none exists here
        why += f"; no local directory {name!r} exists either"
    return _advice(
        f"model.core.text_model={name!r}",
        f"`hf download {name}`",
        why,
        "save it on a connected machine with AutoModel/AutoTokenizer.from_pretrained(NAME).save_pretrained(DIR), "
        "copy DIR here and set model.core.text_model=DIR",
        "model.core.text_pretrained=false" if pretrained else None,
    )


def _vision_problem(sources: WeightSources) -> str | None:
    name, kwargs = sources.vision_model, dict(sources.vision_kwargs)
    if name.endswith(".json"):
        if not Path(name).is_file():
            return f"model.core.vision_model={name!r}: no such vision spec file"
        name, file_kwargs = load_vision_spec(name)
        kwargs = {**file_kwargs, **kwargs}
    if sources.vision_checkpoint is not None:
        return _local_weights_problem("model.core.vision_checkpoint", sources.vision_checkpoint)
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if overlay.get("file"):
        return _local_weights_problem("model.core.vision_kwargs.pretrained_cfg_overlay.file", overlay["file"])
    if not sources.vision_pretrained:
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        if not timm.is_model(name):
            return f"model.core.vision_model={name!r} is not a timm model; `timm.list_models('vit_*')` lists them"
        return (
            f"model.core.vision_model={name!r}: timm knows no pretrained weights for it; give a local file with "
            "model.core.vision_checkpoint=PATH or set model.core.vision_pretrained=false"
        )
    where = f"model.core.vision_model={name!r}"
    if cfg.hf_hub_id:
        repo, fetch = cfg.hf_hub_id, f"`hf download {cfg.hf_hub_id}`"
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        if _cached(repo, files):
            return None
        why = _hub_unreachable(repo)
    elif cfg.url:
        cached = Path(torch.hub.get_dir(), "checkpoints", os.path.basename(cfg.url))
        if cached.is_file() or not hf_constants.is_offline_mode():
            return None  # a plain URL cannot be checked without fetching it; timm downloads it to this path
        fetch, why = f"`wget -P {cached.parent} {cfg.url}`", f"the torch hub cache has no {cached} and HF_HUB_OFFLINE=1"
    else:
        return None  # nothing to fetch (custom weights set through the overlay)
    if why is None:
        return None
    return _advice(
        where,
        fetch,
        why,
        "save the weights on a connected machine (timm.create_model(NAME, pretrained=True) then "
        "safetensors.torch.save_file(model.state_dict(), 'vision.safetensors')), copy the file here and set "
        "model.core.vision_checkpoint=PATH (a .safetensors/.pth file, or a timm model directory)",
        "model.core.vision_pretrained=false",
    )


def _local_weights_problem(key: str, value: str | Path) -> str | None:
    path = Path(value).expanduser()
    if path.is_dir():
        if any(p.name.endswith(TIMM_WEIGHT_SUFFIXES) for p in path.iterdir()):
            return None
        return f"{key}={str(value)!r}: no weights file in this directory (one of {', '.join(TIMM_WEIGHT_SUFFIXES)})"
    if not path.is_file():
        return f"{key}={str(value)!r}: no such file or directory"
    if not path.name.endswith(TIMM_WEIGHT_SUFFIXES):
        return f"{key}={str(value)!r}: not a weights file timm loads ({', '.join(TIMM_WEIGHT_SUFFIXES)})"
    return None


def _cached(repo: str, options: tuple[str, ...]) -> bool:
    """Whether the Hugging Face cache holds one of ``options`` for ``repo``."""
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in options)


def _hub_unreachable(repo: str) -> str | None:
    """Why ``repo`` cannot be downloaded now, or None when the hub answers for it."""
    if hf_constants.is_offline_mode():
        return "the Hugging Face cache does not hold it and HF_HUB_OFFLINE=1 (no downloads)"
    try:
        get_hf_file_metadata(hf_hub_url(repo, "config.json"), timeout=10)
    except Exception as err:  # any failure means the download would fail the same way, with a longer trace
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"the Hugging Face cache does not hold it and the hub did not answer ({type(err).__name__}: {reason})"
    return None


def _advice(where: str, fetch: str, why: str, local: str, switch: str | None) -> str:
    """The few lines printed for an unreachable hub model; ``switch`` (random weights) is None when the model's
    config and tokenizer are needed anyway."""
    what = "pretrained weights cannot be reached" if switch else "its config and tokenizer cannot be reached"
    lines = [
        f"{where}: {what}: {why}.",
        f"  cache: HF_HOME={hf_constants.HF_HOME} (models under {hf_constants.HF_HUB_CACHE})",
        f"  pre-fetch: on a machine with internet run {fetch} with the same cache location, then copy that "
        "folder here (or point HF_HOME at a shared copy)",
        f"  local copy: {local}",
    ]
    if switch:
        lines.append(f"  no weights: {switch} starts this tower from random weights")
    return "\n".join(lines)


# -- training-time checks ---------------------------------------------------------------------------------------
def warn_if_lr_too_high(lr: float, sources: WeightSources) -> str | None:
    """Logs (and returns) a warning when ``lr`` is above ``PRETRAINED_LR_BOUND`` for a pretrained core."""
    if not sources.any_pretrained or lr <= PRETRAINED_LR_BOUND:
        return None
    towers = [f"text {sources.text_model}"] * sources.text_pretrained + [f"vision {sources.vision_model}"] * (
        sources.vision_pretrained
    )
    message = (
        f"model.optimizer.lr={lr:g} is above {PRETRAINED_LR_BOUND:g} for a pretrained core ({', '.join(towers)}): real "
        "checkpoints tend to collapse to a constant prediction at such rates (1e-3 suits only the demo's random "
        "tiny model). Use 1e-5 to 5e-5: configs/models/*.yaml carry one per model (docs/real_weights.md)."
    )
    logger.warning(message)
    return message


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silences transformers' warnings (load tables, "checkpoint seems corrupted") for one load."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_masked_lm(text_model: str) -> nn.Module:
    """``AutoModelForMaskedLM`` of ``text_model``; when the checkpoint has no LM head (an embedding model) one
    line says that the head starts fresh, instead of transformers' "corrupted" warning and key table."""
    from transformers import AutoModelForMaskedLM

    with quiet_transformers():
        model, info = AutoModelForMaskedLM.from_pretrained(text_model, output_loading_info=True)
    model.train()  # from_pretrained returns eval mode; Lightning keeps the modes it finds
    prefix = model.base_model_prefix + "."
    fresh = sorted(k for k in info["missing_keys"] if not k.startswith(prefix))
    if fresh:
        out, emb = model.get_output_embeddings(), model.get_input_embeddings()
        tied = out is not None and out.weight is emb.weight
        decoder = (
            f"its decoder starts from the input embeddings ({type(model).__name__} ties them)"
            if tied
            else "its decoder is random too (this architecture does not tie it to the input embeddings)"
        )
        logger.warning(
            f"model.core.text_model={text_model!r} has no pretrained masked-LM head ({len(fresh)} tensors missing, "
            f"e.g. {fresh[0]}): the MLM task trains a fresh head; {decoder}."
        )
    return model


def exit_if_weights_unreachable(core_config: Mapping[str, Any]) -> None:
    """The CLI's check: exits with the advice (no traceback) when a weight source of ``model.core.*`` is
    unreachable, as a config error does; run before the data module (tokenizer) and the model are built."""
    try:
        check_weight_sources(WeightSources.from_config(core_config))
    except (WeightSourceError, ValueError) as err:
        sys.exit(f"error: {err}")


# -- what each tower loaded -------------------------------------------------------------------------------------
@dataclass
class TowerLoad:
    """Where one tower's weights came from (a file, directory or hub name, or ``random``) and how many of the
    tower's tensors they supplied (None: random weights, nothing loaded)."""

    tower: str
    source: str
    loaded: int | None = None
    total: int | None = None
    note: str = ""

    def line(self) -> str:
        counts = f": {self.loaded} of {self.total} tensors loaded" if self.loaded is not None else ""
        return f"weights: {self.tower} tower: {self.source}{counts}" + (f"; {self.note}" if self.note else "")


def random_tower(tower: str, name: str, pretrained: bool, tower_switch: bool | None) -> TowerLoad:
    """The report of a tower built with random weights: which switch said so, and, loudly, when the local
    directory it was built from holds weights that were not loaded."""
    switch = f"model.core.{tower}_pretrained" if tower_switch is not None else "model.core.pretrained"
    path = Path(name).expanduser() if tower == "text" else None
    held = [f for f in HF_WEIGHT_FILES if path is not None and (path / f).is_file()]
    if held:
        return TowerLoad(
            tower,
            f"RANDOM, {name} holds weights ({held[0]}) that are NOT loaded ({switch} false); "
            f"set model.core.{tower}_pretrained true to load them",
        )
    return TowerLoad(tower, f"random ({switch} false)")


def check_loaded_share(
    key: str, source: str, what: str, loaded: int, total: int, missing: list[str], unused: list[str]
) -> None:
    """Refuses a load that supplied fewer than ``MIN_LOADED_SHARE`` of the ``total`` tensors of ``what``."""
    if total and loaded >= MIN_LOADED_SHARE * total:
        return
    extra = f"; the file's own tensors are named e.g. {unused[0]!r}" if unused else ""
    raise WeightLoadError(
        f"{key}={source!r} supplies {loaded} of the {total} tensors of {what}; at least {MIN_LOADED_SHARE:.0%} "
        f"must load. Missing e.g. {missing[0] if missing else '?'!r}{extra}. Is it a checkpoint of this "
        "architecture? Name the matching one, or drop the weights source for random weights."
    )


def _checked_state_dict(model: torch.nn.Module, state: Mapping[str, Any], key: str, source: str) -> TowerLoad:
    """What ``state`` (after timm's filter) supplies of ``model``; refuses other shapes and a low share."""
    own = model.state_dict()
    what = f"the vision tower ({type(model).__name__}, {getattr(model, 'pretrained_cfg', {}).get('architecture')})"
    mismatched = [k for k, v in state.items() if k in own and tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise WeightLoadError(
            f"{key}={source!r}: {len(mismatched)} of its {len(state)} tensors have other shapes than {what}, e.g. "
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}. The file is for another size of "
            "this architecture: name the matching one in model.core.vision_model (and its vision_kwargs)."
        )
    loaded = sum(1 for k in state if k in own)
    check_loaded_share(
        key, source, what, loaded, len(own), [k for k in own if k not in state], [k for k in state if k not in own]
    )
    return TowerLoad("vision", source, loaded, len(own))


def _unreadable(key: str, source: str, err: Exception) -> str:
    reason = f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0][:200]
    head = _file_head(source)
    if head is not None and not source.endswith(".safetensors") and head[:2] != b"PK" and head[:1] != b"\x80":
        reason = f"not a file written by torch.save: it starts with {head!r}"
    elif isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
        reason = "not a file of plain tensors; torch.load(weights_only=True) refuses it"  # never 'weights_only=False'
    return (
        f"{key}={source!r} cannot be read as weights ({reason}). Expected a state dict written "
        "by safetensors.torch.save_file(model.state_dict(), PATH) or torch.save(model.state_dict(), PATH); if it "
        "is one, it may be incomplete: copy it again."
    )


def _file_head(source: str) -> bytes | None:
    """The first 8 bytes of ``source`` when it is a local file, else None."""
    path = Path(source).expanduser()
    if not path.is_file():
        return None
    with path.open("rb") as f:
        return f.read(8)


@contextlib.contextmanager
def checked_timm_load(key: str) -> Iterator[list[TowerLoad]]:
    """Inside the block, a timm pretrained load (any source) is checked (``_checked_state_dict``) and reported:
    the list yielded receives its ``TowerLoad``; unreadable files raise ``WeightLoadError`` instead of a trace.

    timm's ``load_pretrained`` is wrapped for the block, and the model's ``load_state_dict`` for that one call:
    the check sees the state dict after timm's own filter (classifier dropped, position embeddings resized)."""
    report: list[TowerLoad] = []
    original = timm.models._builder.load_pretrained

    def load_pretrained(
        model: torch.nn.Module, pretrained_cfg: Mapping[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> None:
        cfg = dict(pretrained_cfg or getattr(model, "pretrained_cfg", {}) or {})
        source = str(cfg.get("file") or cfg.get("hf_hub_id") or cfg.get("url") or "timm state_dict")

        def load_state_dict(state: Mapping[str, Any], strict: bool = True, **kw: Any) -> Any:
            report.append(_checked_state_dict(model, state, key, source))
            return type(model).load_state_dict(model, state, strict=False, **kw)

        model.load_state_dict = load_state_dict
        try:
            original(model, pretrained_cfg, *args, **kwargs)
        except WeightLoadError:
            raise
        except Exception as err:  # a file timm cannot read: the key and the file instead of a long trace
            raise WeightLoadError(_unreadable(key, source, err)) from None
        finally:
            del model.load_state_dict

    with mock.patch.object(timm.models._builder, "load_pretrained", load_pretrained):
        yield report


def print_load_report(report: list[TowerLoad]) -> None:
    """One line per tower on stderr, on the first process only (every DDP rank builds the core)."""
    if any(os.environ.get(var, "0") != "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return
    for tower in report:
        print(tower.line(), file=sys.stderr, flush=True)


# -- Lightning checkpoints (resume, init_from) -------------------------------------------------------------------
class CheckpointFileError(RuntimeError):
    """A checkpoint file is missing, truncated or not a checkpoint; the message names the key and the path."""


def check_checkpoint_file(path: str | Path, key: str) -> None:
    """Refuses a missing, empty or truncated checkpoint (``torch.save``'s zip format ends in its central directory,
    which a cut-off copy lacks) before anything is built, naming ``key`` and the path; cheap: reads the zip index."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{key}={path}: no such file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
    fix = "it was cut off (a copy or a save interrupted, or a full disk): copy it again, or use an earlier checkpoint"
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                ends = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointFileError(f"{key}={path}: truncated checkpoint ({size} bytes; {err}): {fix}") from None
        if ends > size:
            raise CheckpointFileError(
                f"{key}={path}: truncated checkpoint ({size} bytes, its index says > {ends}): {fix}"
            )
    elif size == 0:
        raise CheckpointFileError(f"{key}={path}: empty file (0 bytes): {fix}")
    elif head[:1] != b"\x80":  # neither torch's zip format nor a legacy pickle stream
        raise CheckpointFileError(f"{key}={path}: not a checkpoint written by torch.save (starts with {head!r})")
