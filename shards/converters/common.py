"""What every converter shares: options, line-numbered readers, label mapping, keys, and the call to the writer.

A converter is two parts: a *reader* ``read_<dataset>(opts) -> Conversion`` that turns the original files
into records (``shards/__init__.py`` has the sample contract), and :func:`converter`, which wraps the reader
into the callable the CLI finds in ``CONVERTERS``: it filters by ``--split`` / ``--lang`` and hands the records
to :func:`shards.writer.build_shards`.

Bad input fails loudly: a malformed record raises ``ValueError("<file>:<line>: ...")``; items a converter
drops on purpose go to ``Conversion.skipped`` with the reason, and end in the manifest.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from contracts.catalogue import get_task

UNLABELLED = -1
_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Options:
    """The CLI arguments every converter takes (``python -m shards build <dataset> ...``)."""

    out: Path
    src: Path | None = None
    images: Path | None = None
    split: str | None = None
    lang: str | None = None
    workers: int = 0
    allow_missing: bool = False
    max_per_shard: int = 2000
    max_side: int = 384
    fields: dict[str, str] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.src = None if self.src is None else Path(self.src)
        self.images = None if self.images is None else Path(self.images)
        self.fields = dict(self.fields or {})

    def need_src(self, what: str) -> Path:
        """``--src``, which must exist; ``what`` says which file or folder the dataset expects."""
        if self.src is None:
            raise ValueError(f"--src is required: give {what}.")
        if not self.src.exists():
            raise FileNotFoundError(f"--src {self.src} does not exist (expected {what}).")
        return self.src

    def need_images(self, what: str) -> Path:
        """``--images``, the image root; ``what`` says how the files are laid out below it."""
        if self.images is None:
            raise ValueError(f"--images is required: give the folder holding {what}.")
        return self.images


@dataclass
class Conversion:
    """A reader's result: the records plus what goes into the manifest besides them."""

    records: list[dict]
    tasks: dict[str, dict]
    sources: list[Path]
    skipped: list[dict] = field(default_factory=list)
    ignored: dict[Path, str] = field(default_factory=dict)
    """Files below ``--src`` the reader leaves out on purpose, with the reason (every other unread file gets
    a generic one in :func:`ignored_files`)."""


Reader = Callable[[Options], Conversion]
Converter = Callable[..., dict]


def converter(dataset: str, read: Reader) -> Converter:
    """The ``CONVERTERS`` entry for ``dataset``: read, filter by ``--split``/``--lang``, write the shards."""

    def convert(**kwargs: Any) -> dict:
        from shards.writer import build_shards  # imported late: listing converters needs no writer deps

        opts = Options(**kwargs)
        conv = read(opts)
        records = [r for r in conv.records if _selected(r, opts)]
        if not records:
            raise ValueError(
                f"{dataset}: no records in {opts.src} for split={opts.split!r}, lang={opts.lang!r}; "
                f"splits found: {sorted({r['split'] for r in conv.records})}, "
                f"languages found: {sorted({r['lang'] for r in conv.records})}."
            )
        return build_shards(
            opts.out,
            records,
            dataset=dataset,
            tasks=conv.tasks,
            sources=conv.sources,
            skipped=conv.skipped,
            ignored=ignored_files(dataset, opts, conv),
            max_per_shard=opts.max_per_shard,
            max_side=opts.max_side,
            workers=opts.workers,
            allow_missing=opts.allow_missing,
            progress=opts.progress,
        )

    convert.__name__ = convert.__qualname__ = dataset
    convert.__doc__ = read.__doc__
    return convert


PICKLE_REASON = "pickle: data files are never unpickled (use the .json file of the same data)"


def ignored_files(dataset: str, opts: Options, conv: Conversion) -> list[dict]:
    """``{"path", "reason"}`` for every file below a ``--src`` folder that the reader did not read, so that a
    build never drops a file without saying so (printed by the writer, kept in the manifest). Files below
    ``--images`` or ``--out`` (when those lie inside ``--src``) are not annotation files and are not listed."""
    src = opts.src
    if src is None or not src.is_dir():
        return []
    read = {Path(p).resolve() for p in conv.sources}
    reasons = {Path(p).resolve(): why for p, why in conv.ignored.items()}
    other = [d.resolve() for d in (opts.images, opts.out) if d is not None]
    ignored = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        full = path.resolve()
        if full in read or any(full.is_relative_to(d) for d in other):
            continue
        if full in reasons:
            reason = reasons[full]
        elif ".pkl" in path.suffixes:
            reason = PICKLE_REASON
        else:
            reason = f"not a file the {dataset} converter reads (see `python -m shards list`)"
        ignored.append({"path": str(path), "reason": reason})
    return ignored


