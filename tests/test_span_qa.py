"""Span-QA features and post-processing with a tiny word-level fast tokenizer built here (no network)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from datamodules.span_qa import prepare_features
from lightning_modules.span_qa import postprocess

WORDS = "the red square is left of a blue circle near green triangle under yellow star".split()
LONG_CONTEXT = " ".join(WORDS[i % len(WORDS)] for i in range(41)) + " ."
ANSWER = "blue circle near"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator([" ".join(WORDS) + " . where ?"], trainers.WordLevelTrainer(special_tokens=specials))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B:1 </s>:1", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def _features(tokenizer: PreTrainedTokenizerFast) -> dict[str, torch.Tensor]:
    # answer = words 7..9 of the second cycle of WORDS, so it lies in later windows only
    start = LONG_CONTEXT.index(ANSWER, len(" ".join(WORDS)))
    answers = [{"text": [ANSWER], "answer_start": [start]}, {"text": [], "answer_start": []}]
    return prepare_features(
        tokenizer, ["where is blue ?", "where ?"], [LONG_CONTEXT, "red square"], 24, 5, answers=answers
    )


def test_long_context_splits_with_stride(tokenizer: PreTrainedTokenizerFast) -> None:
    feats = _features(tokenizer)
    windows = (feats["example_index"] == 0).nonzero()[:, 0]
    assert len(windows) >= 3 and feats["example_index"].tolist()[-1] == 1
    assert feats["input_ids"].shape[1] % 8 == 0 and feats["input_ids"].shape[1] >= 24
    assert feats["input_ids"].shape == feats["attention_mask"].shape == feats["offsets"].shape[:2]
    context_spans = [[tuple(o) for o in feats["offsets"][f].tolist() if o[0] >= 0] for f in windows.tolist()]
    for before, after in zip(context_spans, context_spans[1:]):
        assert before[-5:] == after[:5], "consecutive windows must share doc_stride tokens"
    covered = sorted({s for spans in context_spans for s in spans})
    assert LONG_CONTEXT[covered[0][0] : covered[-1][1]] == LONG_CONTEXT  # every token in some window


def test_gold_positions_map_back_to_answer(tokenizer: PreTrainedTokenizerFast) -> None:
    feats = _features(tokenizer)
    hits = 0
    for f, (s, e) in enumerate(zip(feats["start_positions"].tolist(), feats["end_positions"].tolist())):
        if feats["example_index"][f] == 1:
            assert (s, e) == (0, 0)  # unanswerable -> CLS
        elif s != 0:
            hits += 1
            assert LONG_CONTEXT[feats["offsets"][f, s, 0] : feats["offsets"][f, e, 1]] == ANSWER
        else:
            assert e == 0
    assert hits >= 1 and (feats["start_positions"][feats["example_index"] == 0] == 0).any()


def test_postprocess_recovers_answer(tokenizer: PreTrainedTokenizerFast) -> None:
    feats = _features(tokenizer)
    start = torch.randn(feats["input_ids"].shape, generator=torch.Generator().manual_seed(0))  # (F, T)
    end = torch.randn(feats["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    f = int((feats["start_positions"] != 0).nonzero()[0, 0])
    start[f, feats["start_positions"][f]] = 10.0
    end[f, feats["end_positions"][f]] = 10.0
    contexts = [LONG_CONTEXT, "red square"]
    args = (feats["example_index"], feats["offsets"], contexts)
    answers = postprocess(start, end, *args)
    assert answers[0] == ANSWER and answers[1] in {"red", "square", "red square"}
    start[:, 0], end[:, 0] = 30.0, 30.0  # the null (CLS) score wins everywhere
    assert postprocess(start, end, *args, allow_null=True) == ["", ""]
    assert postprocess(start, end, *args)[0] == ANSWER  # null ignored without allow_null
    assert len(postprocess(start, end, *args, max_answer_length=2)[0].split()) <= 2
