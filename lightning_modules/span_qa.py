"""Extractive QA post-processing, as Hugging Face's ``run_qa.py`` does it.

``datamodules.span_qa.prepare_features`` (the data side) turns (question, context) pairs into overlapping
windows over the context ("features"); ``postprocess`` turns the start/end logits of every feature back
into one answer string per example, searching the n best start and end tokens over all of that example's features.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


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
        example_index: (F,) feature -> example, as ``datamodules.span_qa.prepare_features`` returns it.
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
