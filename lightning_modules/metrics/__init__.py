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

from collections.abc import Sequence

from torchmetrics import Metric

from lightning_modules.metrics.classification import (
    Accuracy,
    SpanF1,
    VQAAccuracy,
    iob2_spans,
    vqa_official_score,
    vqa_soft_score,
)
from lightning_modules.metrics.retrieval import RetrievalRecall, recall_at_k
from lightning_modules.metrics.sentence_retrieval import (
    BuccF1,
    TatoebaAccuracy,
    best_f1_threshold,
    knn,
    margin_candidates,
)
from lightning_modules.metrics.squad import SquadMetric, normalize_answer, squad_em_f1
from lightning_modules.metrics.sync import gather_ragged, hash_ids
from lightning_modules.tasks import TaskSpec

__all__ = [
    "Accuracy",
    "BuccF1",
    "RetrievalRecall",
    "SpanF1",
    "SquadMetric",
    "TatoebaAccuracy",
    "VQAAccuracy",
    "best_f1_threshold",
    "build_metrics",
    "gather_ragged",
    "hash_ids",
    "iob2_spans",
    "knn",
    "margin_candidates",
    "normalize_answer",
    "recall_at_k",
    "squad_em_f1",
    "vqa_official_score",
    "vqa_soft_score",
]


def build_metrics(spec: TaskSpec, label_names: Sequence[str] = (), lang: str | None = None) -> Metric:
    """The metric object of one (task, language); ``compute()`` returns ``{name: tensor}`` with at least
    every name in ``spec.metrics``. Call ``update`` with keyword arguments, per family:

    - classification, image_pair, multiple_choice: ``update(preds (B,), labels (B,))``; -1 counts as wrong.
    - vqa: ``update(preds (B,), targets (B, num_answers))``: soft scores.
    - retrieval: ``update(text_emb (N, D), text_image_ids: list[str], image_emb (M, D), image_ids)``.
    - span_qa: ``update(predictions: list[str], references: list[list[str]])`` (see ``span_qa.postprocess``).
    - tagging: ``update(preds, labels)``: word-level tags per sentence, lists of lists or (B, W) tensors
      with -100 at padding (``acc`` ignores -100; ``span_f1`` drops those positions).
    - mlm: ``update(preds, labels)``: argmax ids and original ids, any one shape; -100 = not masked.
    - sentence_retrieval, Tatoeba: ``update(src_emb (N, D), tgt_emb (N, D))``;
      BUCC: ``update(emb (B, D), ids: list[str], sides: list["src" | "tgt"], gold: list[str | None])``, one
      sentence per sample with its gold partner id (None: no partner).

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
