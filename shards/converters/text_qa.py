"""Extractive QA in the SQuAD JSON format: SQuAD v1.1/v2.0, XQuAD, MLQA, TyDiQA-GoldP."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .common import Conversion, Options, converter, find_files, need, read_json, record, split_from_name, task_entry

# TyDiQA's own release prefixes question ids with the language name.
TYDI_LANGS = {
    "arabic": "ar",
    "bengali": "bn",
    "english": "en",
    "finnish": "fi",
    "indonesian": "id",
    "korean": "ko",
    "russian": "ru",
    "swahili": "sw",
    "telugu": "te",
}

LangOf = Callable[[Path, str], str]  # (file, question id) -> language


def squad_records(task: str, path: Path, split: str, lang_of: LangOf) -> list[dict]:
    """One record per question; an unanswerable (v2 ``is_impossible``) question has empty answer lists."""
    records = []
    for a, article in enumerate(need(read_json(path), str(path), "data")):
        for p, paragraph in enumerate(need(article, f"{path}: article {a}", "paragraphs")):
            where = f"{path}: article {a} paragraph {p}"
            context = need(paragraph, where, "context")
            for qa in need(paragraph, where, "qas"):
                id_ = need(qa, where, "id")
                answers = [] if qa.get("is_impossible") else need(qa, f"{where} question {id_}", "answers")
                fields = {
                    "text": need(qa, f"{where} question {id_}", "question"),
                    "context": context,
                    "answers": {
                        "text": [x["text"] for x in answers],
                        "answer_start": [x["answer_start"] for x in answers],
                    },
                }
                records.append(record(task, split, lang_of(path, id_), id_, fields))
    return records


def squad_conversion(
    task: str,
    opts: Options,
    patterns: tuple[str, ...],
    lang_of: LangOf,
    keep: Callable[[Path], bool] = bool,
    derived: Callable[[list[Path]], dict[Path, str]] = lambda files: {},
) -> Conversion:
    """``derived``: files that copy others among those found (not read), with the reason."""
    src = opts.need_src(f"the {task} JSON files ({', '.join(patterns)}) or their folder")
    found = [p for p in find_files(src, *patterns) if keep(p)]
    ignored = derived(found)
    files, records = [p for p in found if p not in ignored], []
    for path in files:
        records += squad_records(task, path, split_from_name(path, opts.split or "test"), lang_of)
    return Conversion(records, task_entry(task), files, ignored=ignored)


def _english(path: Path, qid: str) -> str:
    return "en"


def read_squad_v1(opts: Options) -> Conversion:
    """SQuAD v1.1: ``train-v1.1.json``, ``dev-v1.1.json``."""
    return squad_conversion("squad_v1", opts, ("*-v1.1.json",), _english)


def read_squad_v2(opts: Options) -> Conversion:
    """SQuAD v2.0: ``train-v2.0.json``, ``dev-v2.0.json`` (unanswerable questions have empty answers)."""
    return squad_conversion("squad_v2", opts, ("*-v2.0.json",), _english)


def _lang_in_name(pattern: str) -> LangOf:
    def lang_of(path: Path, qid: str) -> str:
        match = re.search(pattern, path.name)
        if not match:
            raise ValueError(f"{path}: cannot tell the language from the file name (expected {pattern}).")
        return match.group(1)

    return lang_of


def read_xquad(opts: Options) -> Conversion:
    """XQuAD: ``xquad.<lang>.json`` (test only: 1,190 questions per language)."""
    return squad_conversion("xquad", opts, ("xquad.*.json",), _lang_in_name(r"xquad\.([a-z]{2})\.json"))


def mlqa_same_language(path: Path) -> bool:
    """XTREME evaluates MLQA on context and question in the same language (not the G-XLT pairs)."""
    match = re.search(r"context-([a-z]{2})-question-([a-z]{2})", path.name)
    return bool(match) and match.group(1) == match.group(2)


def read_mlqa(opts: Options) -> Conversion:
    """MLQA: ``MLQA_V1/{dev,test}/{dev,test}-context-<l>-question-<l>.json`` (same-language pairs only)."""
    lang_of = _lang_in_name(r"context-([a-z]{2})-question")
    return squad_conversion("mlqa", opts, ("*-context-*-question-*.json",), lang_of, mlqa_same_language)


def tydiqa_lang(path: Path, qid: str) -> str:
    """XTREME's ``tydiqa[.goldp].<lang>.dev.json``, else the language-name prefix of the id (``arabic-…``)."""
    match = re.search(r"tydiqa\.(?:goldp\.)?([a-z]{2})\.", path.name)
    if match:
        return match.group(1)
    prefix = qid.split("-", 1)[0]
    if prefix not in TYDI_LANGS:
        raise ValueError(f"{path}: question {qid!r} has no language prefix ({', '.join(TYDI_LANGS)}).")
    return TYDI_LANGS[prefix]


TYDI_TRAIN = "tydiqa-goldp-v1.1-train.json"


def xtreme_train_splits(files: list[Path]) -> dict[Path, str]:
    """XTREME's ``tydiqa[.goldp].<lang>.train.json`` beside the release's train file they were split from (its
    download_data.sh moves that file into their folder): the release file is read, the copies are not."""
    releases = {p.parent for p in files if p.name == TYDI_TRAIN}
    return {
        p: f"XTREME's per-language copy of {p.parent / TYDI_TRAIN} (read instead)"
        for p in files
        if p.parent in releases and re.fullmatch(r"tydiqa\.(?:goldp\.)?[a-z]{2}\.train\.json", p.name)
    }


def read_tydiqa(opts: Options) -> Conversion:
    """TyDiQA-GoldP: ``tydiqa-goldp-v1.1-train.json`` and the dev archive's ``tydiqa-goldp-dev-<language>.json``
    (or ``tydiqa-goldp-v1.1-dev.json``), or XTREME's ``tydiqa.<lang>.{train,dev}.json``; XTREME's per-language
    train files are left out when the release's train file they copy is beside them."""
    return squad_conversion("tydiqa", opts, ("tydiqa*.json",), tydiqa_lang, derived=xtreme_train_splits)


squad_v1 = converter("squad_v1", read_squad_v1)
squad_v2 = converter("squad_v2", read_squad_v2)
xquad = converter("xquad", read_xquad)
mlqa = converter("mlqa", read_mlqa)
tydiqa = converter("tydiqa", read_tydiqa)
