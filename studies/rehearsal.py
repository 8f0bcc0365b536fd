"""``study.py --config <shipped study> --rehearse``: the shipped study file itself, end to end, at toy scale.

Only scale changes, and only as ``configs/rehearsal.yaml`` says: one seed, a subset of the conditions that still
has every kind of phase, the first shot count and language of each few-shot block, a few CPU steps a run (its
``overrides``, appended last to every run), and tiny random models of the study's own architectures (its
``models``). Everything else is the study as shipped: its base configs, every condition's and target's config
file, every protocol, the runner, the report.

The data are built in a workspace (``<workspace>/<study>/``, the working directory of the whole rehearsal) by
the ``python -m shards build`` commands of docs/real_data.md, run as written there:

- IGLUE's datasets from the release tree (``$MMSTILTS_IGLUE_ROOT``, else ``../shared/datasets/iglue-tree``),
  copied to ``iglue/datasets`` with the files a cut tree lacks written as stand-ins (``shards.standins``), and a
  placeholder picture for every image it names in each source's layout;
- every other dataset from a project-written stand-in in its released format (``shards.standins.WRITERS``)
  at the ``--src`` path of its documented command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from studies.plan import REPO, plan, run_config
from studies.spec import Study, StudyError

SCALE_FILE = REPO / "configs" / "rehearsal.yaml"
DOCS = REPO / "docs" / "real_data.md"
IGLUE_ENV = "MMSTILTS_IGLUE_ROOT"
SHARED_TREE = REPO.parent / "shared" / "datasets" / "iglue-tree"


@dataclass
class Scale:
    """``configs/rehearsal.yaml``."""

    workspace: str = "runs/rehearsal"
    seeds: list[int] = field(default_factory=lambda: [0])
    conditions: dict[str, list[str]] = field(default_factory=dict)
    few_shot: dict[str, int] = field(default_factory=lambda: {"shots": 1, "langs": 1})
    overrides: list[str] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_scale(path: Path = SCALE_FILE) -> Scale:
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - set(Scale.__dataclass_fields__)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {', '.join(Scale.__dataclass_fields__)}")
    return Scale(**data)


def iglue_root() -> Path:
    """``$MMSTILTS_IGLUE_ROOT`` (an e-bug/iglue checkout or its ``datasets/``), else the shared cut tree."""
    given = os.environ.get(IGLUE_ENV)
    root = Path(given) if given else SHARED_TREE
    if (root / "datasets").is_dir():
        root = root / "datasets"
    if not root.is_dir():
        raise StudyError(
            f"The rehearsal builds IGLUE from its release tree: set {IGLUE_ENV} to an e-bug/iglue "
            f"checkout (or its datasets/ folder), or provide {SHARED_TREE}."
        )
    return root


# ----------------------------------------------------------------------------------------------- the grid


def shrink(study: Study, scale: Scale) -> Study:
    """The study with the rehearsal's seeds, condition subset, few-shot subset and ``scale`` arguments."""
    subset = scale.conditions.get(study.name)
    if not subset:
        raise StudyError(
            f"{SCALE_FILE.name}: no `conditions.{study.name}`: list the conditions the rehearsal of "
            f"study {study.name!r} runs (the baseline, a text, a multimodal, a control, a multi-task)."
        )
    unknown = [c for c in subset if c not in study.conditions]
    if unknown or study.baseline not in subset:
        raise StudyError(
            f"{SCALE_FILE.name}: `conditions.{study.name}` must name conditions of the study, its "
            f"baseline {study.baseline!r} included; unknown: {unknown}"
        )
    targets = {}
    for name, target in study.targets.items():
        few = target.few_shot
        if few is not None:
            kept = [c for c in few.conditions if c in subset] or ([study.baseline] if few.conditions else [])
            few = replace(
                few,
                shots=few.shots[: scale.few_shot["shots"]],
                langs=few.langs[: scale.few_shot["langs"]],
                conditions=kept,
            )
        targets[name] = replace(target, few_shot=few)
    return replace(
        study,
        seeds=list(scale.seeds),
        conditions={c: study.conditions[c] for c in subset},
        targets=targets,
        scale=list(scale.overrides),
    )


# ----------------------------------------------------------------------------------------------- data


