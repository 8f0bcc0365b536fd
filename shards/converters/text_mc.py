"""Multiple choice: HellaSwag, CosmosQA, CommonsenseQA (``text`` = context, ``choices``, ``label``; -1 on test)."""

from __future__ import annotations

from collections.abc import Callable

from .common import (
    UNLABELLED,
    Conversion,
    Options,
    converter,
    find_files,
    need,
    read_rows,
    record,
    split_from_name,
    task_entry,
)

RowFields = Callable[[dict, str], tuple[object, dict]]  # (row, where) -> (id, json fields)


def choice_label(value: object, n_choices: int, where: str) -> int:
    """An answer index given as an int or a digit string; ``None``/absent (test files) is unlabelled."""
    if value is None or value == "":
        return UNLABELLED
    index = int(value)
    if not 0 <= index < n_choices:
        raise ValueError(f"{where}: label {value!r} is not a choice index below {n_choices}.")
    return index


def hellaswag_fields(row: dict, where: str) -> tuple[object, dict]:
    """``ctx`` (= ``ctx_a`` + ``ctx_b``), four ``endings``, ``label`` (absent on test); id ``ind``."""
    endings = need(row, where, "endings")
    fields = {
        "text": need(row, where, "ctx"),
        "choices": endings,
        "label": choice_label(row.get("label"), len(endings), where),
    }
    return need(row, where, "ind"), fields


def cosmosqa_fields(row: dict, where: str) -> tuple[object, dict]:
    """``context`` and ``question`` joined into ``text``; ``answer0``..``answer3``; ``label`` (absent on test)."""
    choices = [need(row, where, f"answer{i}") for i in range(4)]
    text = f"{need(row, where, 'context')} {need(row, where, 'question')}"
    return need(row, where, "id"), {"text": text, "choices": choices, "label": choice_label(row.get("label"), 4, where)}


def commonsenseqa_fields(row: dict, where: str) -> tuple[object, dict]:
    """``question.stem``, ``question.choices`` ordered by their letter, ``answerKey`` (absent on test)."""
    question = need(row, where, "question")
    choices = sorted(need(question, where, "choices"), key=lambda c: c["label"])
    letters = [c["label"] for c in choices]
    key = row.get("answerKey")
    if key is not None and key not in letters:
        raise ValueError(f"{where}: answerKey {key!r} is not one of the choices {letters}.")
    label = UNLABELLED if key is None else letters.index(key)
    fields = {"text": need(question, where, "stem"), "choices": [c["text"] for c in choices], "label": label}
    return need(row, where, "id"), fields


def mc_conversion(task: str, opts: Options, patterns: tuple[str, ...], fields_of: RowFields) -> Conversion:
    src = opts.need_src(f"the {task} files ({', '.join(patterns)}) or their folder")
    files, records = find_files(src, *patterns), []
    for path in files:
        split = split_from_name(path)
        for where, row in read_rows(path):
            id_, fields = fields_of(row, where)
            if fields["label"] == UNLABELLED and split != "test":
                raise ValueError(f"{where}: no answer label; only test files may come without one.")
            records.append(record(task, split, "en", id_, fields))
    return Conversion(records, task_entry(task), files)


def read_hellaswag(opts: Options) -> Conversion:
    """HellaSwag: ``hellaswag_{train,val,test}.jsonl`` (val → dev)."""
    return mc_conversion("hellaswag", opts, ("hellaswag_*.jsonl",), hellaswag_fields)


def read_cosmosqa(opts: Options) -> Conversion:
    """CosmosQA: ``train.csv``, ``valid.csv`` (→ dev) and ``test.jsonl`` (no labels)."""
    return mc_conversion("cosmosqa", opts, ("*.csv", "*.jsonl"), cosmosqa_fields)


def read_commonsenseqa(opts: Options) -> Conversion:
    """CommonsenseQA: ``{train,dev}_rand_split.jsonl``, ``test_rand_split_no_answers.jsonl``."""
    return mc_conversion("commonsenseqa", opts, ("*_rand_split*.jsonl",), commonsenseqa_fields)


hellaswag = converter("hellaswag", read_hellaswag)
cosmosqa = converter("cosmosqa", read_cosmosqa)
commonsenseqa = converter("commonsenseqa", read_commonsenseqa)
