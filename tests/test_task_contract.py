"""Contract test over every catalogue task (timm's ``test_model_backward``, per task instead of per model).

For each task: synthetic samples in the shard contract's format (``shards/__init__.py``) go through the
real ``Collator`` into a tiny ``TransferModule`` (random XLM-R from the demo text model, tiny timm ViT).
Training mode: finite loss, backward, every parameter that ``apply_freezing`` leaves trainable gets a
finite gradient. Evaluation mode: output shapes, and the family's metric computes every catalogue name.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import timm.data
import torch
from PIL import Image
from torch import nn
from torchmetrics import SumMetric
from transformers import AutoTokenizer, ViTConfig, XLMRobertaConfig, XLMRobertaForMaskedLM

from contracts.catalogue import TASKS, TaskSpec, get_task
from datamodules.collate import Collator
from lightning_modules.core import load_vision_spec, vision_data_config
from lightning_modules.families import build_metrics
from lightning_modules.heads import HeadOutput, load_lm_head
from lightning_modules.module import CoreConfig, TransferModule

# Pairwise-distinct sizes, so a transposed or swapped axis fails: 5 samples per batch, 3 NLI labels, 4 choices,
# 7 VQA answers, hidden 64, vision width 48, image 80 px, at most 56 tokens (lengths vary per batch).
B = 5
VISION_WIDTH = 48
IMAGE = 80
MAX_LENGTH = 56
CHOICES = 4
CAPTIONS = (2, 1, 3, 1, 2)  # retrieval: captions per image
TAG_WORDS = (4, 7, 5, 3, 6)  # tagging: words per sentence
BUCC_SIDES = ("src", "tgt", "tgt", "src", "tgt")
VQA_ANSWERS = ("red", "blue", "green", "1", "2", "yes", "no")
IOB_TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
WORDS = "red blue green circle square triangle left right middle the a shows is".split()


@pytest.fixture(scope="module")
def world(demo_dir: Path) -> dict[str, Any]:
    """Tokenizer, vision spec (narrower than the text width, so a swapped axis fails) and image transform."""
    name, kwargs = load_vision_spec(demo_dir / "vision.json")
    kwargs = {**kwargs, "embed_dim": VISION_WIDTH, "img_size": IMAGE}
    config = vision_data_config(name, kwargs)
    return {
        "text_model": str(demo_dir / "text_model"),
        "vision_model": name,
        "vision_kwargs": kwargs,
        "tokenizer": AutoTokenizer.from_pretrained(demo_dir / "text_model"),
        "transform": timm.data.create_transform(**config, is_training=False),
    }


def label_names(spec: TaskSpec) -> list[str]:
    """The catalogue's labels, or a stand-in for those that come from the shards' manifest."""
    if spec.labels:
        return list(spec.labels)
    if spec.family == "vqa":
        return list(VQA_ANSWERS)
    if spec.family == "tagging":
        return list(IOB_TAGS)
    return []


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def image(rng: random.Random, transform: Any) -> torch.Tensor:
    return transform(Image.frombytes("RGB", (96, 80), rng.randbytes(96 * 80 * 3)))  # (3, IMAGE, IMAGE)


def make_records(spec: TaskSpec, n_labels: int, rng: random.Random) -> list[dict[str, Any]]:
    """B json records of the family's shard format, with edge cases (unlabelled, OOV, unanswerable)."""
    s = lambda n: sentence(rng, n)  # noqa: E731
    f = spec.family
    if f == "classification":
        pair = spec.modality == "text"
        return [
            {"text": s(3 + i), "text_pair": s(5 - i) if pair else None, "label": y}
            for i, y in enumerate((0, n_labels - 1, -1, 1, 0))
        ]
    if f == "image_pair":
        return [{"text": s(4 + i), "label": i % 2} for i in range(B)]
    if f == "vqa":  # sample 2: answer outside the vocabulary (no labels): scored as wrong, never dropped
        targets = (([1, 2], [1.0, 0.3]), ([0], [1.0]), ([], []), ([6], [1.0]), ([3, 4, 5], [0.3, 0.6, 1.0]))
        return [{"text": s(3 + i), "answer": "x", "labels": y, "scores": sc} for i, (y, sc) in enumerate(targets)]
    if f == "retrieval":  # 2, 1, 3, 1 and 2 captions per image
        return [{"texts": [s(3 + j) for j in range(n)], "image_id": f"img{i}"} for i, n in enumerate(CAPTIONS)]
    if f == "multiple_choice":
        return [
            {"text": s(6 + i), "choices": [s(2 + j) for j in range(CHOICES)], "label": i % CHOICES} for i in range(B)
        ]
    if f == "span_qa":
        return [span_record(s(3), s(n), i == 1) for i, n in enumerate((8, 40, 12, 6, 10))]  # 40 words: several windows
    if f == "tagging":
        return [{"tokens": s(n).split(), "tags": [rng.randrange(n_labels) for _ in range(n)]} for n in TAG_WORDS]
    if f == "mlm":
        return [{"text": s(n)} for n in (6, 9, 7, 5, 8)]
    if "bucc_f1" in spec.metrics:  # one sentence per sample: s0 <-> t2 and s3 <-> t4 gold, t1 without a partner
        sides, gold = BUCC_SIDES, ("t2", None, "s0", "t4", "s3")
        return [
            {"text": s(4 + i), "side": sd, "gold": g, "id": i_}
            for i, (sd, g, i_) in enumerate(zip(sides, gold, ("s0", "t1", "t2", "s3", "t4")))
        ]
    return [{"text": s(4 + i), "text_pair": s(5 + i)} for i in range(B)]


