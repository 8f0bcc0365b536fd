"""The model part of every family: its head builder and its metric factory, one ``FAMILY_MODEL`` entry each.

A family is declared by one entry in each of three tables: this one (head, metric, LM-head start, dual encoder),
``contracts.fields.FAMILY_FIELDS`` (sample fields, label checks, control fields) and
``datamodules.collate.FAMILY_COLLATE`` (collate method), with the family's name in ``contracts.catalogue.Family``.
Nothing else branches on a family (docs/tasks.md, "Adding a family").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn
from torchmetrics import Metric

from contracts.catalogue import TaskSpec
from lightning_modules import heads as h
from lightning_modules.metrics import classification as mc
from lightning_modules.metrics.retrieval import RetrievalRecall
from lightning_modules.metrics.sentence_retrieval import BuccF1, TatoebaAccuracy
from lightning_modules.metrics.squad import SquadMetric


@dataclass(frozen=True)
class HeadArgs:
    """What a head builder may use: the core width, the label names and the text model's extras."""

    hidden: int
    label_names: Sequence[str] = ()
    vocab_size: int = 0
    retrieval_layer: int | None = None
    lm_head: nn.Module | None = None
    own_embeddings: bool = False  # an aligned two-tower core: retrieval uses its own embeddings, no projection


@dataclass(frozen=True)
class FamilyModel:
    """The model part of one family (its fields: ``contracts.fields.FamilyFields``; its collate: ``FamilyCollate``)."""

    head: Callable[[HeadArgs], nn.Module]
    """Builds the family's head."""
    metric: Callable[[TaskSpec, Sequence[str], str | None], Metric]
    """(catalogue entry, label names, MLQA language or None) -> the metric of one (task, language)."""
    needs_label_names: bool = False
    """The head's output width is the number of label names."""
    lm_head: bool = False
    """The head starts from the pretrained text model's LM head where its checkpoint has one."""
    dual_encoder: bool = False
    """Images and texts are encoded apart (no fusion); an aligned two-tower core uses its towers' own embeddings."""


def _accuracy(spec: TaskSpec, labels: Sequence[str], lang: str | None) -> Metric:
    return mc.Accuracy()


FAMILY_MODEL: dict[str, FamilyModel] = {
    "classification": FamilyModel(lambda a: h.ClassificationHead(a.hidden, len(a.label_names)), _accuracy, True),
    "image_pair": FamilyModel(lambda a: h.ImagePairHead(a.hidden, len(a.label_names)), _accuracy, True),
    "vqa": FamilyModel(lambda a: h.VQAHead(a.hidden, len(a.label_names)), lambda s, n, g: mc.VQAAccuracy(), True),
    "retrieval": FamilyModel(
        lambda a: h.RetrievalHead(a.hidden, own_embeddings=a.own_embeddings),
        lambda s, n, g: RetrievalRecall(),
        dual_encoder=True,
    ),
    "multiple_choice": FamilyModel(lambda a: h.MultipleChoiceHead(a.hidden), _accuracy),
    "span_qa": FamilyModel(lambda a: h.SpanQAHead(a.hidden), lambda s, n, lang: SquadMetric(lang)),
    "tagging": FamilyModel(
        lambda a: h.TaggingHead(a.hidden, len(a.label_names)),
        lambda s, names, g: mc.SpanF1(names) if "span_f1" in s.metrics else mc.Accuracy(ignore_index=-100),
        True,
    ),
    "mlm": FamilyModel(
        lambda a: h.MLMHead(a.hidden, a.vocab_size, a.lm_head),
        lambda s, n, g: mc.Accuracy(ignore_index=-100, name="mlm_acc"),
        lm_head=True,
    ),
    "sentence_retrieval": FamilyModel(
        lambda a: h.SentenceRetrievalHead(a.retrieval_layer),
        lambda s, n, g: BuccF1() if "bucc_f1" in s.metrics else TatoebaAccuracy(),
    ),
}


def family_model(family: str) -> FamilyModel:
    try:
        return FAMILY_MODEL[family]
    except KeyError:
        raise ValueError(f"Unknown head family {family!r}. Valid: {', '.join(FAMILY_MODEL)}") from None


def build_head(
    family: str,
    hidden: int,
    *,
    label_names: Sequence[str] = (),
    vocab_size: int = 0,
    retrieval_layer: int | None = None,
    lm_head: nn.Module | None = None,
    own_embeddings: bool = False,
) -> nn.Module:
    """The head for ``family`` (see ``contracts.catalogue.FAMILIES``)."""
    entry = family_model(family)
    if entry.needs_label_names and not label_names:
        raise ValueError(f"A {family} head needs label names (from the catalogue or the shards' manifest)")
    return entry.head(HeadArgs(hidden, tuple(label_names), vocab_size, retrieval_layer, lm_head, own_embeddings))


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
    metric = family_model(spec.family).metric(spec, tuple(label_names), lang)
    missing = set(spec.metrics) - set(metric.names)
    assert not missing, f"{type(metric).__name__} cannot compute {sorted(missing)}; it gives {metric.names}"
    return metric
