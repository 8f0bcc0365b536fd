"""Extractive QA pre- and post-processing, as Hugging Face's ``run_qa.py`` does it.

``prepare_features`` turns (question, context) pairs into overlapping windows over the context
("features"); ``postprocess`` turns the start/end logits of every feature back into one answer string per
example, searching the n best start and end tokens over all of that example's features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def prepare_features(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int,
    doc_stride: int,
    answers: Sequence[dict[str, list]] | None = None,
) -> dict[str, Tensor]:
    """Tokenize question/context pairs into windows of at most ``max_length`` tokens, ``doc_stride`` tokens
    overlapping, in one batched call of a fast tokenizer (question first, only the context truncated).

    Args:
        tokenizer: a ``PreTrainedTokenizerFast``.
        questions, contexts: one per example.
        max_length: tokens per feature, question and special tokens included.
        doc_stride: tokens shared by consecutive windows of one context.
        answers: per example, SQuAD-style ``{"text": [...], "answer_start": [char offsets]}`` (empty lists:
            unanswerable). Given for training: the first answer becomes ``start_positions``/``end_positions``.

    Returns:
        ``input_ids``, ``attention_mask`` (F, T); ``example_index`` (F,) feature -> example; ``offsets``
        (F, T, 2) character span of each context token in its context, (-1, -1) for question, special and
        padding tokens; with ``answers`` also ``start_positions``, ``end_positions`` (F,): the answer's first
        and last token, or the CLS index 0 when the answer is not inside the window or there is none.
    """
    enc = tokenizer(
        list(questions),
        list(contexts),
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        pad_to_multiple_of=8,
    )
    offsets = torch.full((len(enc["input_ids"]), len(enc["input_ids"][0]), 2), -1, dtype=torch.long)  # (F, T, 2)
    for f, spans in enumerate(enc["offset_mapping"]):
        is_context = torch.tensor([s == 1 for s in enc.sequence_ids(f)])
        offsets[f][is_context] = torch.tensor(spans, dtype=torch.long)[is_context]
    features = {
        "input_ids": torch.tensor(enc["input_ids"]),
        "attention_mask": torch.tensor(enc["attention_mask"]),
        "example_index": torch.tensor(enc["overflow_to_sample_mapping"]),
        "offsets": offsets,
    }
    if answers is not None:
        positions = [_answer_tokens(offsets[f], answers[e]) for f, e in enumerate(features["example_index"].tolist())]
        features["start_positions"] = torch.tensor([p[0] for p in positions])
        features["end_positions"] = torch.tensor([p[1] for p in positions])
    return features


def _answer_tokens(offsets: Tensor, answer: dict[str, list]) -> tuple[int, int]:
    """(first, last) token of the first answer in one feature; (0, 0) when it lies outside the window."""
    if not answer["answer_start"]:
        return 0, 0
    start_char = answer["answer_start"][0]
    end_char = start_char + len(answer["text"][0])
    context = (offsets[:, 0] >= 0).nonzero()[:, 0]  # token indices of this window's context
    if len(context) == 0 or offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return 0, 0
    starts, ends = offsets[context, 0], offsets[context, 1]
    first = context[(starts <= start_char).nonzero()[-1, 0]]  # last token starting at or before the answer
    last = context[(ends >= end_char).nonzero()[0, 0]]  # first token ending at or after it
    return int(first), int(last)


def postprocess(
    start_logits: Tensor,
    end_logits: Tensor,
    example_index: Tensor,
    offsets: Tensor,
    contexts: Sequence[str],
    n_best: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
) -> list[str]:
    """One answer string per example from the logits of its features (HF ``postprocess_qa_predictions``).

    For every feature, the ``n_best`` start and end tokens among its context tokens form candidate spans
    (end >= start, at most ``max_answer_length`` tokens), scored start + end logit; the best over all of the
    example's features wins. With ``allow_null`` (SQuAD v2), the answer is "" when the lowest CLS score
    (start[0] + end[0]) over the features beats it. An example without a valid span gets "".

    Args:
        start_logits, end_logits: (F, T).
        example_index: (F,) feature -> example, as ``prepare_features`` returns it.
        offsets: (F, T, 2) character spans, (-1, -1) outside the context.
        contexts: one per example.
    """
    assert start_logits.shape == end_logits.shape == offsets.shape[:2], (
        f"start {tuple(start_logits.shape)}, end {tuple(end_logits.shape)}, offsets {tuple(offsets.shape)}"
    )
    best: list[tuple[float, str]] = [(-float("inf"), "")] * len(contexts)
    null: list[float] = [float("inf")] * len(contexts)
    for f, e in enumerate(example_index.tolist()):
        null[e] = min(null[e], float(start_logits[f, 0] + end_logits[f, 0]))
        span = _best_span(start_logits[f].float(), end_logits[f].float(), offsets[f], n_best, max_answer_length)
        if span is not None and span[0] > best[e][0]:
            best[e] = (span[0], contexts[e][span[1] : span[2]])
    return ["" if allow_null and null[e] > score else text for e, (score, text) in enumerate(best)]


def _best_span(start: Tensor, end: Tensor, offsets: Tensor, n_best: int, max_len: int) -> tuple[float, int, int] | None:
    """(score, first char, end char) of the best span of one feature, None if it has no valid span."""
    outside = offsets[:, 0] < 0  # (T,)
    k = min(n_best, int((~outside).sum()))
    if k == 0:
        return None
    start_score, start_idx = start.masked_fill(outside, -float("inf")).topk(k)  # (k,)
    end_score, end_idx = end.masked_fill(outside, -float("inf")).topk(k)
    length = end_idx[None, :] - start_idx[:, None] + 1  # (k, k)
    scores = (start_score[:, None] + end_score[None, :]).masked_fill((length < 1) | (length > max_len), -float("inf"))
    flat = int(scores.argmax())
    if scores.view(-1)[flat] == -float("inf"):
        return None
    i, j = divmod(flat, k)
    return float(scores[i, j]), int(offsets[start_idx[i], 0]), int(offsets[end_idx[j], 1])
