"""The task catalogue: one explicit dict from task name to a small spec.

A catalogue entry (`TaskSpec`) holds only what code reads:

- ``family``: which head class serves the task and which sample fields it needs (``contracts/fields.py``).
- ``head``: the key of the head instance in ``TransferModule.heads``. Tasks with the same ``head`` share
  weights: every language of a task, and datasets of one family with the same label set (SNLI-VE and
  XVNLI; MNLI, ANLI and XNLI; all retrieval datasets).
- ``modality``: ``text`` (no image), ``image_text`` (one image) or ``image_pair`` (two images).
- ``labels``: the canonical label order. Converters map every dataset's own labels onto it and record
  the mapping in the manifest. Empty where the vocabulary comes from the shards' manifest (VQA answers,
  tag sets) or where there are no labels (retrieval, MLM).
- ``metrics``: metric names the family's metric factory understands; ``primary`` selects checkpoints.
- ``languages``: the evaluation languages (English first where it has test data).
- ``unanswerable``: span QA only: the dataset has questions without an answer (SQuAD v2), so post-processing
  may answer "" when the no-answer score (CLS start + end) beats every span.
- ``lang_normalisation``: span QA only: score answers with MLQA's language-aware normalisation (per-language
  articles, unicode punctuation, character-level CJK) instead of SQuAD v1.1's English one.
- ``overlaps``: targets whose data this task's data overlaps (SNLI-VE and XVNLI share Flickr30k images,
  SQuAD's English paragraphs are XQuAD's and MLQA's sources, ...): the study table marks them with †.

Canonical label orders:

- NLI and visual entailment: ``entailment, neutral, contradiction`` (MNLI's order; IGLUE's XVNLI uses the
  same names). An item without a gold label (XVNLI ``"-"``) carries label ``-1`` and scores as wrong.
- Binary (NLVR2, MaRVL, QQP, PAWS-X, SST-2): ``false, true`` / ``negative, positive`` — index 1 is the
  positive class ("True", JSON ``true``, duplicate, paraphrase, positive sentiment).
- Multiple choice: the label is the index of the correct choice in the sample's ``choices`` (CommonsenseQA's
  letters A-E sorted); -1 on unlabelled test files.
- VQA answers (from the manifest): GQA/xGQA use the 1,842 answers of ``trainval_label2ans.json`` in that
  file's order (xGQA answers stay English); VQAv2 its answer list. An answer outside the vocabulary keeps
  its sample with empty ``labels``/``scores``: it scores 0, never dropped.
- Tags (from the manifest): UD-POS the 17 UPOS tags in the converter's ``UPOS`` order; PAN-X
  ``O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC`` (IOB2, scored as entity spans); CCG jiant's ``tags_to_id.json``
  order (else every tag seen, sorted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Family = Literal[
    "classification",  # pooled vector -> label (text, text pair, image + text)
    "image_pair",  # two images + one statement -> label (each image encoded with the statement)
    "vqa",  # pooled vector -> answer vocabulary, soft scores + BCE
    "retrieval",  # dual encoder: pooled image vs pooled text, contrastive, recall@K over the gallery
    "multiple_choice",  # one score per (context, choice), softmax over choices
    "span_qa",  # start/end logits over context tokens
    "tagging",  # one label per word (first sub-token)
    "mlm",  # masked language modelling
    "sentence_retrieval",  # no training: mean-pooled hidden states of one layer, cosine similarity
]
Modality = Literal["text", "image_text", "image_pair"]

FAMILIES: tuple[str, ...] = Family.__args__  # type: ignore[attr-defined]

NLI_LABELS = ("entailment", "neutral", "contradiction")
BINARY_LABELS = ("false", "true")

# Language lists as published (IGLUE, Bugliarello et al. 2022; XTREME, Hu et al. 2020).
XVNLI_LANGS = ("en", "ar", "es", "fr", "ru")
XGQA_LANGS = ("en", "bn", "de", "id", "ko", "pt", "ru", "zh")
MARVL_LANGS = ("id", "sw", "ta", "tr", "zh")
XFLICKRCO_LANGS = ("en", "de", "es", "id", "ja", "ru", "tr", "zh")
WIT_LANGS = ("en", "ar", "bg", "da", "el", "et", "id", "ja", "ko", "tr", "vi")
XNLI_LANGS = ("en", "ar", "bg", "de", "el", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
PAWSX_LANGS = ("en", "de", "es", "fr", "ja", "ko", "zh")
XQUAD_LANGS = ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA_LANGS = ("en", "ar", "de", "es", "hi", "vi", "zh")
TYDIQA_LANGS = ("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te")
UDPOS_LANGS = (
    "en",
    "af",
    "ar",
    "bg",
    "de",
    "el",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "kk",
    "ko",
    "mr",
    "nl",
    "pt",
    "ru",
    "ta",
    "te",
    "th",
    "tl",
    "tr",
    "ur",
    "vi",
    "wo",
    "yo",
    "zh",
)
PANX_LANGS = (
    "en",
    "af",
    "ar",
    "bg",
    "bn",
    "de",
    "el",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "jv",
    "ka",
    "kk",
    "ko",
    "ml",
    "mr",
    "ms",
    "my",
    "nl",
    "pt",
    "ru",
    "sw",
    "ta",
    "te",
    "th",
    "tl",
    "tr",
    "ur",
    "vi",
    "yo",
    "zh",
)
BUCC_LANGS = ("de", "fr", "ru", "zh")
TATOEBA_LANGS = (
    "af",
    "ar",
    "bg",
    "bn",
    "de",
    "el",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "id",
    "it",
    "ja",
    "jv",
    "ka",
    "kk",
    "ko",
    "ml",
    "mr",
    "nl",
    "pt",
    "ru",
    "sw",
    "ta",
    "te",
    "th",
    "tl",
    "tr",
    "ur",
    "vi",
    "zh",
)
DEMO_LANGS = ("en", "de", "es", "ru")
EN = ("en",)


@dataclass(frozen=True)
class TaskSpec:
    """One catalogue entry (see the module docstring for each field)."""

    family: Family
    head: str
    modality: Modality
    metrics: tuple[str, ...]
    primary: str
    languages: tuple[str, ...] = EN
    labels: tuple[str, ...] = ()
    unanswerable: bool = False  # span_qa: some questions have no answer (SQuAD v2), so "" is a valid prediction
    lang_normalisation: bool = False  # span_qa: MLQA's language-aware answer normalisation
    overlaps: tuple[str, ...] = ()  # targets whose data this task's data overlaps (study table: †)


def _cls(head: str, modality: Modality, labels: tuple[str, ...], langs: tuple[str, ...] = EN) -> TaskSpec:
    return TaskSpec("classification", head, modality, ("acc",), "acc", langs, labels)


_RETRIEVAL_METRICS = ("ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "mean_r1")
_SPAN_METRICS = ("em", "f1")

TASKS: dict[str, TaskSpec] = {
    # --- demo world: one task per head family, English train/dev, test in every demo language ---
    "demo_ve": _cls("demo_ve", "image_text", NLI_LABELS, DEMO_LANGS),
    "demo_nli": _cls("demo_nli", "text", NLI_LABELS, DEMO_LANGS),
    "demo_nlvr": TaskSpec("image_pair", "demo_nlvr", "image_pair", ("acc",), "acc", DEMO_LANGS, BINARY_LABELS),
    "demo_vqa": TaskSpec("vqa", "demo_vqa", "image_text", ("vqa_acc",), "vqa_acc", DEMO_LANGS),
    "demo_retrieval": TaskSpec("retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1", DEMO_LANGS),
    "demo_mc": TaskSpec("multiple_choice", "demo_mc", "text", ("acc",), "acc", DEMO_LANGS),
    "demo_qa": TaskSpec("span_qa", "span_qa", "text", _SPAN_METRICS, "f1", DEMO_LANGS),
    "demo_tagging": TaskSpec("tagging", "demo_tagging", "text", ("span_f1",), "span_f1", DEMO_LANGS),
    "demo_mlm": TaskSpec("mlm", "mlm", "text", ("mlm_acc",), "mlm_acc", DEMO_LANGS),
    "demo_tatoeba": TaskSpec("sentence_retrieval", "none", "text", ("tatoeba_acc",), "tatoeba_acc", DEMO_LANGS[1:]),
    # --- IGLUE targets and their English training sets ---
    "snli_ve": replace(_cls("visual_entailment", "image_text", NLI_LABELS), overlaps=("xvnli",)),
    "xvnli": _cls("visual_entailment", "image_text", NLI_LABELS, XVNLI_LANGS),
    "gqa": TaskSpec("vqa", "gqa", "image_text", ("vqa_acc",), "vqa_acc", overlaps=("xgqa",)),
    "xgqa": TaskSpec("vqa", "gqa", "image_text", ("vqa_acc",), "vqa_acc", XGQA_LANGS),
    "vqav2": TaskSpec("vqa", "vqav2", "image_text", ("vqa_acc",), "vqa_acc"),
    "nlvr2": TaskSpec("image_pair", "nlvr", "image_pair", ("acc",), "acc", EN, BINARY_LABELS, overlaps=("marvl",)),
    "marvl": TaskSpec("image_pair", "nlvr", "image_pair", ("acc",), "acc", MARVL_LANGS, BINARY_LABELS),
    "flickr30k": TaskSpec(
        "retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1", overlaps=("xflickrco",)
    ),
    "coco": TaskSpec("retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1", overlaps=("xflickrco",)),
    "xflickrco": TaskSpec("retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1", XFLICKRCO_LANGS),
    "wit": TaskSpec("retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1", WIT_LANGS),
    # image-caption pairs of the start phase (img2dataset shards: CC3M, COCO/Flickr30k train, ...); any language
    "captions": TaskSpec("retrieval", "retrieval", "image_text", _RETRIEVAL_METRICS, "mean_r1"),
    # image-text matching on the same captions (a caption vs another image's, from the stream): trains the fusion
    "captions_itm": TaskSpec("classification", "itm", "image_text", ("acc",), "acc", EN, ("mismatch", "match")),
    # parallel sentences of the start phase: translation ranking (a sentence vs its English translation)
    "parallel": TaskSpec("sentence_retrieval", "none", "text", ("tatoeba_acc",), "tatoeba_acc"),
    # --- text intermediate tasks of Phang et al. 2020 and XTREME targets ---
    "mnli": replace(_cls("nli", "text", NLI_LABELS), overlaps=("xnli",)),
    "anli": _cls("nli", "text", NLI_LABELS),
    "xnli": _cls("nli", "text", NLI_LABELS, XNLI_LANGS),
    "qqp": _cls("paraphrase", "text", BINARY_LABELS),
    "pawsx": _cls("paraphrase", "text", BINARY_LABELS, PAWSX_LANGS),
    "sst2": _cls("sentiment", "text", ("negative", "positive")),
    "hellaswag": TaskSpec("multiple_choice", "multiple_choice", "text", ("acc",), "acc"),
    "cosmosqa": TaskSpec("multiple_choice", "multiple_choice", "text", ("acc",), "acc"),
    "commonsenseqa": TaskSpec("multiple_choice", "multiple_choice", "text", ("acc",), "acc"),
    "squad_v1": TaskSpec("span_qa", "span_qa", "text", _SPAN_METRICS, "f1", overlaps=("xquad", "mlqa")),
    "squad_v2": TaskSpec(
        "span_qa", "span_qa", "text", _SPAN_METRICS, "f1", unanswerable=True, overlaps=("xquad", "mlqa")
    ),
    "xquad": TaskSpec("span_qa", "span_qa", "text", _SPAN_METRICS, "f1", XQUAD_LANGS),
    "mlqa": TaskSpec("span_qa", "span_qa", "text", _SPAN_METRICS, "f1", MLQA_LANGS, lang_normalisation=True),
    "tydiqa": TaskSpec("span_qa", "span_qa", "text", _SPAN_METRICS, "f1", TYDIQA_LANGS),
    "udpos": TaskSpec("tagging", "udpos", "text", ("acc",), "acc", UDPOS_LANGS),
    "panx": TaskSpec("tagging", "panx", "text", ("span_f1",), "span_f1", PANX_LANGS),
    "ccg": TaskSpec("tagging", "ccg", "text", ("acc",), "acc"),
    "mlm": TaskSpec("mlm", "mlm", "text", ("mlm_acc",), "mlm_acc"),
    "bucc": TaskSpec("sentence_retrieval", "none", "text", ("bucc_f1",), "bucc_f1", BUCC_LANGS),
    "tatoeba": TaskSpec("sentence_retrieval", "none", "text", ("tatoeba_acc",), "tatoeba_acc", TATOEBA_LANGS),
}


def get_task(name: str) -> TaskSpec:
    """The catalogue entry for ``name``; an unknown name fails with the list of valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"Unknown task {name!r}. Valid tasks: {', '.join(sorted(TASKS))}") from None
