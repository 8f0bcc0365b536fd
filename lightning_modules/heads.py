"""Task heads: plain ``nn.Module``s keyed by family, all on the shared ``EncoderCore``.

Every head has one call, ``head(core, batch) -> HeadOutput``: it encodes the batch through the core's
surface (``encode``, ``encode_pair``, ``encode_image``), computes its loss, and returns the inputs of its
family's metric (``metric_inputs``, passed as ``metric.update(**metric_inputs)``). Heads never import
Lightning. ``lightning_modules.families.FAMILY_MODEL`` is the only place that maps a family to a class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from contracts.catalogue import get_task
from lightning_modules.core import EncoderCore
from lightning_modules.span_qa import postprocess
from lightning_modules.weights import load_masked_lm


@dataclass
class HeadOutput:
    loss: torch.Tensor
    metric_inputs: dict[str, Any] = field(default_factory=dict)
    predictions: list[Any] = field(default_factory=list)  # one readable prediction per sample (predict/reports)


def _mlp(hidden: int, out: int, dropout: float, width: int | None = None) -> nn.Sequential:
    width = width or hidden
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(hidden, width), nn.Tanh(), nn.Dropout(dropout), nn.Linear(width, out)
    )


def _ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy that ignores unlabelled items (-1); zero (with a graph) when nothing is labelled."""
    valid = labels >= 0
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[valid], labels[valid])


