"""The shared contracts (``contracts/``): ranges travel with their fields, the sample schema serves every family."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from contracts.catalogue import FAMILIES
from contracts.fields import FAMILY_FIELDS, family_fields
from contracts.ranges import check_fields, field_ranges
from datamodules.datamodule import DATA_RANGES, TaskData, TransferDataModule
from lightning_modules.module import Freezing, Optimizer, Schedule


def renamed(cls: type, old: str, new: str) -> type:
    """A copy of dataclass ``cls`` with field ``old`` renamed to ``new`` (its default and metadata kept)."""
    fields = []
    for f in dataclasses.fields(cls):
        kwargs = {"default": f.default} if f.default is not dataclasses.MISSING else {}
        fields.append((new if f.name == old else f.name, f.type, dataclasses.field(metadata=f.metadata, **kwargs)))
    return dataclasses.make_dataclass(f"Renamed{cls.__name__}", fields)


CASES = [(Optimizer, "lr", -1.0), (Schedule, "warmup_steps", -5), (Freezing, "text_layers", -1),
         (TaskData, "batch_size", 0)]


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