def _selected(record: dict, opts: Options) -> bool:
    return (opts.split is None or record["split"] == opts.split) and (opts.lang is None or record["lang"] == opts.lang)


# ---------------------------------------------------------------------------------------------- records


def make_key(*parts: object) -> str:
    """A WebDataset key from its parts: every run of characters outside ``[A-Za-z0-9_-]`` becomes ``_``."""
    return "-".join(_KEY_BAD.sub("_", str(p)) for p in parts)


def record(task: str, split: str, lang: str, id_: object, fields: dict, images: dict | None = None) -> dict:
    """One writer record; the key is ``<split>-<lang>-<id>`` so that it is unique across a directory."""
    return {
        "key": make_key(split, lang, id_),
        "split": split,
        "lang": lang,
        "json": {"task": task, "lang": lang, "id": id_, **fields},
        "images": images or {},
    }


def task_entry(task: str, label_map: dict[str, int] | None = None, label_names: Sequence[str] = ()) -> dict:
    """``tasks=`` for the writer: the catalogue's label order (or ``label_names``) and the source mapping."""
    names = list(get_task(task).labels) or list(label_names)
    return {task: {"label_names": names, "label_map": dict(label_map or {})}}


def map_label(value: object, label_map: dict[str, int], where: str, unlabelled: Iterable[object] = ()) -> int:
    """The canonical index of a source label; ``-1`` for a value in ``unlabelled``; an error otherwise."""
    if value in set(unlabelled):
        return UNLABELLED
    try:
        return label_map[str(value)]
    except KeyError:
        raise ValueError(f"{where}: unknown label {value!r}; expected one of {sorted(label_map)}.") from None


NLI_MAP = {"entailment": 0, "neutral": 1, "contradiction": 2}
BINARY_MAP = {"0": 0, "1": 1}


# ---------------------------------------------------------------------------------------------- readers


def need(obj: dict, where: str, *names: str) -> Any:
    """The value of the first of ``names`` present in ``obj`` (spelling variants); an error naming them if none."""
    for name in names:
        if name in obj:
            return obj[name]
    spelled = " or ".join(repr(n) for n in names)
    raise ValueError(f"{where}: missing field {spelled} (fields present: {sorted(obj)[:12]}).")


ZIP_SUFFIX = ".zip"
NEWLINE = b"\n"


def _zip_member(path: Path, archive: zipfile.ZipFile) -> str:
    """The one data file inside a zipped annotation file (``train.jsonl.zip`` holds ``train.jsonl``)."""
    names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    inner = path.name.removesuffix(ZIP_SUFFIX)
    named = [n for n in names if Path(n).name == inner]
    if len(named) == 1 or len(names) == 1:
        return (named or names)[0]
    raise ValueError(f"{path}: expected one file (or one named {inner}) in the zip archive, found {names[:5]}.")


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """A file opened for reading bytes; a ``.zip`` (IGLUE's ``train.jsonl.zip``) is read through :mod:`zipfile`
    as a stream, never unpacked to disk."""
    if path.suffix != ZIP_SUFFIX:
        with open(path, "rb") as f:
            yield f
        return
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a readable zip archive ({err}); download it again.") from None
    with archive, archive.open(_zip_member(path, archive)) as f:
        yield f


def _decode(data: bytes, where: str, whole_file: bool = False) -> str:
    """UTF-8 text; invalid bytes fail naming ``where`` (for a whole file, with the line) and the fix."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = f":{data.count(NEWLINE, 0, err.start) + 1}" if whole_file else ""
        raise ValueError(
            f"{where}{line}: invalid UTF-8 (byte {data[err.start : err.start + 1]!r}); re-save the file as UTF-8."
        ) from None


def read_json(path: Path) -> Any:
    """A whole JSON file (or ``.json.zip``); invalid UTF-8 or a syntax error names the file and line."""
    with open_binary(path) as f:
        text = _decode(f.read(), str(path), whole_file=True)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON at column {err.colno}: {err.msg}") from None


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (or its ``.zip``), line endings kept; invalid UTF-8 fails naming the file,
    the line and the fix (a text-mode read would fail somewhere in an 8 KiB block, naming neither)."""
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            yield _decode(raw, f"{path}:{lineno}")


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    """``(where, object)`` per non-empty line of a ``.jsonl`` (or ``.jsonl.zip``) file, ``where`` being
    ``"<file>:<line>"`` for error messages (invalid UTF-8 and malformed JSON name it too)."""
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: malformed JSON: {err.msg}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
            yield where, obj


