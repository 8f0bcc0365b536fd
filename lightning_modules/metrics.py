"""Every metric of the study as a ``torchmetrics.Metric``, so that DDP ranks sync their states exactly.

Each metric's ``compute()`` returns a flat dict ``{name: 0-dim tensor}`` whose names are the catalogue's
metric names (``lightning_modules.tasks``); ``build_metrics`` returns one such object per (task, language).
All scores are **percentages (0-100)**, as IGLUE and XTREME report them; BUCC's ``bucc_threshold`` is a raw
margin score. A metric that saw no sample returns NaN rather than a made-up 0.

States are sums (``dist_reduce_fx="sum"``) or lists of tensors (``"cat"``), so after a sync every sample
counts exactly once. String ids (images, BUCC sentences) are stored as stable 64-bit hashes, identical on
every rank. Metrics with list states sync through ``gather_ragged``, which also copes with a rank that saw
no sample (torchmetrics sends a float ``(0,)`` placeholder for it, which plain all-gather cannot mix with
``(N, D)`` embeddings or int64 ids).
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_modules.tasks import TaskSpec

_NAN = float("nan")


def _percent(num: Tensor, den: Tensor) -> Tensor:
    """100 * num / den as float32, NaN when nothing was counted."""
    if den.item() == 0:
        return torch.tensor(_NAN)
    return (100.0 * num.float() / den.float()).cpu()


def hash_ids(ids: Sequence[str | int]) -> Tensor:
    """Stable signed 64-bit hashes of ``str(id)`` (Python's ``hash`` is salted per process, so unusable)."""
    digests = [hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in ids]
    return torch.tensor([int.from_bytes(d, "little", signed=True) for d in digests], dtype=torch.long)


def gather_ragged(tensor: Tensor, group: Any | None = None) -> list[Tensor]:
    """All-gather tensors whose first dimension differs across ranks; empty ranks take the others' shape.

    Used as ``dist_sync_fn``: torchmetrics replaces the list state of a rank without samples by a float
    ``(0,)`` placeholder; here every empty state becomes ``(0, *shape[1:])`` with the dtype of a rank that
    has data, so all ranks send one shape and dtype.
    """
    group = group if group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    if tensor.ndim == 0:
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor.contiguous(), group=group)
        return out
    meta: list[Any] = [None] * world
    dist.all_gather_object(meta, (tuple(tensor.shape), tensor.dtype), group=group)
    preference = (
        [m for m in meta if math.prod(m[0]) > 0]  # has data
        + [m for m in meta if len(m[0]) > 1 or not m[1].is_floating_point]  # empty but not the placeholder
        + [(tuple(tensor.shape), tensor.dtype)]
    )
    ref_shape, ref_dtype = preference[0]
    sizes = [shape[0] if math.prod(shape) > 0 else 0 for shape, _ in meta]
    local = tensor if tensor.numel() > 0 else tensor.new_empty((0, *ref_shape[1:]), dtype=ref_dtype)
    if max(sizes) == 0:  # nothing anywhere: no communication needed
        return [local] * world
    padded = local.new_zeros((max(sizes), *ref_shape[1:]))
    padded[: local.shape[0]] = local
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    return [o[:n] for o, n in zip(out, sizes)]


def _cat(state: list[Tensor] | Tensor, empty: Tensor) -> Tensor:
    """Concatenate a list state (already synced or local); ``empty`` when no rank saw a sample."""
    if isinstance(state, Tensor):
        return state
    return dim_zero_cat(state) if state else empty


