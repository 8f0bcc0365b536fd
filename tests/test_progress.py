"""Progress output: one line per epoch when the bar is off, and the demo world's build bar."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightning_modules.progress import epoch_line


def test_epoch_line_reports_step_loss_and_selection() -> None:
    metrics = {"train/loss": torch.tensor(0.51234), "val/selection": torch.tensor(61.5)}
    line = epoch_line(2, 150, 450, metrics, 12.4)
    assert line == "epoch 2 | step 150/450 | loss 0.5123 | val/selection 61.5000 | 12 s"
    assert epoch_line(0, 5, -1, {"val/selection": torch.tensor(math.nan)}, 0.0) == "epoch 0 | step 5/? | 0 s"


def test_demo_build_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from shards.demo import build_demo

    build_demo(tmp_path / "d", size="small", progress=True)
    assert "demo world: 100%" in capsys.readouterr().err