def doc_commands(docs: Path = DOCS) -> list[list[str]]:
    """Every ``python -m shards build ...`` of docs/real_data.md (code blocks and table cells), as arguments
    after ``python -m shards``."""
    text = docs.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`(python -m shards build [^`]+)`", text)
    commands = []
    for line in lines:
        if line.startswith("python -m shards build ") and "<dataset>" not in line:
            line = re.sub(r"<[^>]+>", lambda m: m.group(0).replace(" ", "_"), line.split("  #")[0])
            args = shlex.split(line)[3:]
            if args not in commands:
                commands.append(args)
    return commands


def _arg(args: Sequence[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def needed_shards(study: Study) -> list[str]:
    """The shard directories the study's runs read, in order of first use."""
    dirs: list[str] = []
    for run in plan(study):
        for task in (run_config(study, run).get("data") or {}).get("tasks") or []:
            shards = str(task.get("shards", ""))
            if shards and shards not in dirs:
                dirs.append(shards)
    return dirs


def _recipe(shards: str, commands: list[list[str]]) -> list[str]:
    from shards.standins import WRITERS

    candidates = [c for c in commands if _arg(c, "--out") == shards]
    for args in candidates:  # the release's own files first (IGLUE), else a stand-in in the released format
        src = _arg(args, "--src") or ""
        if src and not src.startswith("<") and Path(src).exists():
            return args
    for args in candidates:
        if args[1] in WRITERS:
            return args
    raise StudyError(
        f"No documented build command in docs/real_data.md can make {shards} here: add a stand-in "
        f"writer for its dataset to shards/standins.WRITERS (candidates: "
        f"{[' '.join(c) for c in candidates] or 'none'})"
    )


def build_data(study: Study, log: Path) -> list[str]:
    """Build every shard directory the study reads (skipping those built before); returns the commands run."""
    from shards.__main__ import main as shards_main
    from shards.standins import WRITERS, complete_iglue_tree, iglue_images

    if not Path("iglue/datasets").is_dir():
        complete_iglue_tree(iglue_root(), Path("iglue/datasets"))
        iglue_images(Path("iglue/datasets"), Path("."))
    commands = doc_commands()
    todo = [(s, _recipe(s, commands)) for s in needed_shards(study) if not Path(s, "manifest.json").is_file()]
    todo.sort(key=lambda item: _arg(item[1], "--exclude") is not None)  # an exclusion list is built first
    ran = []
    for shards, args in todo:
        args = list(args)
        src = _arg(args, "--src")
        if src is not None and (src.startswith("<") or not Path(src).exists()):
            if src.startswith("<"):  # a placeholder such as <img2dataset output dir>: the stand-in's own folder
                args[args.index("--src") + 1] = src = f"standins/{args[1]}"
            images = _arg(args, "--images")
            WRITERS[args[1]](Path(src), Path(images) if images else None)
        with log.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            print("$ python -m shards " + shlex.join(args), flush=True)
            rc = shards_main(args)
        if rc != 0:
            raise StudyError(f"`python -m shards {shlex.join(args)}` failed (exit {rc}) for {shards}; see {log}")
        ran.append(shlex.join(args))
    return ran


# ----------------------------------------------------------------------------------------------- models


def _texts(folder: Path = Path("data")) -> Iterator[str]:
    from shards.demo.text_model import sample_texts

    for tar_path in sorted(folder.rglob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    yield from sample_texts(json.loads(tar.extractfile(member).read()))


def build_model(spec: dict[str, Any], out: Path) -> None:
    """A tiny random text model of ``spec['text']``'s architecture, saved with weights and a BPE tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    from shards.demo.text_model import train_tokenizer

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(_texts(), vocab_size=800),
        model_max_length=512,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(out)
    config_file = out / "tokenizer_config.json"
    config_file.write_text(
        json.dumps({**json.loads(config_file.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2)
    )
    text = dict(spec["text"])
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if "text_config" in text:  # a two-tower checkpoint: the text tower's config takes the tokenizer's ids
        text["text_config"] = {**text["text_config"], **ids}
    else:
        text.update(ids)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(**text)).save_pretrained(out)


def model_overrides(study: Study, scale: Scale) -> list[str]:
    """Build the tiny model of each model config in the study's ``base``; the arguments that use it."""
    chosen = [b for b in study.base if b in scale.models]
    if not chosen:
        raise StudyError(
            f"{SCALE_FILE.name}: `models` has no entry for any of the study's base configs "
            f"{study.base}: add the tiny stand-in of its model config."
        )
    base = chosen[-1]
    spec = scale.models[base]
    out = Path("models") / Path(base).stem
    if not (out / "config.json").is_file():
        build_model(spec, out)
    return [
        f"--model.core.text_model={out}",
        "--model.core.text_pretrained=true",
        "--model.core.vision_pretrained=false",
        f"--model.core.vision_kwargs={json.dumps(spec['vision_kwargs'])}",
    ]


# ----------------------------------------------------------------------------------------------- entry


def prepare(study: Study, workspace: str | None = None) -> Study:
    """Shrink the study, enter its workspace (the working directory from here on), build data and models.
    Returns the study to run."""
    scale = load_scale()
    small = shrink(study, scale)
    ws = Path(workspace or scale.workspace).resolve() / study.name
    ws.mkdir(parents=True, exist_ok=True)
    configs = ws / "configs"
    if not configs.exists():
        configs.symlink_to(REPO / "configs", target_is_directory=True)
    os.chdir(ws)
    print(f"rehearsal of {study.name}: workspace {ws} (scale: {SCALE_FILE.relative_to(REPO)})", flush=True)
    ran = build_data(small, ws / "build.log")
    if ran:
        print(
            f"rehearsal: built {len(ran)} shard director{'y' if len(ran) == 1 else 'ies'} with docs/real_data.md's "
            f"commands (log: {ws / 'build.log'})",
            flush=True,
        )
    small.scale += model_overrides(small, scale)
    return small


def verdict(study: Study) -> list[str]:
    """What the rehearsal's study.json lacks: (target, protocol) columns without numbers, missing runs, and
    zero-shot target runs whose own record says the protocol broke (a shipped config selecting on test data)."""
    data = json.loads((study.out_dir / "study.json").read_text())
    rows = data.get("rows") or []
    have = {r["target"] for r in rows if r.get("mean") is not None}
    gaps = []
    for name, target in study.targets.items():
        columns = [name]
        if target.translate_test:
            columns.append(f"{name} [translate-test]")
        if target.few_shot:
            columns += [f"{name} [{n}-shot]" for n in target.few_shot.shots]
        gaps += [f"no numbers for {c}" for c in columns if c not in have]
    gaps += [f"no results from {m}" for m in data.get("missing", [])]
    gaps += [f"protocol broken in {b}" for b in data.get("protocol_breaks", [])]
    if study.analysis.enabled:  # study.md's analysis section: every part filled
        from studies.analysis import gaps as analysis_gaps

        gaps += analysis_gaps(study)
    return gaps
