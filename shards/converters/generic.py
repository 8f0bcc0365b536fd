"""Any dataset without its own converter: JSONL (or TSV/CSV) + an image folder, or a Hugging Face dataset saved
with ``save_to_disk``, mapped onto a catalogue task with ``--field`` options::

    python -m shards build jsonl --src my.jsonl --images imgs --out data/my --split test --lang de \\
        --field task=xvnli --field text=hypothesis --field label=gold --field image={image_id}.jpg

``--field <sample field>=<source field>`` names the source column of each family field (``text``, ``label``,
``texts``, ``choices``, ...: ``contracts/fields.py``; see ``shards/__init__.py``). Special keys: ``task`` (catalogue
name, required), ``id`` / ``lang`` / ``split`` (source columns; default: row number, ``--lang`` or en,
``--split`` or train), ``image`` / ``image0`` + ``image1`` (a column holding a path below ``--images``, or a
``{column}`` template), ``label_map`` (``src:index,src:index``; default: the catalogue's label names,
case-insensitive, or integers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.catalogue import get_task
from contracts.fields import family_fields

from .common import (
    Conversion,
    Options,
    canonical_split,
    converter,
    find_files,
    map_label,
    need,
    read_rows,
    record,
    task_entry,
)


def label_map_of(opts: Options, task: str) -> dict[str, int]:
    """``--field label_map=a:0,b:1``, else the catalogue's label names (any case) and their indices as strings."""
    if "label_map" in opts.fields:
        pairs = (item.rsplit(":", 1) for item in opts.fields["label_map"].split(","))
        return {k: int(v) for k, v in pairs}
    names = get_task(task).labels
    return {**{name: i for i, name in enumerate(names)}, **{str(i): i for i in range(len(names))}}


def image_source(value: Any, images: Path | None, where: str) -> Any:
    """A decoded image (Hugging Face ``Image`` feature) or bytes pass through; a path is taken below ``--images``."""
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str):
        return value
    if images is None:
        raise ValueError(f"{where}: image {value!r} is a path; pass --images (the folder it is relative to).")
    return images / value


def row_images(row: dict, opts: Options, where: str) -> dict[str, Any]:
    names = {"image": "jpg", "image0": "img0.jpg", "image1": "img1.jpg"}
    out = {}
    for option, member in names.items():
        spec = opts.fields.get(option)
        if spec is None:
            continue
        try:
            value = spec.format(**row) if "{" in spec else need(row, where, spec)
        except KeyError as err:
            raise ValueError(f"{where}: --field {option}={spec} names a missing field {err}.") from None
        out[member] = image_source(value, opts.images, where)
    return out


def mapped_record(
    row: dict, where: str, i: int, opts: Options, task: str, labels: dict[str, int], split: str | None
) -> dict:
    """One record from one source row under the ``--field`` mapping; ``split`` is the source's (hf splits)."""
    fields = {}
    schema = family_fields(get_task(task).family)
    for name in schema.all:
        column = opts.fields.get(name)
        if column is None and name not in schema.optional:
            raise ValueError(f"--field {name}=<source field> is required for {task} ({get_task(task).family}).")
        fields[name] = None if column is None else need(row, where, column)
    if "label" in fields and get_task(task).labels:
        value = fields["label"]
        if isinstance(value, str) and "label_map" not in opts.fields:
            value = value.lower()  # catalogue names are lower case; sources write "Entailment", "TRUE", ...
        fields["label"] = map_label(value, labels, where, unlabelled=("-", "", None))
    id_ = need(row, where, opts.fields["id"]) if "id" in opts.fields else i
    lang = str(need(row, where, opts.fields["lang"])) if "lang" in opts.fields else opts.lang or "en"
    if "split" in opts.fields:
        split = str(need(row, where, opts.fields["split"]))
    split = split or opts.split or "train"
    return record(task, canonical_split(split), lang, id_, fields, row_images(row, opts, where))


def mapped_conversion(opts: Options, rows: Iterator[tuple[str, dict, str | None]], sources: list[Path]) -> Conversion:
    """Rows ``(where, row, split or None)`` mapped into records of ``--field task=<name>``."""
    if "task" not in opts.fields:
        raise ValueError("--field task=<catalogue task name> is required (e.g. --field task=xvnli).")
    task = opts.fields["task"]
    labels = label_map_of(opts, task)
    records = [mapped_record(row, where, i, opts, task, labels, split) for i, (where, row, split) in enumerate(rows)]
    return Conversion(records, task_entry(task, labels if get_task(task).labels else None), sources)


def read_jsonl_generic(opts: Options) -> Conversion:
    """Generic: ``.jsonl`` (or ``.tsv``/``.csv`` with a header) files + an image folder, mapped by ``--field``."""
    src = opts.need_src("a .jsonl (or .tsv/.csv) file or a folder of them")
    files = find_files(src, "*.jsonl", "*.tsv", "*.csv")
    rows = ((where, row, None) for path in files for where, row in read_rows(path))
    return mapped_conversion(opts, rows, files)


def read_hf_disk(opts: Options) -> Conversion:
    """Generic: a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``Dataset`` or ``DatasetDict``,
    whose split names become splits), mapped by ``--field``; needs the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "The hf_disk converter needs the Hugging Face `datasets` package: pip install -e '.[hf]'."
        ) from None
    src = opts.need_src("the folder written by Dataset.save_to_disk / DatasetDict.save_to_disk")
    loaded = datasets.load_from_disk(str(src))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    rows = (
        (f"{src}[{name}] row {i}", row, None if name is None else canonical_split(name))
        for name, ds in splits
        for i, row in enumerate(ds)
    )
    return mapped_conversion(opts, rows, [])


jsonl = converter("jsonl", read_jsonl_generic)
hf_disk = converter("hf_disk", read_hf_disk)
