"""Shared test setup: no network, no W&B uploads, and one small demo world per test session."""

from __future__ import annotations

import os

# Set at import time, before any test imports transformers, huggingface_hub or wandb.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo world (``build_demo(size="small", seed=0)``), built once per session; treat it as read-only.

    Layout: ``<dir>/<task>/`` shard directories for every demo task, ``<dir>/text_model/`` (tokenizer +
    tiny XLM-R config), ``<dir>/vision.json``, ``<dir>/manifest.json`` (the index).
    """
    from shards.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"), size="small", seed=0)
