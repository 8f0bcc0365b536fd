"""Progress output: the demo world's build bar."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_demo_build_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from shards.demo import build_demo

    build_demo(tmp_path / "d", size="small", progress=True)
    assert "demo world: 100%" in capsys.readouterr().err