class _RaggedMetric(Metric):
    """Base for metrics with list states: syncs through ``gather_ragged`` unless told otherwise."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dist_sync_fn", gather_ragged)
        super().__init__(**kwargs)


# --------------------------------------------------------------------------------------- classification


class Accuracy(Metric):
    """Accuracy (%). A label that no prediction can equal (XVNLI's unlabelled ``-1``) counts as wrong.

    Args:
        ignore_index: label value dropped from numerator and denominator (``-100`` for word-level tagging
            and MLM). Nothing is ignored by default: in particular ``-1`` is never ignored implicitly.
        name: the key ``compute`` returns (``acc``, ``mlm_acc``).
    """

    full_state_update = False

    def __init__(self, ignore_index: int | None = None, name: str = "acc", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.names = (name,)
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, labels: Tensor) -> None:
        """Args: preds, labels: integer tensors of one shape (any, flattened: (B,) or (B, W))."""
        assert preds.shape == labels.shape, f"preds {tuple(preds.shape)} vs labels {tuple(labels.shape)}"
        preds, labels = preds.reshape(-1), labels.reshape(-1)
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            preds, labels = preds[keep], labels[keep]
        self.correct += (preds == labels).sum()
        self.total += labels.numel()

    def compute(self) -> dict[str, Tensor]:
        return {self.names[0]: _percent(self.correct, self.total)}


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


class VQAAccuracy(Metric):
    """VQA accuracy (%): the soft score of the predicted answer, averaged over questions. A question whose
    answer is outside the vocabulary (all-zero targets) scores 0 and still counts."""

    full_state_update = False
    names = ("vqa_acc",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("score", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Args: preds: answer indices (B,); targets: soft scores (B, num_answers), 0 where not given."""
        assert preds.shape == targets.shape[:1], f"preds {tuple(preds.shape)} vs targets {tuple(targets.shape)}"
        self.score += targets.float().gather(1, preds.long()[:, None]).sum()
        self.total += preds.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"vqa_acc": _percent(self.score, self.total)}


# --------------------------------------------------------------------------------------- tagging


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


class SpanF1(Metric):
    """Entity-level micro F1 (%) over IOB2 spans, as seqeval's default (conlleval) mode.

    Args:
        label_names: tag names by index (``O``, ``B-PER``, ``I-PER``, ...).
    """

    full_state_update = False
    names = ("span_f1", "span_precision", "span_recall")

    def __init__(self, label_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert label_names, "SpanF1 needs the tag names (label_names), e.g. from the shards' manifest"
        self.label_names = list(label_names)
        for state in ("tp", "n_pred", "n_gold"):
            self.add_state(state, torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Sequence[int]] | Tensor, labels: Sequence[Sequence[int]] | Tensor) -> None:
        """Args: preds, labels: word-level tag indices per sentence, lists or (B, W) tensors; positions
        whose label is -100 (padding) are dropped from both."""
        for pred, gold in zip(_rows(preds), _rows(labels)):
            assert len(pred) == len(gold), f"sentence lengths differ: {len(pred)} preds vs {len(gold)} labels"
            kept = [(p, g) for p, g in zip(pred, gold) if g != -100]
            pred_spans = iob2_spans([self.label_names[p] for p, _ in kept])
            gold_spans = iob2_spans([self.label_names[g] for _, g in kept])
            self.tp += len(pred_spans & gold_spans)
            self.n_pred += len(pred_spans)
            self.n_gold += len(gold_spans)

    def compute(self) -> dict[str, Tensor]:
        tp, n_pred, n_gold = self.tp.item(), self.n_pred.item(), self.n_gold.item()
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        return {k: torch.tensor(100.0 * v) for k, v in zip(self.names, (f1, precision, recall))}


def _rows(x: Sequence[Sequence[int]] | Tensor) -> list[list[int]]:
    return x.tolist() if isinstance(x, Tensor) else [list(r) for r in x]


# --------------------------------------------------------------------------------------- span QA

