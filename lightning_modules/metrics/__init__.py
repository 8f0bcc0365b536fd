"""Every metric of the study as a ``torchmetrics.Metric``, so that DDP ranks sync their states exactly.

Each metric's ``compute()`` returns a flat dict ``{name: 0-dim tensor}`` whose names are the catalogue's
metric names (``contracts.catalogue``); ``lightning_modules.families.build_metrics`` returns one such
object per (task, language).
All scores are **percentages (0-100)**, as IGLUE and XTREME report them; BUCC's ``bucc_threshold`` is a raw
margin score. A metric that saw no sample returns NaN rather than a made-up 0.

States are sums (``dist_reduce_fx="sum"``) or lists of tensors (``"cat"``), so after a sync every sample
counts exactly once. String ids (images, BUCC sentences) are stored as stable 64-bit hashes, identical on
every rank. Metrics with list states sync through ``gather_ragged``, which also copes with a rank that saw
no sample (torchmetrics sends a float ``(0,)`` placeholder for it, which plain all-gather cannot mix with
``(N, D)`` embeddings or int64 ids).
"""

from __future__ import annotations

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

__all__ = [
    "Accuracy",
    "BuccF1",
    "RetrievalRecall",
    "SpanF1",
    "SquadMetric",
    "TatoebaAccuracy",
    "VQAAccuracy",
    "best_f1_threshold",
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
