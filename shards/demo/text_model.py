"""The demo world's text model: a BPE tokenizer trained on all demo text, and a tiny XLM-R config."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

# XLM-R's order: <s>=0, <pad>=1, </s>=2, <unk>=3; <mask> follows.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
VOCAB_SIZE = 1500
MAX_TOKENS = 256
# Every Latin and Cyrillic letter starts in the vocabulary, so unseen words split into letters, not <unk>.
ALPHABET = [*string.ascii_letters, *string.digits, *"äöüßÄÖÜáéíóúñ¿¡ÁÉÍÓÚÑ"]
ALPHABET += [chr(c) for c in range(0x0410, 0x0450)] + ["ё", "Ё"]

VISION = {
    "model_name": "vit_tiny_patch16_224",
    "kwargs": {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2},
}


def sample_texts(sample: dict) -> Iterator[str]:
    """Every piece of text in a sample json (the tokenizer's training corpus)."""
    for name in ("text", "text_pair", "context"):
        if isinstance(sample.get(name), str):
            yield sample[name]
    yield from sample.get("texts", [])
    yield from sample.get("choices", [])
    if "tokens" in sample:
        yield " ".join(sample["tokens"])
    if isinstance(sample.get("answer"), str):
        yield sample["answer"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A SentencePiece-style BPE tokenizer (NFKC, '▁' word prefix) with XLM-R's special tokens and templates."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # As in XLM-R, splitting on whitespace before adding '▁' keeps the space out of token offsets (span QA);
    # punctuation split off words ("rot." -> "▁rot", ".") keeps word-level tasks aligned.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), initial_alphabet=ALPHABET, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tok


def save_text_model(out: Path, texts: Iterable[str]) -> Path:
    """Train the tokenizer and write it with a tiny random-init XLM-R config to ``out`` (loads offline)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(texts),
        model_max_length=MAX_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    tokenizer.save_pretrained(out)
    # transformers 5 writes "TokenizersBackend", a name 4.x cannot resolve; both load "PreTrainedTokenizerFast".
    config_file = out / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**tok_config, "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_TOKENS + 2,  # XLM-R positions start after the padding index
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.save_pretrained(out)
    return out


def save_vision(path: Path) -> Path:
    """The timm vision tower spec: ``timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)``."""
    path.write_text(json.dumps(VISION, indent=2) + "\n")
    return path