class ClassificationHead(nn.Module):
    """Pooled vector of text, text pair or image + text -> one of ``num_labels`` (NLI, paraphrase, VE)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, num_labels, dropout)

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        out = core.encode(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"))
        logits = self.mlp(out.pooled)  # (B, L)
        preds = logits.argmax(-1)
        return HeadOutput(_ce(logits, batch["labels"]), {"preds": preds, "labels": batch["labels"]}, preds.tolist())


class ImagePairHead(nn.Module):
    """Two images + one statement (NLVR2, MaRVL): each image encoded with the statement, pooled pair concatenated."""

    def __init__(self, hidden: int, num_labels: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = _mlp(2 * hidden, num_labels, dropout, width=hidden)

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        pooled = core.encode_pair(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])  # (B, 2, D)
        logits = self.mlp(pooled.flatten(1))  # (B, L)
        preds = logits.argmax(-1)
        return HeadOutput(_ce(logits, batch["labels"]), {"preds": preds, "labels": batch["labels"]}, preds.tolist())


class VQAHead(nn.Module):
    """Answer classification over a fixed vocabulary with soft targets and binary cross-entropy (VQAv2, GQA)."""

    def __init__(self, hidden: int, num_answers: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, num_answers, dropout, width=2 * hidden)

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        out = core.encode(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"))
        logits = self.mlp(out.pooled)  # (B, A)
        targets = batch["targets"]  # (B, A) soft scores; all-zero rows are out-of-vocabulary answers
        # Scaled by the vocabulary size as in the VQA literature (Anderson et al. 2018), so the loss per
        # question does not shrink with the number of answers.
        loss = F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]
        preds = logits.argmax(-1)
        return HeadOutput(loss, {"preds": preds, "targets": targets}, preds.tolist())


class RetrievalHead(nn.Module):
    """Dual encoder: text vs image embedding, contrastive with in-batch negatives, learnable temperature.

    ``own_embeddings`` (an aligned two-tower core, ``EncoderCore.own_embeddings``): the core's ``embed_text`` /
    ``embed_image`` already are the checkpoint's own projected embeddings, so the head adds no projection and
    retrieval scores the start's alignment as it is. Otherwise it projects the core's pooled vectors.
    """

    def __init__(
        self, hidden: int, embed_dim: int = 256, init_temperature: float = 0.07, own_embeddings: bool = False
    ) -> None:
        super().__init__()
        self.text_proj = nn.Identity() if own_embeddings else nn.Linear(hidden, embed_dim)
        self.image_proj = nn.Identity() if own_embeddings else nn.Linear(hidden, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        text = F.normalize(self.text_proj(core.embed_text(batch["input_ids"], batch["attention_mask"])), dim=-1)
        image = F.normalize(self.image_proj(core.embed_image(batch["pixel_values"])), dim=-1)
        # (Tc, I): texts are the batch's captions, text_image_index says which image each one describes
        index = batch["text_image_index"]
        logits = self.logit_scale.clamp(max=math.log(100)).exp() * text @ image.T
        loss = F.cross_entropy(logits, index)
        if logits.shape[0] == logits.shape[1] and torch.equal(index, torch.arange(len(index), device=index.device)):
            loss = (loss + F.cross_entropy(logits.T, index)) / 2  # symmetric when one caption per image
        text_ids = [batch["image_ids"][i] for i in index.tolist()]
        inputs = {"text_emb": text, "text_image_ids": text_ids, "image_emb": image, "image_ids": batch["image_ids"]}
        # one prediction per sample (image): the in-batch image each of its captions retrieves
        per_image: list[list[str]] = [[] for _ in batch["image_ids"]]
        for image_of_text, best in zip(index.tolist(), logits.argmax(-1).tolist()):
            per_image[image_of_text].append(batch["image_ids"][best])
        return HeadOutput(loss, inputs, per_image)


class MultipleChoiceHead(nn.Module):
    """One score per (context, choice), softmax over the choices (HellaSwag, CosmosQA, CommonsenseQA)."""

    def __init__(self, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = _mlp(hidden, 1, dropout)

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        b, c, t = batch["input_ids"].shape  # (B, C, T)
        out = core.encode(batch["input_ids"].view(b * c, t), batch["attention_mask"].view(b * c, t))
        logits = self.mlp(out.pooled).view(b, c)
        preds = logits.argmax(-1)
        return HeadOutput(_ce(logits, batch["labels"]), {"preds": preds, "labels": batch["labels"]}, preds.tolist())


class SpanQAHead(nn.Module):
    """Start/end logits over the context tokens; n-best post-processing over a sample's stride windows."""

    def __init__(self, hidden: int, n_best: int = 20, max_answer_length: int = 30) -> None:
        super().__init__()
        self.qa = nn.Linear(hidden, 2)
        self.n_best, self.max_answer_length = n_best, max_answer_length

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        out = core.encode(batch["input_ids"], batch["attention_mask"])
        start, end = self.qa(out.text_tokens).unbind(-1)  # (F, T) each; F = features (stride windows)
        loss = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
        if self.training:
            return HeadOutput(loss)
        answers = postprocess(
            start.float(),
            end.float(),
            batch["example_index"],
            batch["offsets"],
            batch["contexts"],
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
            allow_null=get_task(batch["task"]).unanswerable,  # one head serves SQuAD v1 and v2 alike
        )
        return HeadOutput(loss, {"predictions": answers, "references": batch["references"]}, answers)


class TaggingHead(nn.Module):
    """One label per word, predicted at its first sub-token (UD-POS, PAN-X, CCG)."""

    def __init__(self, hidden: int, num_tags: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_tags))

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        out = core.encode(batch["input_ids"], batch["attention_mask"])
        logits = self.classifier(out.text_tokens)  # (B, T, K)
        labels = batch["labels"]  # (B, T), -100 except at each word's first sub-token
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        keep = labels != -100
        preds = logits.argmax(-1)
        pred_seqs = [p[k].tolist() for p, k in zip(preds, keep)]
        gold_seqs = [g[k].tolist() for g, k in zip(labels, keep)]
        return HeadOutput(loss, {"preds": pred_seqs, "labels": gold_seqs}, pred_seqs)