def span_record(question: str, context: str, unanswerable: bool) -> dict[str, Any]:
    words = context.split()
    answer = " ".join(words[-3:-1])  # near the end: in the last window only when the context is long
    start = len(" ".join(words[:-3])) + 1
    assert context[start : start + len(answer)] == answer, (context, start, answer)
    answers = {"text": [], "answer_start": []} if unanswerable else {"text": [answer], "answer_start": [start]}
    return {"text": question, "context": context, "answers": answers}


def make_batch(name: str, world: dict[str, Any], labels: list[str], train: bool) -> dict[str, Any]:
    spec = get_task(name)
    rng = random.Random(f"{name}-{train}")
    n_images = {"text": 0, "image_text": 1, "image_pair": 2}[spec.modality]
    samples = [
        {
            "__key__": f"k{i}",
            "json": {"task": name, "lang": spec.languages[-1], "id": i, **record},
            "images": [image(rng, world["transform"]) for _ in range(n_images)],
        }
        for i, record in enumerate(make_records(spec, len(labels), rng))
    ]
    max_length = 32 if spec.family == "span_qa" else MAX_LENGTH  # span QA: short windows, so one context needs several
    collate = Collator(
        name,
        world["tokenizer"],
        max_length=max_length,
        num_labels=len(labels),
        train=train,
        mlm_probability=0.4,
        seed=1,
    )
    return collate(samples)


def build_module(name: str, world: dict[str, Any], labels: list[str], fusion: str = "single_stream") -> TransferModule:
    core = CoreConfig(
        world["text_model"],
        world["vision_model"],
        vision_kwargs=world["vision_kwargs"],
        fusion=fusion,
        text_kwargs={"add_pooling_layer": False},
        pretrained=False,
    )
    return TransferModule(core, tasks={name: {"labels": labels, "train": True}})


