"""The shared contracts (``contracts/``): ranges travel with their fields, the sample schema serves every family."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from contracts.catalogue import FAMILIES, TASKS
from contracts.fields import FAMILY_FIELDS, family_fields
from contracts.ranges import check_fields, field_ranges
from datamodules.datamodule import DATA_RANGES, TaskData, TransferDataModule
from lightning_modules.module import Freezing, Optimizer, Schedule

ROOT = Path(__file__).resolve().parents[1]


def renamed(cls: type, old: str, new: str) -> type:
    """A copy of dataclass ``cls`` with field ``old`` renamed to ``new`` (its default and metadata kept)."""
    fields = []
    for f in dataclasses.fields(cls):
        kwargs = {"default": f.default} if f.default is not dataclasses.MISSING else {}
        fields.append((new if f.name == old else f.name, f.type, dataclasses.field(metadata=f.metadata, **kwargs)))
    return dataclasses.make_dataclass(f"Renamed{cls.__name__}", fields)


CASES = [
    (Optimizer, "lr", -1.0),
    (Schedule, "warmup_steps", -5),
    (Freezing, "text_layers", -1),
    (TaskData, "batch_size", 0),
]


@pytest.mark.parametrize(("cls", "old", "bad"), CASES)
def test_a_renamed_field_keeps_its_range(cls: type, old: str, bad: float) -> None:
    args = {"name": "t", "shards": "s"} if cls is TaskData else {}
    with pytest.raises(ValueError, match=rf"x\.{old}={bad}: out of range"):
        check_fields(cls(**args, **{old: bad}), "x.")
    moved = renamed(cls, old, f"{old}_renamed")
    assert f"{old}_renamed" in field_ranges(moved) and old not in field_ranges(moved)
    with pytest.raises(ValueError, match=rf"x\.{old}_renamed={bad}: out of range"):
        check_fields(moved(**args, **{f"{old}_renamed": bad}), "x.")
    check_fields(moved(**args), "x.")  # the defaults are in range


def test_every_data_range_names_a_data_module_argument() -> None:
    """The data module's arguments are not dataclass fields: a renamed argument must fail here, not lose its check."""
    params = inspect.signature(TransferDataModule.__init__).parameters
    assert set(DATA_RANGES) <= set(params), sorted(set(DATA_RANGES) - set(params))


def test_the_schema_covers_every_family_and_names_what_controls_move() -> None:
    assert list(FAMILY_FIELDS) == list(FAMILIES)
    for family, schema in FAMILY_FIELDS.items():
        assert not set(schema.required) & set(schema.optional), family
        assert set(schema.shuffled) <= set(schema.all), family  # a control moves only fields samples carry
    with pytest.raises(KeyError, match="Unknown family 'nope'. Known families: classification"):
        family_fields("nope")


# Where a family or task may be named in a comparison: its homes (the catalogue and sample schema, the family tables
# and their heads, collate methods and metrics) and the per-dataset code (converters, stand-in sources, the demo).
FAMILY_HOMES = (
    "contracts/",
    "lightning_modules/families.py",
    "lightning_modules/heads.py",
    "lightning_modules/metrics/",
    "datamodules/collate.py",
    "shards/converters/",
    "shards/standins.py",
    "shards/demo/",
)
SOURCES = ("contracts", "datamodules", "lightning_modules", "shards", "studies", "benchmarks", "train.py", "study.py")


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(set(), *(_names(e) for e in node.elts))
    return set()


def name_branches(source: str, names: set[str]) -> list[tuple[int, list[str]]]:
    """(line, names) of every comparison in ``source`` against a literal family or task name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = set().union(*(_names(x) for x in [node.left, *node.comparators])) & names
            if hit:
                found.append((node.lineno, sorted(hit)))
    return found


def test_no_code_outside_a_family_home_branches_on_a_family_or_task_name() -> None:
    names = set(FAMILIES) | set(TASKS)
    files = [p for s in SOURCES for p in ((ROOT / s).rglob("*.py") if (ROOT / s).is_dir() else [ROOT / s])]
    outside = [p for p in files if not str(p.relative_to(ROOT)).startswith(FAMILY_HOMES)]
    assert len(outside) > 50, "the scan found too few files"
    found = [f"{p.relative_to(ROOT)}:{n}: {hit}" for p in outside for n, hit in name_branches(p.read_text(), names)]
    assert not found, "declare it on the family (contracts/fields.py, families.py) instead:\n" + "\n".join(found)


def test_the_scan_sees_a_name_branch() -> None:
    source = 'if spec.family in ("retrieval", "vqa") or task != "xvnli" or kind == "other":\n    pass\n'
    assert name_branches(source, set(FAMILIES) | set(TASKS)) == [(1, ["retrieval", "vqa"]), (1, ["xvnli"])]
