"""Extractive QA exact match and F1, with the SQuAD v1.1 or MLQA (per-language) answer normalisation."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_modules.metrics.outcomes import OutcomeStates
from lightning_modules.metrics.sync import gather_ragged, percent

# MLQA's evaluation script (mlqa_evaluation_v1.py): unicode punctuation, per-language articles.
_MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",  # verbatim: in effect removes every "ال"
    "hi": None,
    "zh": None,
}
_SQUAD_PUNCT = set(string.punctuation)
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _is_mlqa_punct(char: str) -> bool:
    """MLQA's punctuation: every unicode ``P*`` category plus ``string.punctuation`` (which adds symbols)."""
    return char in _SQUAD_PUNCT or unicodedata.category(char).startswith("P")


def _mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese segmentation: every CJK character and punctuation mark is a token."""
    tokens, run = [], ""
    for char in text:
        if _CJK.search(char) or _is_mlqa_punct(char):
            tokens += run.split() + [char]
            run = ""
        else:
            run += char
    return tokens + run.split()


def normalize_answer(text: str, lang: str | None = None) -> str:
    """SQuAD v1.1 normalisation (lang None), or MLQA's for ``lang`` in en, es, de, vi, ar, hi, zh."""
    text = text.lower()
    if lang is None:
        text = "".join(ch for ch in text if ch not in _SQUAD_PUNCT)
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())
    if lang not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA normalisation has no language {lang!r}; valid: {sorted(_MLQA_ARTICLES)} or None")
    text = "".join(ch for ch in text if not _is_mlqa_punct(ch))
    if _MLQA_ARTICLES[lang] is not None:
        text = re.sub(_MLQA_ARTICLES[lang], " ", text)
    tokens = _mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def squad_em_f1(prediction: str, references: Sequence[str], lang: str | None = None) -> tuple[float, float]:
    """(EM, F1) in [0, 1] of one prediction: max over references; no reference = unanswerable (SQuAD v2:
    1 if the prediction normalises to empty, else 0)."""
    pred = normalize_answer(prediction, lang).split()
    if not references:
        return float(not pred), float(not pred)
    scores = [_em_f1(pred, normalize_answer(r, lang).split()) for r in references]
    return max(s[0] for s in scores), max(s[1] for s in scores)


def _em_f1(pred: list[str], gold: list[str]) -> tuple[float, float]:
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return float(pred == gold), 0.0
    precision, recall = same / len(pred), same / len(gold)
    return float(pred == gold), 2 * precision * recall / (precision + recall)


class SquadMetric(OutcomeStates, Metric):
    """Exact match and token F1 (%) of extractive QA, max over the reference answers. Outcomes: ``em``,
    ``f1`` (0-1) and ``total`` (1) per question.

    Args:
        lang: MLQA normalisation language (MLQA's own script). None: SQuAD v1.1 normalisation, which XTREME
            uses for SQuAD, XQuAD and TyDiQA-GoldP in every language.
    """

    full_state_update = False
    names = ("em", "f1")

    def __init__(self, lang: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)
        super().__init__(**kwargs)
        normalize_answer("", lang)  # fail now on an unknown language
        self.lang = lang
        self.add_state("em", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("f1", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")
        self._init_outcomes(("em", "f1", "total"))

    def update(
        self, predictions: Sequence[str], references: Sequence[Sequence[str]], keys: Sequence[str] | None = None
    ) -> None:
        """Args: predictions: one answer string per question; references: its gold answers ([] = none);
        keys: one per question, for the outcomes."""
        assert len(predictions) == len(references), f"{len(predictions)} predictions, {len(references)} refs"
        scores = [squad_em_f1(pred, refs, self.lang) for pred, refs in zip(predictions, references)]
        for em, f1 in scores:
            self.em += em
            self.f1 += f1
        self.total += len(predictions)
        self._record(keys, em=[e for e, _ in scores], f1=[f for _, f in scores], total=[1.0] * len(scores))

    def compute(self) -> dict[str, Tensor]:
        return {"em": percent(self.em, self.total), "f1": percent(self.f1, self.total)}

    def outcome_formulas(self) -> dict[str, tuple]:
        return {"em": ("ratio", "em", "total"), "f1": ("ratio", "f1", "total")}
