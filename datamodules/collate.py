"""Collation, and the collate method of every family: decoded samples of one task -> one batch dict.

``FAMILY_COLLATE`` (bottom of this file) maps each family to its collate method. The json fields its samples
carry are ``contracts/fields.py`` (the shard contract); the model half (head, metric) is
``lightning_modules/families.py``.

Runs inside the loader workers: text is tokenized here, in one batched call of the fast tokenizer, padded
to the longest sequence of the batch (rounded up to a multiple of 8 for tensor cores). Family targets:

=================== ===========================================================================
classification      ``labels`` (B,) (-1 = unlabelled)
image_pair          ``labels`` (B,); ``pixel_values`` (B, 2, C, H, W)
vqa                 ``targets`` (B, A) soft scores (all zero = answer outside the vocabulary)
retrieval           ``image_ids`` (I,), ``text_image_index`` (Tc,): training takes one caption per
                    image, evaluation all of them (the gallery stays exact)
multiple_choice     ``input_ids`` (B, C, T), ``labels`` (B,)
span_qa             features (F, T) of stride windows, ``start_positions``/``end_positions`` (F,),
                    ``example_index`` (F,), ``offsets``, ``contexts``, ``references``
tagging             ``labels`` (B, T): the word's tag at its first sub-token, -100 elsewhere
mlm                 ``labels`` (B, T): original ids at masked positions, -100 elsewhere
sentence_retrieval  ``pair_input_ids``/``pair_attention_mask`` (translations) or BUCC ``ids``,
                    ``sides``, ``gold``
=================== ===========================================================================
"""

from __future__ import annotations

import os
import random
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from contracts.catalogue import get_task
from contracts.ranges import PAD_MULTIPLE
from datamodules.span_qa import prepare_features

if TYPE_CHECKING:
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