# MLQA's evaluation script (mlqa_evaluation_v1.py): unicode punctuation, per-language articles.
_MLQA_PUNCT = {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")}
_MLQA_PUNCT |= set(string.punctuation)
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


def _mixed_segmentation(text: str) -> list[str]:
    """MLQA's Chinese segmentation: every CJK character and punctuation mark is a token."""
    tokens, run = [], ""
    for char in text:
        if _CJK.search(char) or char in _MLQA_PUNCT:
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
    text = "".join(ch for ch in text if ch not in _MLQA_PUNCT)
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


class SquadMetric(Metric):
    """Exact match and token F1 (%) of extractive QA, max over the reference answers.

    Args:
        lang: MLQA normalisation language (MLQA's own script). None: SQuAD v1.1 normalisation, which XTREME
            uses for SQuAD, XQuAD and TyDiQA-GoldP in every language.
    """

    full_state_update = False
    names = ("em", "f1")

    def __init__(self, lang: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        normalize_answer("", lang)  # fail now on an unknown language
        self.lang = lang
        self.add_state("em", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("f1", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Args: predictions: one answer string per question; references: its gold answers ([] = none)."""
        assert len(predictions) == len(references), f"{len(predictions)} predictions, {len(references)} refs"
        for pred, refs in zip(predictions, references):
            em, f1 = squad_em_f1(pred, refs, self.lang)
            self.em += em
            self.f1 += f1
        self.total += len(predictions)

    def compute(self) -> dict[str, Tensor]:
        return {"em": _percent(self.em, self.total), "f1": _percent(self.f1, self.total)}


# --------------------------------------------------------------------------------------- retrieval

SimBlocks = Callable[[], Iterator[tuple[int, Tensor]]]


def _blocks(queries: Tensor, keys: Tensor, chunk: int = 4096) -> SimBlocks:
    """A re-iterable of ``(row_start, sim rows)``: cosine similarity queries x keys, ``chunk`` rows at once."""
    queries, keys = F.normalize(queries.float(), dim=-1), F.normalize(keys.float(), dim=-1)
    return lambda: ((s, queries[s : s + chunk] @ keys.T) for s in range(0, queries.shape[0], chunk))


def _recall(blocks: SimBlocks, text_to_image: Tensor, num_images: int, ks: Sequence[int]) -> dict[str, Tensor]:
    """Recall@K both ways from similarity rows (texts x images), in two passes so rows can be chunked.

    IR: a text is a hit if its image ranks in the top K. TR: an image is a hit if its best-ranked caption
    ranks in the top K among all texts. Rank = number of strictly more similar candidates.
    """
    ir_rank = torch.empty_like(text_to_image)  # (T,)
    best = torch.full((num_images,), -math.inf, device=text_to_image.device)  # (I,) best own-caption sim
    for start, sim in blocks():  # sim (c, I)
        t2i = text_to_image[start : start + sim.shape[0]]
        own = sim.gather(1, t2i[:, None])  # (c, 1)
        ir_rank[start : start + sim.shape[0]] = (sim > own).sum(1)
        best.scatter_reduce_(0, t2i, own[:, 0], reduce="amax")
    tr_rank = torch.zeros(num_images, dtype=torch.long, device=best.device)
    for _, sim in blocks():
        tr_rank += (sim > best[None]).sum(0)
    tr_rank = tr_rank[best > -math.inf]  # images without a caption have no TR query
    out = {}
    for k in ks:
        out[f"ir_r{k}"] = _percent((ir_rank < k).sum(), torch.tensor(ir_rank.numel()))
        out[f"tr_r{k}"] = _percent((tr_rank < k).sum(), torch.tensor(tr_rank.numel()))
    return out


def recall_at_k(sim: Tensor, text_to_image: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Tensor]:
    """Recall@K (%) from a full similarity matrix ``sim`` (T, I); ``text_to_image`` (T,) indexes each text's
    image. Returns ``ir_r{k}`` (text->image) and ``tr_r{k}`` (image->text) for every k."""
    return _recall(lambda: iter([(0, sim)]), text_to_image, sim.shape[1], ks)


class RetrievalRecall(_RaggedMetric):
    """Image-text retrieval recall@K (%) over the whole gallery gathered from every rank.

    Images are deduplicated by id (the first embedding seen is kept), texts are not.

    Args:
        ks: the K of recall@K; 1 must be among them (``mean_r1``).
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert 1 in ks, f"ks must contain 1 for mean_r1, got {ks}"
        self.ks = tuple(ks)
        self.names = (*(f"{d}_r{k}" for d in ("ir", "tr") for k in self.ks), "mean_r1")
        for state in ("text_emb", "text_image_ids", "image_emb", "image_ids"):
            self.add_state(state, [], dist_reduce_fx="cat")

    def update(
        self, text_emb: Tensor, text_image_ids: Sequence[str], image_emb: Tensor, image_ids: Sequence[str]
    ) -> None:
        """Args: text_emb (N, D) with its image's id per text; image_emb (M, D) with ids (repeats allowed)."""
        assert len(text_emb) == len(text_image_ids) and len(image_emb) == len(image_ids), "one id per embedding"
        self.text_emb.append(text_emb.detach().float())
        self.text_image_ids.append(hash_ids(text_image_ids).to(self.device))
        self.image_emb.append(image_emb.detach().float())
        self.image_ids.append(hash_ids(image_ids).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        no_ids = torch.empty(0, dtype=torch.long, device=self.device)
        text_ids, image_ids = _cat(self.text_image_ids, no_ids), _cat(self.image_ids, no_ids)
        if text_ids.numel() == 0:
            return dict.fromkeys(self.names, torch.tensor(_NAN))
        text_emb, image_emb = _cat(self.text_emb, no_ids), _cat(self.image_emb, no_ids)
        gallery, inverse = torch.unique(image_ids, return_inverse=True)  # (I,), (M,)
        first = torch.full_like(gallery, len(image_ids)).scatter_reduce(
            0, inverse, torch.arange(len(image_ids), device=inverse.device), reduce="amin"
        )
        pos = torch.searchsorted(gallery, text_ids).clamp(max=len(gallery) - 1)
        missing = int((gallery[pos] != text_ids).sum())
        assert missing == 0, f"{missing} texts name an image id that is not in the gallery"
        out = _recall(_blocks(text_emb, image_emb[first]), pos, len(gallery), self.ks)
        out["mean_r1"] = (out["ir_r1"] + out["tr_r1"]) / 2
        return {k: out[k] for k in self.names}


# --------------------------------------------------------------------------------------- sentence retrieval


def knn(queries: Tensor, keys: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine neighbours of each query among ``keys``: (similarities, indices), both (Q, k)."""
    sims, idx = zip(*(sim.topk(min(k, keys.shape[0]), dim=1) for _, sim in _blocks(queries, keys, chunk)()))
    return torch.cat(sims), torch.cat(idx)


class TatoebaAccuracy(_RaggedMetric):
    """Tatoeba accuracy (%): how often a source sentence's nearest target (cosine, over all targets) is its
    own translation. Pairs are aligned by row."""

    names = ("tatoeba_acc",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("src_emb", [], dist_reduce_fx="cat")
        self.add_state("tgt_emb", [], dist_reduce_fx="cat")

    def update(self, src_emb: Tensor, tgt_emb: Tensor) -> None:
        """Args: src_emb (N, D), tgt_emb (N, D): row i of each is one translation pair."""
        assert src_emb.shape == tgt_emb.shape, f"src {tuple(src_emb.shape)} vs tgt {tuple(tgt_emb.shape)}"
        self.src_emb.append(src_emb.detach().float())
        self.tgt_emb.append(tgt_emb.detach().float())

    def compute(self) -> dict[str, Tensor]:
        empty = torch.empty(0, device=self.device)
        src, tgt = _cat(self.src_emb, empty), _cat(self.tgt_emb, empty)
        if src.numel() == 0:
            return {"tatoeba_acc": torch.tensor(_NAN)}
        _, nearest = knn(src, tgt, k=1)  # (N, 1)
        hits = (nearest[:, 0] == torch.arange(len(src), device=nearest.device)).sum()
        return {"tatoeba_acc": _percent(hits, torch.tensor(len(src)))}


def margin_candidates(src: Tensor, tgt: Tensor, k: int = 4) -> tuple[Tensor, Tensor]:
    """XTREME/LASER bitext mining (``mine_bitext``: ratio margin, ``retrieval="max"``).

    score(x, y) = cos(x, y) / ((mean cos of x's k nearest y + mean cos of y's k nearest x) / 2). Each
    source proposes its best target and each target its best source; candidates are taken in descending
    score, skipping any whose source or target is already used. Returns pairs (P, 2) of (src, tgt) row
    indices and their scores (P,), best first.
    """
    fwd_sim, fwd_idx = knn(src, tgt, k)  # (S, k)
    bwd_sim, bwd_idx = knn(tgt, src, k)  # (T, k)
    fwd_mean, bwd_mean = fwd_sim.mean(1), bwd_sim.mean(1)
    fwd_score = fwd_sim / ((fwd_mean[:, None] + bwd_mean[fwd_idx]) / 2)  # (S, k)
    bwd_score = bwd_sim / ((bwd_mean[:, None] + fwd_mean[bwd_idx]) / 2)  # (T, k)
    fwd_best, bwd_best = fwd_score.argmax(1, keepdim=True), bwd_score.argmax(1, keepdim=True)
    src_rows = torch.cat([torch.arange(len(src), device=src.device), bwd_idx.gather(1, bwd_best)[:, 0]])
    tgt_rows = torch.cat([fwd_idx.gather(1, fwd_best)[:, 0], torch.arange(len(tgt), device=src.device)])
    scores = torch.cat([fwd_score.gather(1, fwd_best)[:, 0], bwd_score.gather(1, bwd_best)[:, 0]])
    order = scores.argsort(descending=True).tolist()
    seen_src, seen_tgt, keep = set(), set(), []
    for i, s, t in zip(order, src_rows[order].tolist(), tgt_rows[order].tolist()):
        if s not in seen_src and t not in seen_tgt:
            seen_src.add(s)
            seen_tgt.add(t)
            keep.append(i)
    return torch.stack([src_rows[keep], tgt_rows[keep]], 1), scores[keep]


def best_f1_threshold(scores: Sequence[float], correct: Sequence[bool], num_gold: int) -> float:
    """XTREME's ``bucc_optimize``: the score threshold (midway to the next candidate) of maximal F1, taking
    candidates best-first. ``scores`` must be sorted descending; 0.0 when no candidate is correct."""
    threshold, best_f1, n_correct = 0.0, 0.0, 0
    for i, (score, ok) in enumerate(zip(scores, correct)):
        n_correct += ok
        if n_correct == 0:
            continue
        precision, recall = n_correct / (i + 1), n_correct / num_gold
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best_f1:
            best_f1 = f1
            threshold = (score + scores[i + 1]) / 2 if i + 1 < len(scores) else score
    return threshold


class BuccF1(_RaggedMetric):
    """BUCC bitext mining F1 (%), as XTREME scores it: ratio-margin candidates (k neighbours), then a score
    threshold. With ``threshold=None`` the threshold maximising F1 on these data is chosen (XTREME tunes it
    on the dev/"sample" set) and returned as ``bucc_threshold``; pass that value for test data.

    Args:
        threshold: fixed margin-score threshold (a candidate is kept if its score >= threshold).
        k: neighbourhood size of the margin (XTREME: 4).
    """

    names = ("bucc_f1", "bucc_precision", "bucc_recall", "bucc_threshold")

    def __init__(self, threshold: float | None = None, k: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold, self.k = threshold, k
        for state in ("src_emb", "src_ids", "tgt_emb", "tgt_ids", "gold"):
            self.add_state(state, [], dist_reduce_fx="cat")

    def update(
        self,
        src_emb: Tensor,
        src_ids: Sequence[str],
        tgt_emb: Tensor,
        tgt_ids: Sequence[str],
        gold: Sequence[tuple[str, str]],
    ) -> None:
        """Args: src_emb (S, D) and tgt_emb (T, D) with their sentence ids (either may be empty);
        gold: the gold (src_id, tgt_id) pairs these samples bring (each pair given once overall)."""
        assert len(src_emb) == len(src_ids) and len(tgt_emb) == len(tgt_ids), "one id per embedding"
        self.src_emb.append(src_emb.detach().float())
        self.src_ids.append(hash_ids(src_ids).to(self.device))
        self.tgt_emb.append(tgt_emb.detach().float())
        self.tgt_ids.append(hash_ids(tgt_ids).to(self.device))
        pairs = hash_ids([i for pair in gold for i in pair]).reshape(-1, 2)  # (G, 2)
        self.gold.append(pairs.to(self.device))

    def compute(self) -> dict[str, Tensor]:
        none = torch.empty(0, dtype=torch.long, device=self.device)
        src_ids, tgt_ids, gold = (_cat(s, none) for s in (self.src_ids, self.tgt_ids, self.gold))
        if src_ids.numel() == 0 or tgt_ids.numel() == 0:
            return dict.fromkeys(self.names, torch.tensor(_NAN))
        pairs, scores = margin_candidates(_cat(self.src_emb, none), _cat(self.tgt_emb, none), self.k)
        predicted = list(zip(src_ids[pairs[:, 0]].tolist(), tgt_ids[pairs[:, 1]].tolist()))
        gold_set = set(map(tuple, gold.reshape(-1, 2).tolist()))
        correct = [p in gold_set for p in predicted]
        scores_list = scores.tolist()
        threshold = self.threshold
        if threshold is None:
            threshold = best_f1_threshold(scores_list, correct, len(gold_set))
        n_pred = sum(s >= threshold for s in scores_list)
        n_correct = sum(ok for ok, s in zip(correct, scores_list) if s >= threshold)
        precision = n_correct / n_pred if n_pred else 0.0
        recall = n_correct / len(gold_set) if gold_set else 0.0
        f1 = 2 * precision * recall / (precision + recall) if n_correct else 0.0
        values = (100 * f1, 100 * precision, 100 * recall, threshold)
        return {k: torch.tensor(float(v)) for k, v in zip(self.names, values)}


# --------------------------------------------------------------------------------------- factory


def build_metrics(spec: TaskSpec, label_names: Sequence[str] = (), lang: str | None = None) -> Metric:
    """The metric object of one (task, language); ``compute()`` returns ``{name: tensor}`` with at least
    every name in ``spec.metrics``. Call ``update`` with keyword arguments, per family:

    - classification, image_pair, multiple_choice: ``update(preds (B,), labels (B,))``; -1 counts as wrong.
    - vqa: ``update(preds (B,), targets (B, num_answers))``: soft scores.
    - retrieval: ``update(text_emb (N, D), text_image_ids: list[str], image_emb (M, D), image_ids)``.
    - span_qa: ``update(predictions: list[str], references: list[list[str]])`` (see ``span_qa.postprocess``).
    - tagging: ``update(preds, labels)``: word-level (B, W) tensors or lists of lists, -100 = padding.
    - mlm: ``update(preds (B, T) argmax ids, labels (B, T))``, -100 = not masked.
    - sentence_retrieval, Tatoeba: ``update(src_emb (N, D), tgt_emb (N, D))``;
      BUCC: ``update(src_emb, src_ids, tgt_emb, tgt_ids, gold: list[tuple[str, str]])``.

    Args:
        spec: the catalogue entry.
        label_names: tag names by index (tagging with ``span_f1`` only).
        lang: span_qa only: MLQA normalisation language; pass it for MLQA alone (XTREME scores SQuAD,
            XQuAD and TyDiQA with the SQuAD v1.1 normalisation, i.e. ``lang=None``).
    """
    metrics = set(spec.metrics)
    if spec.family in ("classification", "image_pair", "multiple_choice"):
        metric: Metric = Accuracy()
    elif spec.family == "vqa":
        metric = VQAAccuracy()
    elif spec.family == "retrieval":
        metric = RetrievalRecall()
    elif spec.family == "span_qa":
        metric = SquadMetric(lang)
    elif spec.family == "tagging":
        metric = SpanF1(label_names) if "span_f1" in metrics else Accuracy(ignore_index=-100)
    elif spec.family == "mlm":
        metric = Accuracy(ignore_index=-100, name="mlm_acc")
    elif spec.family == "sentence_retrieval":
        metric = BuccF1() if "bucc_f1" in metrics else TatoebaAccuracy()
    else:
        raise ValueError(f"No metrics for family {spec.family!r}")
    missing = metrics - set(metric.names)
    assert not missing, f"{type(metric).__name__} cannot compute {sorted(missing)}; it gives {metric.names}"
    return metric
