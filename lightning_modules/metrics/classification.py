"""Metrics over predicted labels: accuracy (classification, multiple choice, tagging, MLM), VQA accuracy,
entity-level span F1 (NER)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_modules.metrics.outcomes import OutcomeStates
from lightning_modules.metrics.sync import gather_ragged, percent


class Accuracy(OutcomeStates, Metric):
    """Accuracy (%). A label that no prediction can equal (XVNLI's unlabelled ``-1``) counts as wrong.

    Per-sample outcomes (``keys`` given): ``correct`` and ``total`` per row of ``preds`` (one sample; for
    tagging one sentence and its words).

    Args:
        ignore_index: label value dropped from numerator and denominator (``-100`` for word-level tagging
            and MLM). Nothing is ignored by default: in particular ``-1`` is never ignored implicitly.
        name: the key ``compute`` returns (``acc``, ``mlm_acc``).
    """

    full_state_update = False

    def __init__(self, ignore_index: int | None = None, name: str = "acc", **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)  # list states (outcomes) may be empty on a rank
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.names = (name,)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")
        self._init_outcomes(("correct", "total"))

    def update(
        self,
        preds: Tensor | Sequence[Sequence[int]],
        labels: Tensor | Sequence[Sequence[int]],
        keys: Sequence[str] | None = None,
    ) -> None:
        """Args: preds, labels: integer tensors of one shape ((B,), (B, W), ...), or per-sentence lists of
        word tags (tagging), flattened either way; keys: one per row (sample), for the outcomes."""
        if not isinstance(preds, Tensor):
            lengths = [len(p) for p in preds]
            preds, labels = torch.tensor(_flat(preds)), torch.tensor(_flat(labels))
        else:
            lengths = [int(preds[0].numel())] * len(preds) if preds.ndim else []
        assert preds.shape == labels.shape, f"preds {tuple(preds.shape)} vs labels {tuple(labels.shape)}"
        preds, labels = preds.reshape(-1), labels.reshape(-1)
        keep = labels != self.ignore_index if self.ignore_index is not None else torch.ones_like(labels, dtype=bool)
        hit = (preds == labels) & keep
        self.correct += hit.sum()
        self.total += keep.sum()
        if keys is not None and len(keys) == len(lengths):  # per row: one sample (a sentence for tagging)
            rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
            zeros = torch.zeros(len(lengths), dtype=torch.float64)
            correct = zeros.index_add(0, rows, hit.cpu().double())
            self._record(keys, correct=correct, total=zeros.index_add(0, rows, keep.cpu().double()))
        else:
            self._record(None)  # no per-row keys (MLM's flattened masked tokens): outcomes incomplete

    def compute(self) -> dict[str, Tensor]:
        return {self.names[0]: percent(self.correct, self.total)}

    def outcome_formulas(self) -> dict[str, tuple]:
        return {self.names[0]: ("ratio", "correct", "total")}


def vqa_soft_score(num_matching_humans: int) -> float:
    """The soft score the converters store per answer: ``min(n / 3, 1)`` for n of the annotators."""
    return min(num_matching_humans / 3.0, 1.0)


def vqa_official_score(answers: Sequence[str], pred: str) -> float:
    """The VQA evaluation's accuracy: ``min(#matches among the other 9 / 3, 1)`` averaged over the 10
    leave-one-out subsets of the human answers. Compares stripped strings exactly (the official script's
    punctuation/number/article processing is the converter's job). The converters store the simpler
    ``vqa_soft_score`` instead, as most VQA training code does.
    """
    pred = pred.strip()
    gt = [a.strip() for a in answers]
    scores = [min(sum(a == pred for a in gt[:i] + gt[i + 1 :]) / 3.0, 1.0) for i in range(len(gt))]
    return sum(scores) / len(scores)


class VQAAccuracy(OutcomeStates, Metric):
    """VQA accuracy (%): the soft score of the predicted answer, averaged over questions. A question whose
    answer is outside the vocabulary (all-zero targets) scores 0 and still counts. Outcomes: ``score``
    (the soft score) and ``total`` (1) per question."""

    full_state_update = False
    names = ("vqa_acc",)

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)
        super().__init__(**kwargs)
        self.add_state("score", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")
        self._init_outcomes(("score", "total"))

    def update(self, preds: Tensor, targets: Tensor, keys: Sequence[str] | None = None) -> None:
        """Args: preds: answer indices (B,); targets: soft scores (B, num_answers), 0 where not given;
        keys: one per question, for the outcomes."""
        assert preds.shape == targets.shape[:1], f"preds {tuple(preds.shape)} vs targets {tuple(targets.shape)}"
        scores = targets.float().gather(1, preds.long()[:, None])[:, 0]
        self.score += scores.sum()
        self.total += preds.numel()
        self._record(keys, score=scores, total=torch.ones_like(scores))

    def compute(self) -> dict[str, Tensor]:
        return {"vqa_acc": percent(self.score, self.total)}

    def outcome_formulas(self) -> dict[str, tuple]:
        return {"vqa_acc": ("ratio", "score", "total")}


def iob2_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities ``(type, start, end_inclusive)`` of one IOB2 sequence, as conlleval/seqeval's default mode
    reads them: an ``I-X`` after ``O`` or after another type starts a new entity."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, typ = tag.partition("-")
        continues = prefix == "I" and kind == typ
        if start is not None and not continues:
            spans.add((kind, start, i - 1))
            start, kind = None, None
        if prefix == "B" or (prefix == "I" and not continues):
            start, kind = i, typ
    return spans


class SpanF1(OutcomeStates, Metric):
    """Entity-level micro F1 (%) over IOB2 spans, as seqeval's default (conlleval) mode. Outcomes: ``tp``,
    ``n_pred``, ``n_gold`` per sentence.

    Args:
        label_names: tag names by index (``O``, ``B-PER``, ``I-PER``, ...).
    """

    full_state_update = False
    names = ("span_f1", "span_precision", "span_recall")

    def __init__(self, label_names: Sequence[str], **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)
        super().__init__(**kwargs)
        assert label_names, "SpanF1 needs the tag names (label_names), e.g. from the shards' manifest"
        self.label_names = list(label_names)
        for state in ("tp", "n_pred", "n_gold"):
            self.add_state(state, torch.tensor(0), dist_reduce_fx="sum")
        self._init_outcomes(("tp", "n_pred", "n_gold"))

    def update(
        self,
        preds: Sequence[Sequence[int]] | Tensor,
        labels: Sequence[Sequence[int]] | Tensor,
        keys: Sequence[str] | None = None,
    ) -> None:
        """Args: preds, labels: word-level tag indices per sentence, lists or (B, W) tensors; positions
        whose label is -100 (padding) are dropped from both; keys: one per sentence, for the outcomes."""
        counts = []
        for pred, gold in zip(_rows(preds), _rows(labels)):
            assert len(pred) == len(gold), f"sentence lengths differ: {len(pred)} preds vs {len(gold)} labels"
            kept = [(p, g) for p, g in zip(pred, gold) if g != -100]
            pred_spans = iob2_spans([self.label_names[p] for p, _ in kept])
            gold_spans = iob2_spans([self.label_names[g] for _, g in kept])
            counts.append((len(pred_spans & gold_spans), len(pred_spans), len(gold_spans)))
            self.tp += counts[-1][0]
            self.n_pred += counts[-1][1]
            self.n_gold += counts[-1][2]
        self._record(keys, **{name: [c[i] for c in counts] for i, name in enumerate(("tp", "n_pred", "n_gold"))})

    def compute(self) -> dict[str, Tensor]:
        tp, n_pred, n_gold = self.tp.item(), self.n_pred.item(), self.n_gold.item()
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        return {k: torch.tensor(100.0 * v) for k, v in zip(self.names, (f1, precision, recall))}

    def outcome_formulas(self) -> dict[str, tuple]:
        return {
            "span_f1": ("f1", "tp", "n_pred", "n_gold"),
            "span_precision": ("ratio", "tp", "n_pred"),
            "span_recall": ("ratio", "tp", "n_gold"),
        }


def _flat(rows: Sequence[Sequence[int]]) -> list[int]:
    return [x for row in rows for x in row]


def _rows(x: Sequence[Sequence[int]] | Tensor) -> list[list[int]]:
    return x.tolist() if isinstance(x, Tensor) else [list(r) for r in x]
