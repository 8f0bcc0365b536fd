"""What the analysis knows about a language: its script (Latin or not), its URIEL distances from English, and how
much of it each model config's encoder saw in pretraining.

Both come from small tables shipped in ``studies/tables/`` (nothing is downloaded when a study is analysed):

- ``uriel_distances.csv``: syntactic, genetic, geographic and phonological distance from English, the cosine
  distance between the URIEL vectors (Littell et al. 2017) that the ``lang2vec`` 1.1.2 wheel ships
  (``syntax_knn``, ``fam``, ``geo``, ``phonology_knn``). lang2vec itself is not a run-time dependency: its
  module imports ``pkg_resources`` (gone from fresh environments), and 1.1.2 has no ``distance()`` (later
  versions download the distance files). ``python -m studies.languages`` regenerates the table from the
  installed wheel's data files (``pip install lang2vec==1.1.2``, the ``uriel`` extra), read directly.
- ``pretraining.csv``: per text model (the ``model.core.text_model`` of a config) and language, the pretraining
  data and its source. A figure is only there with the paper table it comes from; every other cell is
  ``unknown``: never a guess.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from pathlib import Path
from typing import Any

TABLES = Path(__file__).resolve().parent / "tables"
URIEL_FILE = TABLES / "uriel_distances.csv"
PRETRAINING_FILE = TABLES / "pretraining.csv"
DISTANCES = ("syntactic", "genetic", "geographic", "phonological")
# lang2vec feature set of each distance (its FEATURE_SETS_DICT: file, source, feature-name prefix)
FEATURE_SETS = {
    "syntactic": ("feature_predictions.npz", "predicted", "S_"),
    "genetic": ("family_features.npz", "FAM", ""),
    "geographic": ("geocoord_features.npz", "GEOCOORDS", ""),
    "phonological": ("feature_predictions.npz", "predicted", "P_"),
}
NON_LATIN = {
    "ar",
    "bg",
    "bn",
    "el",
    "fa",
    "he",
    "hi",
    "ja",
    "ka",
    "kk",
    "ko",
    "ml",
    "mr",
    "my",
    "ru",
    "ta",
    "te",
    "th",
    "uk",
    "ur",
    "zh",
}
LATIN = {
    "af",
    "da",
    "de",
    "en",
    "es",
    "et",
    "eu",
    "fi",
    "fr",
    "hu",
    "id",
    "it",
    "jv",
    "ms",
    "nl",
    "pt",
    "sw",
    "tl",
    "tr",
    "vi",
    "wo",
    "yo",
}
ISO3 = {
    "af": "afr",
    "ar": "arb",
    "bg": "bul",
    "bn": "ben",
    "da": "dan",
    "de": "deu",
    "el": "ell",
    "en": "eng",
    "es": "spa",
    "et": "est",
    "eu": "eus",
    "fa": "pes",
    "fi": "fin",
    "fr": "fra",
    "he": "heb",
    "hi": "hin",
    "hu": "hun",
    "id": "ind",
    "it": "ita",
    "ja": "jpn",
    "jv": "jav",
    "ka": "kat",
    "kk": "kaz",
    "ko": "kor",
    "ml": "mal",
    "mr": "mar",
    "ms": "zsm",
    "my": "mya",
    "nl": "nld",
    "pt": "por",
    "ru": "rus",
    "sw": "swh",
    "ta": "tam",
    "te": "tel",
    "th": "tha",
    "tl": "tgl",
    "tr": "tur",
    "uk": "ukr",
    "ur": "urd",
    "vi": "vie",
    "wo": "wol",
    "yo": "yor",
    "zh": "cmn",
}
"""ISO 639-1 -> the ISO 639-3 code URIEL files the language under (macrolanguages: the main individual one)."""


@cache
def _uriel() -> dict[str, dict[str, float | None]]:
    if not URIEL_FILE.is_file():
        return {}
    with URIEL_FILE.open() as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    return {r["lang"]: {k: (float(r[k]) if r[k] not in ("", "unknown") else None) for k in DISTANCES} for r in rows}


def language(lang: str) -> dict[str, Any]:
    """``{"lang", "script": Latin | non-Latin | unknown, "syntactic", "genetic", "geographic", "phonological"}``
    (a distance is None where the table lacks it)."""
    script = "Latin" if lang in LATIN else "non-Latin" if lang in NON_LATIN else "unknown"
    distances = _uriel().get(lang, dict.fromkeys(DISTANCES))
    return {"lang": lang, "script": script, **distances}


@cache
def pretraining_rows() -> list[dict[str, str]]:
    """The rows of ``pretraining.csv``: text_model, lang, value (a number or ``unknown``), unit, source."""
    with PRETRAINING_FILE.open() as f:
        return [dict(r) for r in csv.DictReader(line for line in f if not line.startswith("#"))]


def pretraining(text_model: str, lang: str) -> dict[str, str]:
    """The pretraining data of ``text_model`` in ``lang``: ``{"value", "unit", "source"}``; value ``unknown``
    where no source gives it (or the model is not in the table)."""
    for row in pretraining_rows():
        if row["text_model"] == text_model and row["lang"] in (lang, "*"):
            return {"value": row["value"], "unit": row["unit"], "source": row["source"]}
    return {"value": "unknown", "unit": "", "source": ""}


def pretraining_value(text_model: str, lang: str) -> float | None:
    """The pretraining figure as a number (None where unknown)."""
    value = pretraining(text_model, lang)["value"]
    try:
        return float(value)
    except ValueError:
        return None


# ------------------------------------------------------------------------------- regenerating the URIEL table


def uriel_distances_from_lang2vec(langs: list[str]) -> dict[str, dict[str, float | None]]:
    """Cosine distance from English of each language's URIEL vectors, read from the installed lang2vec wheel's
    data files (numpy archives; no lang2vec import, no download). Features missing for either language (-1 in
    URIEL's files) are left out of that pair's vectors."""
    import importlib.resources

    import numpy as np

    root = importlib.resources.files("lang2vec") / "data"
    out: dict[str, dict[str, float | None]] = {lang: {} for lang in langs}
    for kind, (filename, source, prefix) in FEATURE_SETS.items():
        with importlib.resources.as_file(root / filename) as path:
            db = np.load(path, allow_pickle=False)
            index = {code: i for i, code in enumerate(db["langs"])}
            feats = [i for i, name in enumerate(db["feats"]) if name.startswith(prefix)]
            src = list(db["sources"]).index(source)
            table = db["data"][:, feats, src]  # (languages, features)
        english = table[index["eng"]]
        for lang in langs:
            row = table[index[ISO3[lang]]] if ISO3.get(lang) in index else None
            if row is None:
                out[lang][kind] = None
                continue
            known = (row >= 0) & (english >= 0)
            a, b = row[known].astype(float), english[known].astype(float)
            denom = float(np.linalg.norm(a) * np.linalg.norm(b))
            if denom > 0:
                out[lang][kind] = round(max(0.0, 1 - float(a @ b) / denom), 4)
            else:  # a language isolate has no family feature: it shares no family with English
                out[lang][kind] = 1.0 if kind == "genetic" and known.any() else None
    return out


def write_uriel_table(path: Path = URIEL_FILE) -> None:
    langs = sorted(ISO3)
    table = uriel_distances_from_lang2vec(langs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write(
            "# URIEL distance from English: 1 - cosine similarity of the URIEL vectors (Littell et al. 2017,\n"
            "# 'URIEL and lang2vec', EACL) shipped in lang2vec 1.1.2 (PyPI): syntax_knn, fam, geo, phonology_knn.\n"
            "# Regenerate: pip install lang2vec==1.1.2 && python -m studies.languages\n"
        )
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["lang", "iso639_3", *DISTANCES])
        for lang in langs:
            values = [table[lang][k] for k in DISTANCES]
            writer.writerow([lang, ISO3[lang], *("" if v is None or math.isnan(v) else v for v in values)])


if __name__ == "__main__":
    write_uriel_table()
    print(f"wrote {URIEL_FILE}")