def _mlm_collator(tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> Any:
    from transformers import DataCollatorForLanguageModeling  # on use: transformers is seconds of start-up

    return DataCollatorForLanguageModeling(tokenizer, **kwargs)


class Collator:
    """Callable collate function for one task (picklable, so it runs in spawned workers).

    Args:
        task: catalogue task name; its family picks the collate method.
        tokenizer: a fast tokenizer (span QA needs offsets, tagging ``word_ids``).
        max_length: tokens per text (per stride window for span QA).
        num_labels: VQA answer vocabulary size (width of ``targets``).
        train: training batches (one random caption per retrieval image, ``skipped`` counts).
        doc_stride: span QA: tokens shared by consecutive windows (default ``max_length // 3``).
        mlm_probability: MLM: share of tokens masked.
        seed: seeds caption choice and MLM masking.
    """

    def __init__(
        self,
        task: str,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int = 128,
        num_labels: int = 0,
        train: bool = False,
        doc_stride: int | None = None,
        mlm_probability: float = 0.15,
        seed: int = 0,
    ) -> None:
        self.task, self.family = task, get_task(task).family
        self.tokenizer, self.max_length, self.num_labels = tokenizer, max_length, num_labels
        # HF run_qa's proportions (stride 128 of 384): overlapping windows still leave room for the question.
        self.train, self.doc_stride = train, max_length // 3 if doc_stride is None else doc_stride
        self.rng, self.seed, self.mlm_probability = random.Random(seed), seed, mlm_probability
        self.mlm: DataCollatorForLanguageModeling | None = None
        # The family's entry itself, not its name: a spawned loader worker unpickles it from its module, so a
        # family registered from its own module (docs/tasks.md) collates there without being registered again.
        self.family_collate = FAMILY_COLLATE[self.family]
        if self.family_collate.setup is not None:
            self.family_collate.setup(self)

    def tokenize(self, texts: list[str], pairs: list[str] | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            pairs,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            pad_to_multiple_of=PAD_MULTIPLE,
            return_tensors="pt",
            **kwargs,
        )

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        records = [s["json"] for s in samples]
        batch: dict[str, Any] = {
            "task": self.task,
            "lang": [r["lang"] for r in records],
            "keys": [s["__key__"] for s in samples],
        }
        if self.train:  # corrupt samples the decoder skipped since the last batch (evaluation raises instead)
            skipped: Counter[str] = Counter()
            for s in samples:
                skipped.update(s.get("skipped", {}))
            batch["skipped"] = dict(skipped)
        batch.update(self.family_collate.collate(self, samples, records))
        return batch

    # -- one method per family (and a setup where a family needs one) ------------------------------------
    def _classification(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        pairs = [r.get("text_pair") for r in records]
        if any(p is None for p in pairs) and not all(p is None for p in pairs):
            raise ValueError(f"{self.task}: some samples have text_pair and some not ({samples[0]['__key__']}...)")
        out = dict(self.tokenize([r["text"] for r in records], None if pairs[0] is None else pairs))
        out["labels"] = torch.tensor([r["label"] for r in records], dtype=torch.long)
        if samples[0]["images"]:
            out["pixel_values"] = torch.stack([s["images"][0] for s in samples])  # (B, C, H, W)
        return out

    def _image_pair(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        out = dict(self.tokenize([r["text"] for r in records]))
        out["labels"] = torch.tensor([r["label"] for r in records], dtype=torch.long)
        out["pixel_values"] = torch.stack([torch.stack(s["images"][:2]) for s in samples])  # (B, 2, C, H, W)
        return out

    def _vqa(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        out = dict(self.tokenize([r["text"] for r in records]))
        targets = torch.zeros(len(records), self.num_labels)
        for i, r in enumerate(records):
            for label, score in zip(r["labels"], r["scores"]):
                targets[i, label] = score
        out["targets"] = targets  # (B, A)
        out["pixel_values"] = torch.stack([s["images"][0] for s in samples])
        return out

    def _retrieval(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        texts, index = [], []
        for i, r in enumerate(records):
            captions = [self.rng.choice(r["texts"])] if self.train else r["texts"]
            texts += captions
            index += [i] * len(captions)
        out = dict(self.tokenize(texts))
        out["text_image_index"] = torch.tensor(index, dtype=torch.long)  # (Tc,)
        out["image_ids"] = [str(r["image_id"]) for r in records]
        out["pixel_values"] = torch.stack([s["images"][0] for s in samples])
        return out

    def _multiple_choice(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        n = len(records[0]["choices"])
        if any(len(r["choices"]) != n for r in records):
            raise ValueError(f"{self.task}: a batch mixes samples with different numbers of choices")
        contexts = [r["text"] for r in records for _ in range(n)]
        choices = [c for r in records for c in r["choices"]]
        enc = self.tokenize(contexts, choices)
        out = {k: v.view(len(records), n, -1) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        out["labels"] = torch.tensor([r["label"] for r in records], dtype=torch.long)
        return out

    def _check_stride(self) -> None:
        if not 0 < self.doc_stride < self.max_length // 2:
            raise ValueError(f"doc_stride={self.doc_stride} must be in (0, max_length // 2 = {self.max_length // 2})")

    def _span_qa(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        contexts = [r["context"] for r in records]
        feats = prepare_features(
            self.tokenizer,
            [r["text"] for r in records],
            contexts,
            self.max_length,
            self.doc_stride,
            answers=[r["answers"] for r in records],
        )
        feats["contexts"] = contexts
        feats["references"] = [list(r["answers"]["text"]) for r in records]
        return feats

    def _tagging(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        enc = self.tokenize([r["tokens"] for r in records], is_split_into_words=True)
        labels = torch.full_like(enc["input_ids"], -100)
        for i, r in enumerate(records):
            previous = None
            for t, word in enumerate(enc.word_ids(i)):
                if word is not None and word != previous:
                    labels[i, t] = r["tags"][word]
                previous = word
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def _mlm_masker(self) -> None:
        self.mlm = _mlm_collator(self.tokenizer, mlm_probability=self.mlm_probability, seed=self.seed)

    def _mlm(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        enc = self.tokenize([r["text"] for r in records], return_special_tokens_mask=True)
        special = enc.pop("special_tokens_mask").bool() | (enc["attention_mask"] == 0)
        # torch_mask_tokens draws from mlm.generator (None: torch's global RNG). Training: one stream per
        # loader worker, as HF seeds it. Evaluation: seeded by the batch's keys, so every validation pass
        # masks the same tokens and scores stay comparable across checkpoints.
        if not self.train:
            keys = "|".join(s["__key__"] for s in samples)
            self.mlm.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(keys.encode()))
        elif self.mlm.generator is None or self.mlm._generator_pid != os.getpid():
            self.mlm.create_rng("pt")
        input_ids, labels = self.mlm.torch_mask_tokens(enc["input_ids"].clone(), special_tokens_mask=special)
        return {"input_ids": input_ids, "attention_mask": enc["attention_mask"], "labels": labels}

    def _sentence_retrieval(self, samples: list[dict], records: list[dict]) -> dict[str, Any]:
        out = dict(self.tokenize([r["text"] for r in records]))
        if "side" in records[0]:  # BUCC: one sentence per sample, gold partners listed
            out.update(
                ids=[str(r["id"]) for r in records],
                sides=[r["side"] for r in records],
                gold=[None if r.get("gold") is None else str(r["gold"]) for r in records],
            )
            return out
        pair = self.tokenize([r["text_pair"] for r in records])
        out["pair_input_ids"], out["pair_attention_mask"] = pair["input_ids"], pair["attention_mask"]
        return out


@dataclass(frozen=True)
class FamilyCollate:
    """How one family's samples become a batch (its json fields: ``contracts.fields.FAMILY_FIELDS``)."""

    collate: Callable[[Collator, list[dict], list[dict]], dict[str, Any]]
    """(collator, samples, their json records) -> the family's batch fields."""
    setup: Callable[[Collator], None] | None = None
    """Run once when the collator is made: checks its settings, builds what the family needs (MLM's masker)."""


FAMILY_COLLATE: dict[str, FamilyCollate] = {
    "classification": FamilyCollate(Collator._classification),
    "image_pair": FamilyCollate(Collator._image_pair),
    "vqa": FamilyCollate(Collator._vqa),
    "retrieval": FamilyCollate(Collator._retrieval),
    "multiple_choice": FamilyCollate(Collator._multiple_choice),
    "span_qa": FamilyCollate(Collator._span_qa, Collator._check_stride),
    "tagging": FamilyCollate(Collator._tagging),
    "mlm": FamilyCollate(Collator._mlm, Collator._mlm_masker),
    "sentence_retrieval": FamilyCollate(Collator._sentence_retrieval),
}
