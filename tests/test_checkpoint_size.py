"""A finished fit keeps its checkpoints weights-only (issue 26): no optimizer state, much smaller, still good for
``init_from`` and for re-evaluation, which scores every item exactly as the test after fit did; resuming it is
refused with what to do instead."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import train
from lightning_modules import checkpoints

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]
FAST = ["--data.num_workers=0", "--data.eval_num_workers=0", "--trainer.logger=false"]
RESUME_ONLY = ("optimizer_states", "lr_schedulers", "loops", "TransferDataModule")


def train_args(subcommand: str, *overrides: str) -> list[str]:
    return [subcommand, *(a for config in CONFIGS for a in ("--config", str(config))), *FAST, *overrides]


@pytest.fixture
def finished_run(demo_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, int]]:
    """A target fit with its test after fit; the sizes its checkpoints had before they were rewritten."""
    root, before = demo_cwd / "runs" / "target", {}
    rewrite = checkpoints.keep_weights_only

    def measured(paths: list[str]) -> list[str]:
        before.update({p: os.path.getsize(p) for p in paths if p})
        return rewrite(paths)

    monkeypatch.setattr(train, "keep_weights_only", measured)
    train.cli_main(
        train_args(
            "fit",
            "--trainer.max_steps=4",
            "--data.steps_per_epoch=2",
            "--test_after_fit=true",
            f"--trainer.default_root_dir={root}",
        )
    )
    return root, before


def test_finished_fit_keeps_the_weights_alone(finished_run: tuple[Path, dict[str, int]]) -> None:
    root, before = finished_run
    finished = json.loads((root / "finished.json").read_text())
    assert finished["weights_only"] is True
    assert set(before) == {finished["best_ckpt"], finished["final_ckpt"]} and len(before) == 2, before
    for path, size in before.items():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["weights_only"] is True and not set(RESUME_ONLY) & set(ckpt), (path, sorted(ckpt))
        assert {"state_dict", "hyper_parameters", "lineage", "protocol", "global_step", "epoch"} <= set(ckpt)
        assert os.path.getsize(path) < 0.5 * size, (path, os.path.getsize(path), size)
        assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert torch.load(finished["final_ckpt"], weights_only=True)["protocol"]["final"] is True


def test_reevaluating_a_weights_only_checkpoint_scores_the_same(finished_run: tuple[Path, dict[str, int]]) -> None:
    root, _ = finished_run
    after_fit = (root / "outcomes.jsonl").read_bytes()
    protocol_after_fit = json.loads((root / "results.json").read_text())["protocol"]
    (root / "outcomes.jsonl").unlink()
    best = json.loads((root / "finished.json").read_text())["best_ckpt"]
    train.cli_main(train_args("test", f"--ckpt_path={best}", f"--trainer.default_root_dir={root}"))
    assert (root / "outcomes.jsonl").read_bytes() == after_fit
    protocol = json.loads((root / "results.json").read_text())["protocol"]
    assert protocol == protocol_after_fit and protocol["selected_on"]["langs"] == ["en"], protocol


def test_init_from_a_weights_only_checkpoint(finished_run: tuple[Path, dict[str, int]], demo_cwd: Path) -> None:
    root, _ = finished_run
    final = json.loads((root / "finished.json").read_text())["final_ckpt"]
    child = demo_cwd / "runs" / "child"
    train.cli_main(
        train_args(
            "fit",
            "--trainer.max_steps=1",
            "--data.steps_per_epoch=1",
            f"--trainer.default_root_dir={child}",
            f"--model.init_from={final}",
        )
    )
    parent = torch.load(child / "checkpoints" / "last.ckpt", weights_only=True)["lineage"]["parent"]
    assert (parent["path"], parent["step"], parent["final"]) == (final, 4, True), parent


def test_resuming_a_finished_run_is_refused(
    finished_run: tuple[Path, dict[str, int]], capsys: pytest.CaptureFixture
) -> None:
    root, _ = finished_run
    shutil.copy(root / "finished.json", root / "finished.before")
    code = train.main(
        train_args(
            "fit",
            "--ckpt_path=last",
            "--trainer.max_steps=6",
            "--data.steps_per_epoch=2",
            f"--trainer.default_root_dir={root}",
        )
    )
    err = capsys.readouterr().err
    assert code == 1 and "kept the weights only (no optimizer state): nothing to resume" in err, err
    assert "--model.init_from=" in err and "last.ckpt" in err
    assert (root / "finished.json").read_text() == (root / "finished.before").read_text()
