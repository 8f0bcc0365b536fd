"""The per-family sample schema: which json fields a sample of each family carries (the shard contract).

One table read by both sides of the shards: the converters (``shards/converters/generic.py`` maps a source column
onto each field) and the decoder (``datamodules/pipeline.py`` checks the required fields and, where labels index
the task's label names, their range). ``shuffled`` names what a negative control (``shuffle_labels``) permutes
among the samples of a batch (``datamodules/controls.py``); a family without it refuses the control. The field
meanings are in ``shards/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyFields:
    """The json fields of one family's samples."""

    required: tuple[str, ...]
    """Fields every sample carries; the decoder refuses a sample without one."""
    optional: tuple[str, ...] = ()
    """Fields a converter writes where the source has them (null otherwise); the decoder does not require them."""
    indexed_labels: bool = False
    """``label``/``labels`` are indices into the task's label names: the decoder checks their range."""
    shuffled: tuple[str, ...] = ()
    """Fields ``shuffle_labels`` permutes together among a batch's samples (empty: no movable target)."""
    soft_labels: bool = False
    """``labels``/``scores`` are soft targets over an answer vocabulary; a sample whose answer is outside it has
    none (scored 0): preflight reports the share of test samples inside the vocabulary."""

    @property
    def single_label(self) -> bool:
        """Each sample has one ``label`` among the task's label names: a uniform guess scores 1 / #labels."""
        return self.indexed_labels and "label" in self.required

    @property
    def all(self) -> tuple[str, ...]:
        """Every field, required first (the order a converter maps them in)."""
        return self.required + self.optional


FAMILY_FIELDS: dict[str, FamilyFields] = {
    "classification": FamilyFields(("text", "label"), ("text_pair",), True, ("label",)),
    "image_pair": FamilyFields(("text", "label"), (), True, ("label",)),
    "vqa": FamilyFields(("text", "labels", "scores"), ("answer",), True, ("labels", "scores", "answer"), True),
    "retrieval": FamilyFields(("texts", "image_id"), (), False, ("texts",)),
    "multiple_choice": FamilyFields(("text", "choices", "label"), (), False, ("label",)),
    "span_qa": FamilyFields(("text", "context", "answers")),
    "tagging": FamilyFields(("tokens", "tags")),
    "mlm": FamilyFields(("text",)),
    "sentence_retrieval": FamilyFields(("text",), ("text_pair", "side", "gold")),
}


def family_fields(family: str) -> FamilyFields:
    """The schema of ``family``; an unknown family fails with the list of known ones."""
    try:
        return FAMILY_FIELDS[family]
    except KeyError:
        raise KeyError(f"Unknown family {family!r}. Known families: {', '.join(FAMILY_FIELDS)}") from None
