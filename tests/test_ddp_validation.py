"""DDP validation inside ``fit`` (issue 14.1): no hang when a rank has no dev shard, scores equal single-process,
a collective timeout that names the stage and the rank, and SIGTERM that ends every rank.

Each 2-process run is a subprocess in its own session under a hard timeout that kills the process group
(conftest's ``run_process_group``); the DDP runs with a Trainer are this file executed as a script.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import kill_process_group, run_process_group, start_process_group, subprocess_env

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
TIMEOUT_S = 420
MAX_STEPS, STEPS_PER_EPOCH = 4, 2
# dev sets with 1, 2 and 3 shards (4 samples per shard): on 2 ranks, rank 1 has no "en" dev shard
DEV_SIZES = {"en": 3, "de": 7, "es": 11}


# -- the script side (one process per rank) -----------------------------------------------------------------


def make_datamodule(args: dict[str, Any]) -> Any:
    from conftest import vision_config

    from datamodules.datamodule import TaskData, TransferDataModule

    task = TaskData("demo_ve", args["ve"], train_split="train", val_split="dev", val_langs=args["val_langs"])
    return TransferDataModule(
        [task],
        tokenizer=args["text_model"],
        image_config=vision_config(args["vision_model"]),
        batch_size=2,
        eval_batch_size=2,
        num_workers=0,
        steps_per_epoch=STEPS_PER_EPOCH,
        seed=1,
        shuffle_buffer=4,
        pin_memory=False,
    )


def make_model(args: dict[str, Any], dm: Any) -> Any:
    from lightning_modules.module import CoreConfig, TransferModule

    return TransferModule(
        CoreConfig(args["text_model"], args["vision_model"], pretrained=False),
        tasks=dm.task_info,
        evaluation=dm.evaluation,
        max_steps=MAX_STEPS,
        optimizer={"lr": 1e-3},
    )


def make_trainer(devices: int, callbacks: list, root: str) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=MAX_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )


def run_script(mode: str, args: dict[str, Any]) -> None:
    """fit on 2 ranks; ``hang``/``sigterm``: rank 1 stops answering at the first validation epoch end."""
    import lightning.pytorch as pl
    import torch

    from lightning_modules.ddp import register_ddp_strategies

    out = Path(args["out"])

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
            (out / f"pid{trainer.global_rank}").write_text(str(os.getpid()))
            if mode != "fit" and trainer.global_rank == 1:
                time.sleep(3600)  # a rank that stops answering: rank 0 waits in the next collective

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            (out / f"val{trainer.global_rank}.json").write_text(json.dumps(metrics))

    dm = make_datamodule(args)
    model = make_model(args, dm)
    register_ddp_strategies(timeout_s=args.get("timeout_s", 300), **model.ddp_options())
    trainer = make_trainer(2, [Record()], str(out))
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), out / "model.pt")


# -- the tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict[str, str]) -> dict[str, str]:
    from conftest import write_task_shards

    out = tmp_path_factory.mktemp("ddpval")
    write_task_shards(
        out / "ve",
        "demo_ve",
        {
            ("train", "en"): 10,
            ("test", "en"): 3,
            ("test", "de"): 5,
            **{("dev", lang): n for lang, n in DEV_SIZES.items()},
        },
    )
    return {"ve": str(out / "ve"), **tiny_model}


def script(mode: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, str(HERE), mode, json.dumps(args)]


@pytest.mark.slow
@pytest.mark.parametrize("val_langs", [["en"], list(DEV_SIZES)], ids=["one_set_rank1_empty", "three_sets"])
def test_fit_validates_with_a_rank_without_dev_shards(
    world: dict[str, str], tmp_path: Path, val_langs: list[str]
) -> None:
    """Dev sets of 1, 2 and 3 shards on 2 ranks (rank 1 has no English dev shard; with English only it validates
    on nothing at all): fit ends, both ranks log the same scores, equal to a single-process validate."""
    import torch

    args = {**world, "out": str(tmp_path), "val_langs": val_langs}
    done = run_process_group(script("fit", args), REPO, subprocess_env(), TIMEOUT_S, "DDP fit")
    assert done.returncode == 0, done.stdout[-4000:]
    ddp = [json.loads((tmp_path / f"val{r}.json").read_text()) for r in range(2)]
    assert ddp[0] == ddp[1], "ranks logged different validation scores"
    assert {k: v for k, v in ddp[0].items() if k.endswith("/count")} == {
        f"val/demo_ve/{lang}/count": float(DEV_SIZES[lang]) for lang in val_langs
    }

    dm = make_datamodule(args)
    model = make_model(args, dm)
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    trainer = make_trainer(1, [], str(tmp_path / "single"))
    trainer.validate(model, datamodule=dm, verbose=False)
    single = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert single == pytest.approx(ddp[0], abs=1e-6)


@pytest.mark.slow
def test_demo_fit_on_two_ranks_with_one_dev_shard_ends(world: dict[str, str], tmp_path: Path) -> None:
    """The command of issue 14 (demo configs, 2 ranks, ``--trainer.strategy ddp``, validation every 10 of 20 steps,
    test after fit) on demo_ve shards whose English dev set is one shard, as in the full demo world (the small
    test world has two): rank 1 validates on nothing."""
    from shards.manifest import select_shards

    assert len(select_shards(world["ve"], "dev", lang="en")) == 1
    tasks = f"[{{name: demo_ve, shards: {world['ve']}, train_split: train, val_split: dev, test_split: test}}]"
    configs = [f"--config={REPO / c}" for c in ("configs/base.yaml", "configs/demo/base.yaml")]
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "fit",
        *configs,
        "--name=demo-target-ve",
        "--phase=target",
        f"--model.core.text_model={world['text_model']}",
        f"--model.core.vision_model={world['vision_model']}",
        f"--data.tasks={tasks}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=20",
        "--data.steps_per_epoch=10",
        "--test_after_fit=true",
        "--data.num_workers=0",
        "--data.batch_size=4",
    ]
    done = run_process_group(cmd, tmp_path, subprocess_env(), TIMEOUT_S, "2-rank demo fit")
    assert done.returncode == 0, done.stdout[-4000:]
    root = tmp_path / "runs" / "demo-target-ve"
    assert (root / "checkpoints" / "best.ckpt").is_file()
    data = json.loads((root / "results.json").read_text())
    assert {r["lang"] for r in data["rows"] if r["metric"] == "acc"} >= {"en", "de"}
    assert data["protocol"]["selected_on"]["monitor"] == "val/demo_ve/en/acc"


@pytest.mark.slow
def test_collective_timeout_names_stage_and_rank(world: dict[str, str], tmp_path: Path) -> None:
    args = {**world, "out": str(tmp_path), "timeout_s": 60, "val_langs": list(DEV_SIZES)}
    done = run_process_group(script("hang", args), REPO, subprocess_env(), TIMEOUT_S, "collective timeout run")
    assert done.returncode != 0
    assert "rank 0 of 2: a collective operation timed out after 60 s during stage 'validate'" in done.stdout, (
        done.stdout[-4000:]
    )


@pytest.mark.slow
def test_sigterm_ends_every_rank(world: dict[str, str], tmp_path: Path) -> None:
    """Rank 0 blocked in a collective (rank 1 silent) still ends on SIGTERM, and takes rank 1 with it."""
    args = {**world, "out": str(tmp_path), "timeout_s": 3600, "val_langs": list(DEV_SIZES)}
    proc = start_process_group(script("sigterm", args), REPO, subprocess_env())
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not all((tmp_path / f"pid{r}").exists() for r in range(2)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            time.sleep(1)
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
        time.sleep(3)  # rank 0 is now waiting in a collective that rank 1 never joins
        proc.send_signal(signal.SIGTERM)  # rank 0 only, as a scheduler or `kill` would
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_process_group(proc)
    assert proc.returncode != 0
    assert "SIGTERM, ending this rank" in out, out[-4000:]
    for _ in range(30):  # rank 1 got SIGTERM from rank 0 and ends within the grace period
        if not _alive(pids[1]):
            break
        time.sleep(1)
    assert not _alive(pids[1]), "rank 1 survived SIGTERM of rank 0"


def test_ddp_names_resolve_to_the_project_strategy_with_its_timeout() -> None:
    import lightning.pytorch as pl

    from lightning_modules.ddp import TransferDDPStrategy, is_collective_timeout, register_ddp_strategies

    register_ddp_strategies(timeout_s=123)
    for name in ("ddp", "ddp_spawn"):
        strategy = pl.Trainer(accelerator="cpu", devices=2, strategy=name, logger=False).strategy
        assert isinstance(strategy, TransferDDPStrategy) and strategy._timeout.total_seconds() == 123
    with pytest.raises(ValueError, match=r"collective_timeout=0: must be > 0 seconds"):
        register_ddp_strategies(timeout_s=0)
    assert is_collective_timeout(RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 60000ms"))
    assert not is_collective_timeout(ValueError("data.batch_size=-2: out of range"))
    register_ddp_strategies()  # back to the default for the rest of the session


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) counts as ended
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    run_script(sys.argv[1], json.loads(sys.argv[2]))
