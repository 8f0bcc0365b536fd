"""Resume: a fit SIGKILLed mid-epoch and run again with ``--ckpt_path last`` continues its global step,
optimizer, scheduler, sampler position and W&B run, without duplicated results. Shard order differs between
epochs and is reproducible with the same seed, with persistent workers on and off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import run_process_group, subprocess_env, write_task_shards

REPO = Path(__file__).resolve().parents[1]
KILL_ENV = "MMSTILTS_TEST_KILL_AT"
MAX_STEPS, STEPS_PER_EPOCH, CKPT_EVERY, KILL_AT = 12, 6, 2, 9  # killed in epoch 2; last checkpoint at step 8
TIMEOUT_S = 300


class RecordAndKill(pl.Callback):
    """Appends what a run starts from to ``<root>/starts.jsonl``; SIGKILLs itself at step $MMSTILTS_TEST_KILL_AT."""

    def __init__(self) -> None:
        self.first = True

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self.first:
            return
        self.first = False
        optimizer, scheduler = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
        adam_steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
        position = trainer.datamodule._train_loader.batch_index - 1  # this batch's index in the task sequence
        start = {
            "global_step": trainer.global_step,
            "scheduler_epoch": scheduler.last_epoch,
            "adam_step": max(adam_steps, default=0.0),
            "batch_index": position,
            "task": batch["task"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        with open(Path(trainer.default_root_dir, "starts.jsonl"), "a") as f:
            f.write(json.dumps(start) + "\n")

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if str(trainer.global_step) == os.environ.get(KILL_ENV):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally blocks: as an OOM killer or preemption


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_process_group([sys.executable, "train.py", "fit", *args], REPO, env, TIMEOUT_S, "train.py")


def run_config(tmp_path: Path, tiny_model: dict[str, str]) -> Path:
    write_task_shards(
        tmp_path / "ve", "demo_ve", {("train", "en"): 16, ("dev", "en"): 4, ("test", "en"): 4, ("test", "de"): 5}
    )
    best = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "monitor": "val/selection",
            "mode": "max",
            "save_top_k": 1,
            "save_last": True,
            "filename": "best",
            "auto_insert_metric_name": False,
        },
    }
    steps = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": CKPT_EVERY, "save_top_k": 0, "save_last": True},
    }
    config = {
        "model": {"core": tiny_model},
        "data": {
            "tasks": [
                {
                    "name": "demo_ve",
                    "shards": str(tmp_path / "ve"),
                    "train_split": "train",
                    "val_split": "dev",
                    "test_split": "test",
                }
            ],
            "batch_size": 2,
            "num_workers": 1,
        },
        "trainer": {
            "max_steps": MAX_STEPS,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [best, steps, {"class_path": "test_resume.RecordAndKill"}],
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    config = run_config(tmp_path, tiny_model)
    args = [
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/demo/base.yaml",
        "--config",
        str(config),
        "--data.steps_per_epoch",
        str(STEPS_PER_EPOCH),
        "--test_after_fit",
        "true",
    ]
    env = {**subprocess_env(), "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    root = tmp_path / "run"

    killed = run(args, {**env, KILL_ENV: str(KILL_AT)})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert not (root / "finished.json").exists() and not (root / "results.json").exists()
    wandb_id = (root / "wandb_id.txt").read_text()
    last = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == KILL_AT - KILL_AT % CKPT_EVERY  # the last step checkpoint, mid-epoch

    resumed = run([*args, "--ckpt_path", "last"], env)
    assert resumed.returncode == 0, resumed.stdout[-3000:]

    first, second = [json.loads(line) for line in (root / "starts.jsonl").read_text().splitlines()]
    assert first == {**first, "global_step": 0, "scheduler_epoch": 0, "adam_step": 0.0, "batch_index": 0}
    step = last["global_step"]
    assert second["global_step"] == second["scheduler_epoch"] == second["batch_index"] == step, second
    assert second["adam_step"] == float(step), "optimizer state was not restored"
    assert second["lr"] == pytest.approx(last["optimizer_states"][0]["param_groups"][0]["lr"])
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == MAX_STEPS

    assert (root / "wandb_id.txt").read_text() == wandb_id
    runs = sorted(p.name for p in (root / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(name.endswith(wandb_id) for name in runs), runs
    assert sorted(p.name for p in root.glob("config-fit-*.yaml")) == ["config-fit-0.yaml", "config-fit-1.yaml"]

    rows = json.loads((root / "results.json").read_text())["rows"]
    keys = [(r["task"], r["lang"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated result rows"
    assert json.loads((root / "test_counts.json").read_text()) == {"demo_ve/en": 4, "demo_ve/de": 5}
    assert json.loads((root / "finished.json").read_text())["subcommand"] == "fit"


def shard_order(tmp_path: Path, tiny_model: dict[str, str], seed: int, persistent: bool) -> list[list[str]]:
    from datamodules.datamodule import TaskData, TransferDataModule

    dm = TransferDataModule(
        [TaskData("demo_nli", str(tmp_path / "nli"), train_split="train")],
        tokenizer=tiny_model["text_model"],
        batch_size=4,
        num_workers=1,
        steps_per_epoch=4,
        shuffle_buffer=4,
        seed=seed,
        pin_memory=False,
        persistent_workers=persistent,
    )
    loader = dm.train_dataloader()
    return [[k for batch in loader for k in batch["keys"]] for _epoch in range(2)]


def test_shard_order_per_epoch(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    write_task_shards(tmp_path / "nli", "demo_nli", {("train", "en"): 24})  # 6 shards of 4
    orders = {persistent: shard_order(tmp_path, tiny_model, 0, persistent) for persistent in (True, False)}
    for epochs in orders.values():
        assert epochs[0] != epochs[1], "both epochs read the shards in the same order"
    assert orders[True] == orders[False] == shard_order(tmp_path, tiny_model, 0, True), "not reproducible"
    assert shard_order(tmp_path, tiny_model, 1, False) != orders[True], "the seed does not change the order"
