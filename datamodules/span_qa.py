"""Span-QA feature preparation (the data side), as Hugging Face's ``run_qa.py`` does it.

``prepare_features`` turns (question, context) pairs into overlapping windows over the context
("features") with the answer's token positions; ``lightning_modules.span_qa.postprocess`` turns the model's
start/end logits over those features back into one answer string per example.
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
