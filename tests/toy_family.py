"""A family declared in one module: the worked example of docs/tasks.md, "Adding a family".

``word_parity``: a text -> whether it has an even or an odd number of words. Everything the family is lives
here: its sample fields, its collate, its head, its metric (with the outcome formula ``Accuracy`` carries), which
fields a negative control may shuffle, and its first catalogue entry. ``register`` puts each part in the table
that reads it; the generic converter (``python -m shards build jsonl --field task=word_parity ...``) writes its
shards from the fields declared here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from contracts.catalogue import TASKS, TaskSpec
from contracts.fields import FAMILY_FIELDS, FamilyFields
from datamodules.collate import FAMILY_COLLATE, Collator, FamilyCollate
from lightning_modules.core import EncoderCore
from lightning_modules.families import FAMILY_MODEL, FamilyModel, HeadArgs
from lightning_modules.heads import HeadOutput
from lightning_modules.metrics import Accuracy

FAMILY = "word_parity"
TASK = "word_parity"

FIELDS = FamilyFields(required=("text", "label"), indexed_labels=True, shuffled=("label",))


def collate(collator: Collator, samples: list[dict], records: list[dict]) -> dict[str, Any]:
    out = dict(collator.tokenize([r["text"] for r in records]))
    out["labels"] = torch.tensor([r["label"] for r in records], dtype=torch.long)  # (B,)
    return out


class WordParityHead(nn.Module):
    """Pooled text vector -> even / odd."""

    def __init__(self, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, num_labels)

    def forward(self, core: EncoderCore, batch: dict[str, Any]) -> HeadOutput:
        logits = self.proj(core.encode(batch["input_ids"], batch["attention_mask"]).pooled)  # (B, 2)
        preds = logits.argmax(-1)
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        return HeadOutput(loss, {"preds": preds, "labels": batch["labels"]}, preds.tolist())


def head(args: HeadArgs) -> nn.Module:
    return WordParityHead(args.hidden, len(args.label_names))


def metric(spec: TaskSpec, label_names: Any, lang: str | None) -> Accuracy:
    return Accuracy()  # outcome formula: ("ratio", "correct", "total")


SPEC = TaskSpec(FAMILY, "word_parity", "text", ("acc",), "acc", ("en",), ("even", "odd"))


def register(setitem: Callable[[dict, str, Any], None] = dict.__setitem__) -> None:
    """Puts the family in every table (``setitem``: e.g. ``monkeypatch.setitem``, undone after a test)."""
    setitem(FAMILY_FIELDS, FAMILY, FIELDS)
    setitem(FAMILY_COLLATE, FAMILY, FamilyCollate(collate))
    setitem(FAMILY_MODEL, FAMILY, FamilyModel(head, metric, needs_label_names=True))
    setitem(TASKS, TASK, SPEC)