def read_table(path: Path, header: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` per row of a TSV (``.tsv``, no quoting, as GLUE ships it) or CSV (``.csv``) file.

    Args:
        path: The file.
        header: Column names for a file without a header line; ``None`` reads them from the first line.
    """
    csv.field_size_limit(sys.maxsize)
    lines = text_lines(path)  # csv reads the decoded lines as from a file opened with newline=""
    if path.suffix == ".csv":
        rows = csv.reader(lines)
    else:
        rows = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    names = list(header) if header is not None else next(rows, [])
    for row in rows:
        where = f"{path}:{rows.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise ValueError(f"{where}: {len(row)} columns, expected {len(names)} ({', '.join(names)}).")
        yield where, dict(zip(names, row))


def read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a ``.jsonl``/``.json`` (list of objects) file or a ``.tsv``/``.csv`` file with a header."""
    if path.suffix == ".jsonl":
        yield from read_jsonl(path)
    elif path.suffix == ".json":
        items = read_json(path)
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(items).__name__}.")
        for i, obj in enumerate(items):
            yield f"{path}: item {i}", obj
    else:
        yield from read_table(path)


def find_files(src: Path, *patterns: str) -> list[Path]:
    """``src`` itself when it is a file, else every file below it matching one of ``patterns``, sorted."""
    if src.is_file():
        return [src]
    found = sorted({p for pattern in patterns for p in src.rglob(pattern) if p.is_file()})
    if not found:
        raise FileNotFoundError(f"No files matching {', '.join(patterns)} below {src}.")
    return found


def vocab_file(opts: Options, src: Path, name: str) -> Path | None:
    """``--field vocab=PATH``, else the first file called ``name`` below ``--src`` (or beside it), else None."""
    if "vocab" in opts.fields:
        return Path(opts.fields["vocab"])
    return next(iter(sorted((src if src.is_dir() else src.parent).rglob(name))), None)


def lang_from_path(path: Path, langs: Iterable[str], default: str | None = None) -> str:
    """The nearest folder name (file upward) that is one of ``langs`` (IGLUE's ``annotations/<lang>/``)."""
    known = set(langs)
    for part in reversed(path.parent.parts):
        if part in known:
            return part
    if default is None:
        raise ValueError(
            f"{path}: cannot tell the language from the path (no folder named {sorted(known)}); pass --lang."
        )
    return default


def split_from_name(path: Path, default: str | None = None) -> str:
    """``train``/``dev``/``test`` found as a word in the file name (``dev_matched`` → ``dev``), else ``default``."""
    words = re.split(r"[^a-z0-9]+", path.name.lower())
    for split, names in (("train", ("train", "training")), ("dev", ("dev", "val", "valid")), ("test", ("test",))):
        if any(w in names for w in words):
            return split
    if default is None:
        raise ValueError(f"{path}: cannot tell the split from the file name; pass --split.")
    return default


SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev", "restval": "train", "sample": "dev"}


def canonical_split(name: str) -> str:
    """One name for the validation split across datasets (``val``/``valid``/``validation`` → ``dev``);
    Karpathy's ``restval`` joins ``train``; other names (``testdev``, ``train_1``, ``test1``) stay."""
    return SPLIT_ALIASES.get(name, name)


def stem(path: Path) -> str:
    """The file name up to its first dot (``test.head10.jsonl`` → ``test``, ``train.jsonl.zip`` → ``train``)."""
    return path.name.split(".")[0]


_GMT = re.compile(r"(\w+?)-([a-z]{2,3})_gmt")


def gmt_name(name: str) -> tuple[str, str] | None:
    """IGLUE's English sets machine-translated *into* a language for translate-train (``dev-ar_gmt`` in
    ``XVNLI/annotations/en``, ``nlvr2/annotations``; ``valid-de_gmt`` in ``flickr30k``):
    ``(translate_<split>, <lang>)``, the text being in ``<lang>``; None for other names."""
    match = _GMT.fullmatch(name)
    return (f"translate_{canonical_split(match.group(1))}", match.group(2)) if match else None


def iglue_split(path: Path, name: str) -> str:
    """IGLUE's machine-translated files (under ``annotations_machine-translate/`` or named ``*_gmt``) become
    ``translate_<split>``, kept apart from the human-translated ``<split>``."""
    base = name.removesuffix("_gmt")
    translated = base != name or "annotations_machine-translate" in path.parts
    return f"translate_{canonical_split(base)}" if translated else canonical_split(base)


def first_existing(candidates: Sequence[Path]) -> Path:
    """The first candidate that exists, else the first (the writer then reports it as missing)."""
    return next((c for c in candidates if c.is_file()), candidates[0])
