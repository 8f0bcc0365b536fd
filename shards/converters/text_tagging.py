"""Token tagging: UD-POS (CoNLL-U), PAN-X (XTREME's ``lang:token<TAB>tag`` files), CCG supertags.

The tag vocabulary goes into the manifest's ``label_names``; ``tags`` hold indices into it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from contracts.catalogue import PANX_LANGS

from .common import (
    Conversion,
    Options,
    converter,
    find_files,
    lang_from_path,
    need,
    read_json,
    read_jsonl,
    record,
    split_from_name,
    task_entry,
    text_lines,
    vocab_file,
)

UPOS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

Sentence = tuple[str, object, list[str], list[str]]  # (where, id, tokens, tags)


def tag_record(task: str, split: str, lang: str, sentence: Sentence, index: dict[str, int]) -> dict:
    """A tagging record; a tag outside the vocabulary is an error naming the sentence."""
    where, id_, tokens, tags = sentence
    unknown = sorted(set(tags) - index.keys())
    if unknown:
        raise ValueError(f"{where}: unknown tag(s) {unknown[:5]}; known: {sorted(index)[:20]}.")
    return record(task, split, lang, id_, {"tokens": tokens, "tags": [index[t] for t in tags]})


# --------------------------------------------------------------------------------------------------- UD-POS


def conllu_sentences(path: Path) -> Iterator[Sentence]:
    """Sentences of a CoNLL-U file (FORM, UPOS); multi-word token ranges and empty nodes are left out."""
    tokens, tags, sent_id, start = [], [], None, 1
    for lineno, line in enumerate(text_lines(path), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if tokens:
                yield f"{path}:{start}", sent_id or f"{path.stem}:{start}", tokens, tags
            tokens, tags, sent_id, start = [], [], None, lineno + 1
        elif line.startswith("#"):
            if line.startswith("# sent_id"):
                sent_id = line.split("=", 1)[-1].strip()
        else:
            cols = line.split("\t")
            if len(cols) != 10:
                raise ValueError(
                    f"{path}:{lineno}: a CoNLL-U token line has 10 tab-separated columns, got {len(cols)}."
                )
            if "-" in cols[0] or "." in cols[0]:
                continue
            tokens.append(cols[1])
            tags.append(cols[3])
    if tokens:
        yield f"{path}:{start}", sent_id or f"{path.stem}:{start}", tokens, tags


def udpos_lang(path: Path) -> str:
    """``en_ewt-ud-train.conllu`` → ``en``."""
    return path.name.split("_", 1)[0]


def read_udpos(opts: Options) -> Conversion:
    """UD-POS: Universal Dependencies ``<lang>_<treebank>-ud-{train,dev,test}.conllu``; all treebanks of a
    language merge (XTREME); ids are ``<treebank>/<sent_id>``; the 17 UPOS tags."""
    src = opts.need_src("the UD treebank .conllu files or a folder of treebanks")
    files, index, records = find_files(src, "*.conllu"), {t: i for i, t in enumerate(UPOS)}, []
    for path in files:
        treebank = path.name.split("-ud-")[0]
        split, lang = split_from_name(path), opts.lang or udpos_lang(path)
        for where, sent_id, tokens, tags in conllu_sentences(path):
            records.append(tag_record("udpos", split, lang, (where, f"{treebank}/{sent_id}", tokens, tags), index))
    return Conversion(records, task_entry("udpos", label_names=UPOS), files)


# ---------------------------------------------------------------------------------------------------- PAN-X


def column_sentences(path: Path) -> Iterator[Sentence]:
    """Blank-line separated ``token<TAB>tag`` lines (PAN-X); ids are sentence numbers in the file."""
    tokens, tags, n, start = [], [], 0, 1
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            if tokens:
                yield f"{path}:{start}", n, tokens, tags
                n += 1
            tokens, tags, start = [], [], lineno + 1
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'token<TAB>tag', got {len(cols)} column(s).")
        tokens.append(cols[0])
        tags.append(cols[1])
    if tokens:
        yield f"{path}:{start}", n, tokens, tags


def panx_lang(path: Path, tokens: list[str], lang: str | None) -> str:
    """The ``<lang>:`` prefix of the tokens (XTREME's PAN-X files), else the folder name or ``--lang``."""
    match = re.match(r"([a-z]{2,3}):", tokens[0])
    return match.group(1) if match else lang_from_path(path, PANX_LANGS, lang)


def read_panx(opts: Options) -> Conversion:
    """PAN-X (WikiANN, XTREME split): ``<lang>/{train,dev,test}`` files of ``<lang>:<token><TAB><tag>`` lines.

    The ``<lang>:`` prefix is removed from tokens and gives the language; the 7 IOB2 tags (PER, ORG, LOC).
    """
    src = opts.need_src("the PAN-X folder (<lang>/train, dev, test) or one of its files")
    files, index, records = find_files(src, "train", "dev", "test"), {t: i for i, t in enumerate(PANX_TAGS)}, []
    for path in files:
        for where, n, tokens, tags in column_sentences(path):
            lang = panx_lang(path, tokens, opts.lang)
            words = [t.removeprefix(f"{lang}:") for t in tokens]
            records.append(tag_record("panx", split_from_name(path), lang, (where, n, words, tags), index))
    return Conversion(records, task_entry("panx", label_names=PANX_TAGS), files)


# ------------------------------------------------------------------------------------------------------ CCG


def ccg_sentences(path: Path) -> Iterator[Sentence]:
    """jiant's CCG files: ``.jsonl`` with ``text`` and ``tags`` (space-separated strings or lists), or
    ``tokens<TAB>tags`` lines (``ccg.{train,dev,test}``); ids are row numbers."""
    rows = read_jsonl(path) if path.suffix == ".jsonl" else _tab_rows(path)
    for n, (where, row) in enumerate(rows):
        tokens, tags = _words(need(row, where, "text")), _words(need(row, where, "tags"))
        if len(tokens) != len(tags):
            raise ValueError(f"{where}: {len(tokens)} tokens but {len(tags)} tags.")
        yield where, n, tokens, tags


def _words(value: str | list[str]) -> list[str]:
    return value.split() if isinstance(value, str) else list(value)


def _tab_rows(path: Path) -> Iterator[tuple[str, dict]]:
    for lineno, line in enumerate(text_lines(path), 1):
        if line.strip():
            cols = line.rstrip("\r\n").split("\t")
            if len(cols) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'tokens<TAB>tags', got {len(cols)} column(s).")
            yield f"{path}:{lineno}", {"text": cols[0], "tags": cols[1]}


def read_ccg(opts: Options) -> Conversion:
    """CCG supertagging (CCGbank via jiant): ``ccg.{train,dev,test}`` (tsv) or ``{train,dev,test}.jsonl``.

    Tag vocabulary: jiant's ``tags_to_id.json`` below ``--src`` (or ``--field vocab=PATH``), else every tag seen
    in the files read, sorted (build all splits in one call so that they share it).
    """
    src = opts.need_src("the CCG files (ccg.train, ccg.dev, ccg.test or *.jsonl) or their folder")
    files = [p for p in find_files(src, "ccg.*", "*.jsonl") if p.name != "tags_to_id.json"]
    sentences = {p: list(ccg_sentences(p)) for p in files}
    vocab_path = vocab_file(opts, src, "tags_to_id.json")
    if vocab_path is not None:
        tag_ids = read_json(vocab_path)
        vocab = sorted(tag_ids, key=tag_ids.get)
    else:
        vocab = sorted({t for sents in sentences.values() for s in sents for t in s[3]})
    index = {t: i for i, t in enumerate(vocab)}
    records = [tag_record("ccg", split_from_name(p), "en", s, index) for p in files for s in sentences[p]]
    return Conversion(records, task_entry("ccg", label_names=vocab), [*files, *([vocab_path] if vocab_path else [])])


udpos = converter("udpos", read_udpos)
panx = converter("panx", read_panx)
ccg = converter("ccg", read_ccg)