def check_shapes(spec: TaskSpec, batch: dict[str, Any], out: HeadOutput, hidden: int) -> None:
    m = out.metric_inputs
    f = spec.family
    if f != "mlm" and "bucc_f1" not in spec.metrics:  # one readable prediction per sample (predict, reports)
        assert len(out.predictions) == B, f"{len(out.predictions)} predictions for {B} samples"
    if f in ("classification", "image_pair", "multiple_choice"):
        assert m["preds"].shape == m["labels"].shape == (B,)
        if f == "multiple_choice":
            assert batch["input_ids"].shape[:2] == (B, CHOICES), batch["input_ids"].shape
        if f == "image_pair":
            assert batch["pixel_values"].shape == (B, 2, 3, IMAGE, IMAGE), batch["pixel_values"].shape
    elif f == "vqa":
        assert m["preds"].shape == (B,) and m["targets"].shape == (B, len(VQA_ANSWERS)), m["targets"].shape
        assert m["targets"][2].sum() == 0, "the out-of-vocabulary answer must stay in the batch as all-zero targets"
    elif f == "retrieval":
        n_texts = sum(CAPTIONS)  # evaluation keeps every caption
        assert m["text_emb"].shape[0] == len(m["text_image_ids"]) == n_texts, m["text_emb"].shape
        assert m["image_emb"].shape == (B, m["text_emb"].shape[1]), m["image_emb"].shape
        assert m["text_image_ids"] == [f"img{i}" for i, n in enumerate(CAPTIONS) for _ in range(n)]
    elif f == "span_qa":
        assert batch["input_ids"].shape[0] > B, "the 40-word context must span several stride windows"
        assert len(m["predictions"]) == len(m["references"]) == B
    elif f == "tagging":
        assert [len(p) for p in m["preds"]] == [len(g) for g in m["labels"]] == list(TAG_WORDS)
    elif f == "mlm":
        n_masked = int((batch["labels"] != -100).sum())
        assert n_masked > 0 and m["preds"].shape == m["labels"].shape == (n_masked,)
    elif "bucc_f1" in spec.metrics:
        assert m["emb"].shape == (B, hidden) and m["sides"] == list(BUCC_SIDES)
    else:
        assert m["src_emb"].shape == m["tgt_emb"].shape == (B, hidden)


# The fusion transformer (cores whose text model takes no inputs_embeds, e.g. SigLIP) on one task per family.
FUSION_CASES = [("fusion_transformer", n) for n in ("demo_ve", "demo_nlvr", "demo_vqa", "demo_retrieval", "demo_nli")]


@pytest.mark.parametrize(
    ("fusion", "name"), [("single_stream", n) for n in sorted(TASKS)] + FUSION_CASES, ids=lambda x: str(x)
)
def test_task_contract(fusion: str, name: str, world: dict[str, Any]) -> None:
    torch.manual_seed(0)
    spec = get_task(name)
    labels = label_names(spec)
    module = build_module(name, world, labels, fusion)
    head = module.heads[spec.head]

    # training: finite loss, every parameter left trainable by apply_freezing gets a gradient
    module.train()
    out = head(module.core, make_batch(name, world, labels, train=True))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss), out.loss
    out.loss.backward()
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, f"{name}: trainable parameters without a gradient: {missing[:8]} ({len(missing)})"
    bad = [n for n, p in trainable.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:8]}"
    if spec.modality == "text":  # text-only runs freeze the whole image side
        vision = [n for n in trainable if n.startswith(("core.vision.", "core.image_", "core.fuser."))]
        assert not vision, f"{name}: text-only task leaves image parameters trainable: {vision[:4]}"

    # evaluation: shapes, and the metric computes every catalogue metric from metric_inputs
    module.eval()
    batch = make_batch(name, world, labels, train=False)
    with torch.no_grad():
        out = head(module.core, batch)
    assert torch.isfinite(out.loss), out.loss
    check_shapes(spec, batch, out, module.core.hidden_size)
    metric = build_metrics(spec, labels, "de" if name == "mlqa" else None)
    metric.update(**out.metric_inputs)
    values = metric.compute()
    for key in spec.metrics:
        assert key in values and not math.isnan(float(values[key])), f"{name}: {key} = {values.get(key)}"
    assert spec.primary in spec.metrics, f"{name}: primary {spec.primary} not among {spec.metrics}"


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="Valid tasks: .*xvnli"):
        get_task("xvnlii")


def test_mlm_head_reuses_pretrained_lm_head(tmp_path: Path) -> None:
    """A pretrained text model's MLM head starts from the checkpoint's LM head, weights identical."""
    config = XLMRobertaConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
    )
    saved = XLMRobertaForMaskedLM(config)
    saved.save_pretrained(tmp_path)
    module = TransferModule(
        CoreConfig(str(tmp_path), pretrained=True, text_kwargs={"add_pooling_layer": False}),
        tasks={"demo_mlm": {"labels": [], "train": True}},
    )
    ours, theirs = module.heads["mlm"].lm.state_dict(), saved.lm_head.state_dict()
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    assert torch.equal(ours["decoder.weight"], saved.roberta.embeddings.word_embeddings.weight)
    # a copy, not the core's embedding: one parameter must not sit in two optimizer groups
    head_params = {id(p) for p in module.heads.parameters()}
    assert not head_params & {id(p) for p in module.core.parameters()}
    json.dumps(module.hparams.tasks)  # the hyperparameters stay serialisable


