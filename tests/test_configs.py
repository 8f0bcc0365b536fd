"""Every YAML under configs/ parses: phase and model configs with the real CLI parser stacked on base.yaml,
demo configs instantiated for real against the small demo world, study YAMLs with the study runner's loader."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import study
import train
from contracts.catalogue import get_task
from datamodules.datamodule import TransferDataModule
from lightning_modules.module import TransferModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BASE = CONFIGS / "base.yaml"
REHEARSAL = CONFIGS / "rehearsal.yaml"  # study.py --rehearse's scale: neither a study nor a phase
ALL_YAML = sorted(p for p in CONFIGS.rglob("*.yaml") if p != REHEARSAL)


def _is_study(path: Path) -> bool:
    return "conditions" in (yaml.safe_load(path.read_text()) or {})


def _rel(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


STUDIES = [p for p in ALL_YAML if _is_study(p)]
DEMO = [p for p in ALL_YAML if p.parent.name == "demo" and p not in STUDIES and p.name != "base.yaml"]
PHASE = [p for p in ALL_YAML if p not in STUDIES and p not in DEMO and p != BASE and p.parent.name != "demo"]


class ParseOnlyCLI(train.MMStiltsCLI):
    """The project's CLI up to (not including) instantiation: its parser is the real one, links included."""

    def instantiate_classes(self) -> None:
        pass


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Path]:
    """A cwd where the demo configs' relative ``data/demo`` paths resolve and run dirs land in tmp."""
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "data").mkdir()
    (cwd / "data" / "demo").symlink_to(demo_dir)
    old, argv = os.getcwd(), sys.argv
    os.chdir(cwd)
    sys.argv = ["train.py"]  # LightningCLI warns when given args and pytest's own command line
    try:
        yield cwd
    finally:
        os.chdir(old)
        sys.argv = argv


@pytest.fixture(scope="module")
def parser(workdir: Path) -> Any:
    cli = ParseOnlyCLI(
        TransferModule,
        TransferDataModule,
        run=False,
        parser_kwargs={"parser_mode": "yaml"},
        args=["--config", str(BASE)],
    )
    return cli.parser


def _parse(parser: Any, *paths: Path) -> Any:
    return parser.parse_args([arg for p in (BASE, *paths) for arg in ("--config", str(p))])


def test_every_yaml_is_covered() -> None:
    assert set(ALL_YAML) == {BASE, *STUDIES, *DEMO, *PHASE, CONFIGS / "demo" / "base.yaml"}
    assert {p.parent.name for p in PHASE} <= {"models", "start", "intermediate", "target"}, [_rel(p) for p in PHASE]


@pytest.mark.parametrize("path", [p for p in ALL_YAML if p not in STUDIES], ids=_rel)
def test_header_comment(path: Path) -> None:
    assert path.read_text().startswith("#"), f"{_rel(path)}: start with a comment saying what the config is"


@pytest.mark.parametrize("path", PHASE, ids=_rel)
def test_phase_config_parses(parser: Any, path: Path) -> None:
    cfg = _parse(parser, path)
    tasks = cfg.data.tasks
    for t in tasks:
        get_task(t.name)  # unknown names fail with the valid ones
        assert t.shards == f"data/{Path(t.shards).name}", f"{_rel(path)}: shards live in data/<dataset>"
    kind = path.parent.name
    if kind == "models":
        assert not tasks and cfg.model.core.attn_implementation == "sdpa" and cfg.trainer.precision == "bf16-mixed"
        assert cfg.model.core.pretrained and "/" not in cfg.model.core.vision_model  # hub / timm names, not local paths
    elif kind in ("start", "intermediate"):
        assert cfg.phase == kind and any(t.train_split for t in tasks)
        assert not any(t.test_split for t in tasks), "intermediate phases do not test"
    else:
        assert cfg.phase == "target" and any(t.test_split for t in tasks)
        if any(t.train_split for t in tasks):  # evaluation-only targets (BUCC) may tune a threshold per language
            assert all(t.val_langs in (None, ["en"]) for t in tasks), "checkpoints are selected on English dev only"


@pytest.mark.parametrize("model", sorted((CONFIGS / "models").glob("*.yaml")), ids=_rel)
def test_model_stacks_with_a_phase(parser: Any, model: Path) -> None:
    cfg = _parse(parser, model, CONFIGS / "target" / "xvnli.yaml")
    assert cfg.model.core.text_model == yaml.safe_load(model.read_text())["model"]["core"]["text_model"]
    assert [t.name for t in cfg.data.tasks] == ["snli_ve", "xvnli"]


def test_grouped_core_keys_have_their_help(parser: Any) -> None:
    """``--model.core.*`` are typed options whose help is the field's attribute docstring (module.CoreConfig)."""
    text = " ".join(parser.format_help().split())  # argparse wraps the help lines
    assert "--model.core.text_model TEXT_MODEL Hugging Face encoder: hub name or local directory" in text, text[:3000]
    assert "--model.core.fusion {single_stream,fusion_transformer} single_stream (image tokens prepended" in text
    assert "--model.text_model" not in text


@pytest.mark.parametrize("path", DEMO, ids=_rel)
def test_demo_config_instantiates(workdir: Path, path: Path) -> None:
    args = [arg for p in (BASE, CONFIGS / "demo" / "base.yaml", path) for arg in ("--config", str(p))]
    cli = train.cli_main(args=args, run=False)
    assert isinstance(cli.model, TransferModule) and isinstance(cli.datamodule, TransferDataModule)
    assert set(cli.model.task_info) == set(cli.datamodule.tasks)


@pytest.mark.parametrize("path", STUDIES, ids=_rel)
def test_study_loads_and_its_configs_exist(path: Path) -> None:
    s = study.load_study(path)
    missing = [c for c in s.config_files() if not (ROOT / c).is_file()]
    assert not missing, f"{_rel(path)} references missing configs: {missing}"
    for name, cond in s.conditions.items():  # the overlap marks rely on these task lists
        trained = {t["name"] for c in cond.configs for t in _tasks(c) if t.get("train_split")}
        assert set(cond.tasks) <= trained, f"{_rel(path)}: condition {name} lists {cond.tasks}; configs train {trained}"
    for name, target in s.targets.items():
        trained = {t["name"] for c in target.configs for t in _tasks(c) if t.get("train_split")}
        assert set(target.train_tasks) == trained, (
            f"{_rel(path)}: target {name} lists {target.train_tasks}, configs train {trained}"
        )


def test_rehearsal_scale_names_shipped_studies_conditions_and_models() -> None:
    from studies.rehearsal import load_scale, shrink

    scale = load_scale(REHEARSAL)
    studies = {study.load_study(p).name: study.load_study(p) for p in STUDIES if p.parent.name == "studies"}
    assert set(scale.conditions) <= set(studies), (sorted(scale.conditions), sorted(studies))
    for name in scale.conditions:
        shrink(studies[name], scale)  # raises naming the condition the study lacks
    assert all((ROOT / model).is_file() for model in scale.models), sorted(scale.models)


def _tasks(config: str) -> list[dict[str, Any]]:
    return (yaml.safe_load((ROOT / config).read_text()).get("data") or {}).get("tasks") or []