def load_lm_head(text_model: str) -> nn.Module:
    """The pretrained LM head of ``text_model`` (hub name or directory): ``AutoModelForMaskedLM`` minus its
    encoder, e.g. XLM-R's ``lm_head`` (dense, GELU, LayerNorm, decoder). Its decoder is a copy of the
    checkpoint's tied word embeddings, not tied to the core's: one parameter in two optimizer groups (core
    and heads) is not allowed, and the copy starts from exactly the checkpoint's values. A checkpoint without
    LM-head weights (an embedding model) gets a fresh head, announced in one line (``load_masked_lm``)."""
    try:  # an embedding checkpoint (MiniLM, e5) has no LM head: one line says the head starts fresh
        model = load_masked_lm(text_model)
    except ValueError as err:  # e.g. a two-tower checkpoint (SigLIP) has no masked-LM class
        raise ValueError(
            f"model.core.text_model={text_model!r} has no masked-LM head for an MLM task ({str(err).splitlines()[0]}). "
            "Use an MLM checkpoint or set model.core.pretrained=false."
        ) from None
    rest = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    if len(rest) != 1:
        raise ValueError(
            f"{type(model).__name__} splits its LM head over {rest}; load_lm_head expects one module. "
            "Set model.core.pretrained=false for a fresh MLM head."
        )
    return getattr(model, rest[0])


class MLMHead(nn.Module):
    """Masked-LM prediction over the tokenizer's vocabulary; reuses a checkpoint's LM head where given
    (``load_lm_head``), otherwise a fresh one of the same shape as XLM-R's."""

    def __init__(self, hidden: int, vocab_size: int, lm_head: nn.Module | None = None) -> None:
        super().__init__()
        self.lm = lm_head or nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab_size)
        )

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        out = core.encode(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]  # (B, T), -100 where not masked
        keep = labels != -100
        logits = self.lm(out.text_tokens[keep])  # (M, V): only the masked positions
        loss = F.cross_entropy(logits, labels[keep]) if keep.any() else out.pooled.sum() * 0.0
        return HeadOutput(loss, {"preds": logits.argmax(-1), "labels": labels[keep]})


class SentenceRetrievalHead(nn.Module):
    """No parameters: mean-pooled hidden states of one text layer (XTREME: layer 14 of 24), cosine similarity.

    Trains only when a run asks for it (the demo's translation-ranking pre-alignment): in-batch contrastive
    loss between a sentence and its translation, on the mean-pooled and on the first-token vectors.
    """

    def __init__(self, layer: int | None = None, temperature: float = 0.05) -> None:
        super().__init__()
        self.layer, self.temperature = layer, temperature

    def embed(
        self, core: EncoderCore, input_ids: torch.Tensor, attention_mask: torch.Tensor, with_first: bool = False
    ) -> Any:
        out = core.encode(input_ids, attention_mask, layer=self.layer)
        tokens = out.text_tokens  # (B, T, D)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        mean = F.normalize((tokens * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        return (mean, F.normalize(out.pooled, dim=-1)) if with_first else mean

    def ranking_loss(self, src: torch.Tensor, tgt: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Symmetric in-batch translation ranking; other rows with the same target text are not negatives."""
        logits = (src @ tgt.T / self.temperature).masked_fill(same, float("-inf"))  # (B, B)
        target = torch.arange(len(src), device=src.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        if "pair_input_ids" not in batch:  # BUCC: one side per sample, pairs found by the metric
            src = self.embed(core, batch["input_ids"], batch["attention_mask"])
            inputs = {"emb": src, "ids": batch["ids"], "sides": batch["sides"], "gold": batch["gold"]}
            return HeadOutput(src.sum() * 0.0, inputs)
        src, src_first = self.embed(core, batch["input_ids"], batch["attention_mask"], with_first=True)
        tgt, tgt_first = self.embed(core, batch["pair_input_ids"], batch["pair_attention_mask"], with_first=True)
        loss = src.sum() * 0.0
        if self.training:
            # Training (the demo's pre-alignment) ranks both the mean-pooled vectors and the first-token vectors
            # the task heads read, so the alignment reaches the heads' input, not only the retrieval embedding.
            ids = batch["pair_input_ids"]
            same = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(-1)
            same &= ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
            loss = (self.ranking_loss(src, tgt, same) + self.ranking_loss(src_first, tgt_first, same)) / 2
        logits = src @ tgt.T  # (B, B)
        return HeadOutput(loss, {"src_emb": src, "tgt_emb": tgt}, logits.argmax(-1).tolist())