class _ClsWins(nn.Module):
    """Stand-in QA layer: start and end logits peak at the CLS token (the no-answer score)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape[:2], 2) + 0 * tokens.sum()  # (F, T, 2)
        logits[:, 0] = 10.0
        return logits


def test_span_qa_null_answer_only_where_the_task_has_unanswerable_questions(world: dict[str, Any]) -> None:
    module = build_module("squad_v2", world, [])
    head = module.heads["span_qa"].eval()
    head.qa = _ClsWins()
    with torch.no_grad():
        v2 = head(module.core, make_batch("squad_v2", world, [], train=False)).predictions
        v1 = head(module.core, make_batch("squad_v1", world, [], train=False)).predictions
    assert v2 == [""] * B, v2
    assert all(v1), f"SQuAD v1 must always answer with a span: {v1}"


def test_mlm_evaluation_masks_are_reproducible(world: dict[str, Any]) -> None:
    first, second = (make_batch("demo_mlm", world, [], train=False) for _ in range(2))
    assert torch.equal(first["labels"], second["labels"]) and torch.equal(first["input_ids"], second["input_ids"])


def test_bucc_test_threshold_is_the_one_tuned_on_dev(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """XTREME scores BUCC test data with the margin threshold that maximised F1 on the dev ("sample") data."""
    bucc = {"bucc": {"labels": [], "train": False}}
    module = TransferModule(
        CoreConfig(world["text_model"], pretrained=False),
        tasks=bucc,
        evaluation={"val": [["bucc", "de"]], "test": [["bucc", "de"]], "seed": 0},
    )
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    gen = torch.Generator().manual_seed(0)
    ids, sides = ["s0", "s1", "s2", "t0", "t1", "t2"], ["src"] * 3 + ["tgt"] * 3
    gold = ["t0", "t1", None, "s0", "s1", None]  # s2 and t2 have no partner
    own = {}
    for stage, noise in (("val", 0.1), ("test", 0.6)):  # translations near their source, closer on dev
        src = torch.randn(3, 8, generator=gen)
        emb = torch.cat([src, src + noise * torch.randn(3, 8, generator=gen)])  # (6, 8)
        module.metrics[f"{stage}|bucc|de"] = build_metrics(get_task("bucc"))
        module.counts[f"{stage}|bucc|de"] = SumMetric()
        module.metrics[f"{stage}|bucc|de"].update(emb, ids, sides, gold)
        alone = build_metrics(get_task("bucc"))
        alone.update(emb, ids, sides, gold)
        own[stage] = float(alone.compute()["bucc_threshold"])
    assert own["val"] != pytest.approx(own["test"]), own  # else the test below proves nothing
    threshold = lambda rows: next(r["value"] for r in rows if r["metric"] == "bucc_threshold")  # noqa: E731
    assert threshold(module._compute_all("val")) == pytest.approx(own["val"])
    assert threshold(module._compute_all("test")) == pytest.approx(own["val"])


def test_mlm_head_of_a_model_without_one_names_the_fix(tmp_path: Path) -> None:
    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=9).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no masked-LM head .* model.core.pretrained=false"):
        load_lm_head(str(tmp_path))


def test_evaluation_sets_must_arrive_at_construction(world: dict[str, Any]) -> None:
    """The module never asks the data module which loader is which: a missing link fails with the fix."""
    module = TransferModule(
        CoreConfig(world["text_model"], pretrained=False), tasks={"bucc": {"labels": [], "train": False}}
    )
    with pytest.raises(ValueError, match=r"lists 0 test set\(s\).*data.evaluation -> model.evaluation"):
        module.test_step({"task": "bucc"}, 0, dataloader_idx=0)
