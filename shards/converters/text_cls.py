"""Text classification: MNLI, XNLI, ANLI, QQP, SST-2, PAWS-X (one column spec per dataset, one shared reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.catalogue import PAWSX_LANGS

from .common import (
    BINARY_MAP,
    NLI_MAP,
    UNLABELLED,
    Conversion,
    Options,
    converter,
    find_files,
    lang_from_path,
    make_key,
    map_label,
    need,
    read_rows,
    record,
    split_from_name,
    task_entry,
)


@dataclass(frozen=True)
class ClsSpec:
    """Where a dataset keeps its fields; each tuple lists the spellings of one column across its releases."""

    task: str
    doc: str  # the converter's help: which files it reads
    patterns: tuple[str, ...]
    text: tuple[str, ...]
    pair: tuple[str, ...] | None
    label: tuple[str, ...]
    label_map: dict[str, int]
    id: tuple[str, ...] = ()  # empty: the row number within the file
    split_of: Callable[[Path], str] = split_from_name
    lang_of: Callable[[Path, dict, str | None], str] = lambda path, row, lang: "en"


def mnli_split(path: Path) -> str:
    """``multinli_1.0_dev_matched.jsonl`` / GLUE ``dev_matched.tsv`` → ``dev_matched``; ``train`` stays."""
    return path.name.split(".jsonl")[0].removesuffix(".tsv").removeprefix("multinli_1.0_")


def cls_records(spec: ClsSpec, path: Path, opts: Options, skipped: list[dict]) -> list[dict]:
    """Rows as classification records; a test row without a label column (GLUE test files) is unlabelled (-1),
    a row whose label is ``"-"`` (no annotator majority, MNLI/XNLI) is skipped as GLUE does."""
    split, records = spec.split_of(path), []
    for i, (where, row) in enumerate(read_rows(path)):
        lang = spec.lang_of(path, row, opts.lang)
        id_ = need(row, where, *spec.id) if spec.id else i
        raw_label = next((row[k] for k in spec.label if k in row), None)
        if raw_label is None and not split.startswith("test"):
            need(row, where, *spec.label)  # only test files may come without labels
        if raw_label in ("-", ""):
            skipped.append({"key": make_key(split, lang, id_), "reason": f"no gold label ({raw_label!r})"})
            continue
        label = UNLABELLED if raw_label is None else map_label(raw_label, spec.label_map, where)
        pair = need(row, where, *spec.pair) if spec.pair else None
        fields = {"text": need(row, where, *spec.text), "text_pair": pair, "label": label}
        records.append(record(spec.task, split, lang, id_, fields))
    return records


def cls_conversion(spec: ClsSpec, opts: Options) -> Conversion:
    src = opts.need_src(f"the {spec.task} files ({', '.join(spec.patterns)}) or their folder")
    files, skipped, records = find_files(src, *spec.patterns), [], []
    for path in files:
        records += cls_records(spec, path, opts, skipped)
    return Conversion(records, task_entry(spec.task, spec.label_map), files, skipped)


def cls_reader(spec: ClsSpec) -> Callable[[Options], Conversion]:
    def read(opts: Options) -> Conversion:
        return cls_conversion(spec, opts)

    read.__doc__ = spec.doc
    return read


MNLI = ClsSpec(
    "mnli",
    "MNLI: MultiNLI ``multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl``, or GLUE ``MNLI/*.tsv``.",
    ("multinli_1.0_*.jsonl", "train.tsv", "dev_*.tsv", "test_*.tsv"),
    ("sentence1",),
    ("sentence2",),
    ("gold_label",),
    NLI_MAP,
    ("pairID",),
    mnli_split,
)
XNLI = ClsSpec(
    "xnli",
    "XNLI: ``XNLI-1.0/xnli.{dev,test}.jsonl`` (or one .tsv); language from each row.",
    ("xnli.*.jsonl",),
    ("sentence1",),
    ("sentence2",),
    ("gold_label",),
    NLI_MAP,
    ("pairID",),
    lang_of=lambda path, row, lang: row.get("language") or lang or "en",
)
ANLI = ClsSpec(
    "anli",
    "ANLI: ``anli_v1.0/R{1,2,3}/{train,dev,test}.jsonl``; rounds merge per split; e/n/c labels.",
    ("*.jsonl",),
    ("context",),
    ("hypothesis",),
    ("label",),
    {"e": 0, "n": 1, "c": 2},
    ("uid",),
)
QQP = ClsSpec(
    "qqp",
    "QQP: GLUE ``QQP/{train,dev,test}.tsv`` (``is_duplicate`` 1 = paraphrase).",
    ("*.tsv",),
    ("question1",),
    ("question2",),
    ("is_duplicate",),
    BINARY_MAP,
    ("id",),
)
SST2 = ClsSpec(
    "sst2",
    "SST-2: GLUE ``SST-2/{train,dev,test}.tsv``; ids are row numbers.",
    ("*.tsv",),
    ("sentence",),
    None,
    ("label",),
    BINARY_MAP,
)
PAWSX = ClsSpec(
    "pawsx",
    "PAWS-X: ``x-final/<lang>/{train,translated_train,dev_2k,test_2k}.tsv``.",
    ("*.tsv",),
    ("sentence1",),
    ("sentence2",),
    ("label",),
    BINARY_MAP,
    ("id",),
    lambda path: path.name.split(".")[0].removesuffix("_2k"),
    lambda path, row, lang: lang_from_path(path, PAWSX_LANGS, lang),
)

mnli = converter("mnli", cls_reader(MNLI))
xnli = converter("xnli", cls_reader(XNLI))
anli = converter("anli", cls_reader(ANLI))
qqp = converter("qqp", cls_reader(QQP))
sst2 = converter("sst2", cls_reader(SST2))
pawsx = converter("pawsx", cls_reader(PAWSX))
