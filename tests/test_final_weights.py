"""A fit hands on the weights of its last optimizer step (issue 23.1).

``finished.json`` names the final checkpoint (``final_ckpt``, also ``last_ckpt``) and the selected one
(``best_ckpt``), with their global steps. Before: ``last.ckpt`` was written only when the monitored score improved,
so a validation cadence that does not divide ``max_steps`` or a score that stops improving left it steps behind, and
every later phase started from those older weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import checkpoint_config

from train import MMStiltsCLI, cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs/base.yaml", REPO / "configs/demo/base.yaml", REPO / "configs/demo/target_ve.yaml"]
FAST = ["--data.num_workers=0", "--data.eval_num_workers=0", "--trainer.logger=false"]


def run_train(*overrides: str, configs: list[Path] = CONFIGS) -> MMStiltsCLI:
    args = ["fit", *(a for config in configs for a in ("--config", str(config)))]
    return cli_main(args=[*args, *FAST, *overrides])


def assert_final_weights(root: Path, model: torch.nn.Module, max_steps: int) -> dict:
    """finished.json's final checkpoint holds step ``max_steps`` and exactly the model's weights after fit."""
    finished = json.loads((root / "finished.json").read_text())
    assert finished["final_step"] == max_steps and finished["last_ckpt"] == finished["final_ckpt"], finished
    ckpt = torch.load(finished["final_ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == max_steps, (finished["final_ckpt"], ckpt["global_step"])
    state = model.state_dict()
    assert ckpt["state_dict"].keys() == state.keys()
    differ = [k for k, v in state.items() if not torch.equal(ckpt["state_dict"][k], v.cpu())]
    assert not differ, f"{len(differ)} tensors of {finished['final_ckpt']} differ from the model's: {differ[:5]}"
    assert ckpt["protocol"]["final"] is True
    return finished


def test_validation_cadence_that_does_not_divide_max_steps(demo_cwd: Path) -> None:
    """Validation every 4 steps, 6 steps: the last validation is at step 4, the final weights at step 6."""
    root = demo_cwd / "runs" / "cadence"
    cli = run_train("--trainer.max_steps=6", "--data.steps_per_epoch=4", f"--trainer.default_root_dir={root}")
    finished = assert_final_weights(root, cli.model, 6)
    assert finished["best_ckpt"].endswith("best.ckpt") and finished["best_step"] == 4


def test_score_that_stops_improving_before_the_end(demo_cwd: Path) -> None:
    """The monitored score (a sample count) never improves after the first validation: best stays at step 2,
    the final checkpoint is still step 6; a child started from it records which file and step it started from."""
    root = demo_cwd / "runs" / "plateau"
    config = checkpoint_config(demo_cwd / "count.yaml", "val/demo_ve/en/count")
    cli = run_train(
        "--trainer.max_steps=6",
        "--data.steps_per_epoch=2",
        f"--trainer.default_root_dir={root}",
        configs=[*CONFIGS, config],
    )
    finished = assert_final_weights(root, cli.model, 6)
    assert finished["best_ckpt"].endswith("best.ckpt") and finished["best_step"] == 2
    assert finished["best_ckpt"] != finished["final_ckpt"]

    child = demo_cwd / "runs" / "child"
    run_train(
        "--trainer.max_steps=1",
        "--data.steps_per_epoch=1",
        f"--trainer.default_root_dir={child}",
        f"--model.init_from={finished['final_ckpt']}",
    )
    final = json.loads((child / "finished.json").read_text())["final_ckpt"]
    parent = torch.load(final, map_location="cpu", weights_only=True)["lineage"]["parent"]
    assert parent["path"] == finished["final_ckpt"]
    assert (parent["step"], parent["final"], parent["selected"]) == (6, True, False), parent


def test_target_run_records_final_and_best_after_its_test(demo_cwd: Path) -> None:
    """A target run tests its best checkpoint after fit; finished.json still names the final weights (before:
    ``last_ckpt: ""`` once the test had loaded the best checkpoint's callback state)."""
    root = demo_cwd / "runs" / "target"
    run_train(
        "--trainer.max_steps=5",
        "--data.steps_per_epoch=2",
        "--test_after_fit=true",
        f"--trainer.default_root_dir={root}",
    )
    finished = json.loads((root / "finished.json").read_text())
    assert finished["phase"] == "target" and finished["final_step"] == 5
    assert finished["final_ckpt"] == finished["last_ckpt"] and finished["final_ckpt"].endswith("last.ckpt")
    assert torch.load(finished["final_ckpt"], map_location="cpu", weights_only=True)["global_step"] == 5
    assert finished["best_step"] in (2, 4) and finished["best_ckpt"].endswith("best.ckpt")
    assert json.loads((root / "results.json").read_text())["protocol"]["checkpoint"] == finished["best_ckpt"]
