"""Sentence retrieval without training (XTREME): BUCC 2018 bitext mining and Tatoeba similarity search."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from .common import Conversion, Options, converter, find_files, record, task_entry, text_lines

# Tatoeba file names use ISO 639-3 (XTREME's 36 languages); the catalogue uses ISO 639-1.
TATOEBA_CODES = {
    "afr": "af",
    "ara": "ar",
    "bul": "bg",
    "ben": "bn",
    "deu": "de",
    "ell": "el",
    "spa": "es",
    "est": "et",
    "eus": "eu",
    "pes": "fa",
    "fin": "fi",
    "fra": "fr",
    "heb": "he",
    "hin": "hi",
    "hun": "hu",
    "ind": "id",
    "ita": "it",
    "jpn": "ja",
    "jav": "jv",
    "kat": "ka",
    "kaz": "kk",
    "kor": "ko",
    "mal": "ml",
    "mar": "mr",
    "nld": "nl",
    "por": "pt",
    "rus": "ru",
    "swh": "sw",
    "tam": "ta",
    "tel": "te",
    "tha": "th",
    "tgl": "tl",
    "tur": "tr",
    "urd": "ur",
    "vie": "vi",
    "cmn": "zh",
}
# XTREME renames BUCC's "sample" (gold given) to dev and evaluates on "training" (gold given) as test.
BUCC_SPLITS = {"sample": "dev", "training": "test", "dev": "dev", "test": "test"}


def read_lines(path: Path) -> list[str]:
    return [line.rstrip("\r\n") for line in text_lines(path)]


def read_id_tsv(path: Path) -> list[tuple[str, str]]:
    """``<id><TAB><text>`` lines (BUCC sentences and gold files)."""
    rows = []
    for lineno, line in enumerate(read_lines(path), 1):
        cols = line.split("\t")
        if len(cols) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<id><TAB><text>', got {len(cols)} column(s).")
        rows.append((cols[0], cols[1]))
    return rows


def bucc_records(lang: str, split: str, files: dict[str, Path]) -> list[dict]:
    """Both sides of one language pair; ``gold`` is the partner id from the ``.gold`` file, null when absent."""
    gold: dict[str, str] = {}
    if "gold" in files:
        for src_id, tgt_id in read_id_tsv(files["gold"]):
            gold[src_id], gold[tgt_id] = tgt_id, src_id
    records = []
    for side, suffix in (("src", lang), ("tgt", "en")):
        if suffix not in files:
            raise FileNotFoundError(f"BUCC {lang}-en {split}: no .{suffix} file next to {next(iter(files.values()))}.")
        for id_, text in read_id_tsv(files[suffix]):
            records.append(record("bucc", split, lang, id_, {"text": text, "side": side, "gold": gold.get(id_)}))
    return records


def read_bucc(opts: Options) -> Conversion:
    """BUCC 2018: ``<l>-en.<split>.{<l>,en,gold}`` (``bucc2018/<l>-en/``), ``<id><TAB><sentence>`` lines.

    ``lang`` is the non-English side of the pair on both sides' records; ``side`` says which. Splits:
    ``sample`` → dev, ``training`` → test (XTREME's use; the official test gold is not public).
    """
    src = opts.need_src("the bucc2018 folder (or one <l>-en folder)")
    groups: dict[tuple[str, str], dict[str, Path]] = defaultdict(dict)
    for path in find_files(src, "??-en.*.*"):
        match = re.fullmatch(r"([a-z]{2})-en\.(\w+)\.(\w+)", path.name)
        if match and match.group(2) in BUCC_SPLITS:
            lang, split, suffix = match.groups()
            groups[(lang, BUCC_SPLITS[split])][suffix] = path
    records = [r for (lang, split), files in sorted(groups.items()) for r in bucc_records(lang, split, files)]
    sources = [p for files in groups.values() for p in files.values()]
    return Conversion(records, task_entry("bucc"), sorted(sources))


def read_tatoeba(opts: Options) -> Conversion:
    """Tatoeba (XTREME): ``tatoeba.<xxx>-eng.<xxx>`` and ``tatoeba.<xxx>-eng.eng``, line-aligned; test only.

    ``text`` is the sentence in ``lang``, ``text_pair`` its English translation; ids are line numbers.
    """
    src = opts.need_src("the Tatoeba folder (tatoeba.<xxx>-eng.<xxx> and .eng files)")
    records, sources = [], []
    for path in find_files(src, "tatoeba.*-eng.*"):
        code = path.name.split(".")[1].split("-")[0]
        if path.suffix == ".eng":
            continue
        english = path.with_suffix(".eng")
        src_lines, eng_lines = read_lines(path), read_lines(english)
        if len(src_lines) != len(eng_lines):
            raise ValueError(f"{path} has {len(src_lines)} lines but {english} has {len(eng_lines)}; they must align.")
        lang = TATOEBA_CODES.get(code, code)
        for i, (text, pair) in enumerate(zip(src_lines, eng_lines)):
            records.append(record("tatoeba", opts.split or "test", lang, i, {"text": text, "text_pair": pair}))
        sources += [path, english]
    return Conversion(records, task_entry("tatoeba"), sources)


bucc = converter("bucc", read_bucc)
tatoeba = converter("tatoeba", read_tatoeba)
