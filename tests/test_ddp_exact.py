"""DDP on a CPU (2 processes, gloo): uneven shards in a multi-task fit finish with equal step counts;
evaluation sets of 1, 2 and 3 shards score every sample exactly once with the single-process metric;
spawned loader workers still read disjoint shards (rank and world size come from the trainer).

The 2-process run is this file executed as a script, in its own process group under a hard timeout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import run_process_group, subprocess_env

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
TIMEOUT_S = 420
MAX_STEPS, STEPS_PER_EPOCH = 6, 3  # seed 2 draws both tasks in 6 steps
# demo_ve test sets with 1, 2 and 3 shards (4 samples per shard): on 2 ranks, rank 1 gets no "en" shard.
TEST_SIZES = {"en": 3, "de": 7, "es": 11}


def build_world(out: Path) -> dict[str, str]:
    from conftest import write_task_shards

    write_task_shards(
        out / "ve",
        "demo_ve",
        {("train", "en"): 10, ("dev", "en"): 5, **{("test", lang): n for lang, n in TEST_SIZES.items()}},
    )
    write_task_shards(out / "nli", "demo_nli", {("train", "en"): 20})  # 5 shards: 3 + 2 per rank
    return {"ve": str(out / "ve"), "nli": str(out / "nli")}


def make_datamodule(args: dict[str, Any]) -> Any:
    from conftest import vision_config

    from datamodules.datamodule import TaskData, TransferDataModule

    tasks = [
        TaskData("demo_ve", args["ve"], train_split="train", val_split="dev", test_split="test"),
        TaskData("demo_nli", args["nli"], train_split="train"),
    ]
    return TransferDataModule(
        tasks,
        tokenizer=args["text_model"],
        image_config=vision_config(args["vision_model"]),
        batch_size=2,
        eval_batch_size=2,
        num_workers=0,
        steps_per_epoch=STEPS_PER_EPOCH,
        sampler="uniform",
        seed=2,
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


def trainer(devices: int, callbacks: list, root: str, model: Any = None) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    strategy = DDPStrategy(**model.ddp_options()) if devices > 1 else "auto"
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=MAX_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks,
    )


def run_ddp(args: dict[str, Any]) -> None:
    """The 2-process run (executed once per rank): fit, test, write what each rank saw."""
    import lightning.pytorch as pl
    import torch

    class Record(pl.Callback):
        def __init__(self) -> None:
            self.tasks: list[str] = []
            self.test_keys: dict[int, list[str]] = {}

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.tasks.append(batch["task"])

        def on_test_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
        ) -> None:
            self.test_keys.setdefault(dataloader_idx, []).extend(batch["keys"])

    record = Record()
    dm = make_datamodule(args)
    model = make_model(args, dm)
    tr = trainer(2, [record], args["out"], model)
    tr.fit(model, datamodule=dm)
    tr.test(model, datamodule=dm, verbose=False)
    names = [f"{task}/{lang}" for task, lang in dm.eval_names("test")]
    result = {
        "rank": tr.global_rank,
        "world_size": tr.world_size,
        "global_step": tr.global_step,
        "tasks": record.tasks,
        "test_keys": {names[i]: keys for i, keys in record.test_keys.items()},
        "rows": model.test_rows,
    }
    Path(args["out"], f"rank{tr.global_rank}.json").write_text(json.dumps(result))
    if tr.global_rank == 0:
        torch.save(model.state_dict(), Path(args["out"], "model.pt"))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: dict[str, str]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ddp")
    args = {**build_world(out), **tiny_model, "out": str(out)}
    cmd = [sys.executable, str(HERE), json.dumps(args)]
    done = run_process_group(cmd, REPO, subprocess_env(), TIMEOUT_S, "DDP run")
    assert done.returncode == 0, done.stdout[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"args": args, "ranks": ranks}


@pytest.mark.slow
def test_uneven_shards_multitask_equal_steps(ddp_run: dict[str, Any]) -> None:
    r0, r1 = ddp_run["ranks"]
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert r0["global_step"] == r1["global_step"] == MAX_STEPS
    assert r0["tasks"] == r1["tasks"], "ranks ran different heads in the same step"
    assert len(r0["tasks"]) == MAX_STEPS and set(r0["tasks"]) == {"demo_ve", "demo_nli"}


@pytest.mark.slow
def test_eval_every_sample_once(ddp_run: dict[str, Any]) -> None:
    from shards.manifest import select_shards

    r0, r1 = ddp_run["ranks"]
    for lang, n in TEST_SIZES.items():
        name = f"demo_ve/{lang}"
        k0, k1 = r0["test_keys"].get(name, []), r1["test_keys"].get(name, [])
        assert not set(k0) & set(k1), f"{name}: samples scored on both ranks"
        assert len(k0) + len(k1) == len(set(k0) | set(k1)) == n, f"{name}: {len(k0)} + {len(k1)} scored, {n} exist"
        assert len(select_shards(ddp_run["args"]["ve"], "test", lang=lang)) == {"en": 1, "de": 2, "es": 3}[lang]
    assert r0["test_keys"].get("demo_ve/en") and not r1["test_keys"].get("demo_ve/en")  # a rank with no shard
    counts = {(r["lang"]): r["value"] for r in r0["rows"] if r["metric"] == "count"}
    assert counts == {lang: float(n) for lang, n in TEST_SIZES.items()}
    assert r0["rows"] == r1["rows"], "ranks computed different metrics"


@pytest.mark.slow
def test_ddp_metric_equals_single_process(ddp_run: dict[str, Any], tmp_path: Path) -> None:
    import torch

    args = ddp_run["args"]
    dm = make_datamodule(args)
    model = make_model(args, dm)
    model.load_state_dict(torch.load(Path(args["out"], "model.pt"), weights_only=True))
    trainer(1, [], str(tmp_path)).test(model, datamodule=dm, verbose=False)
    single = {(r["lang"], r["metric"]): r["value"] for r in model.test_rows}
    ddp = {(r["lang"], r["metric"]): r["value"] for r in ddp_run["ranks"][0]["rows"]}
    assert single == pytest.approx(ddp, abs=1e-6)


@pytest.mark.slow
def test_spawned_workers_read_disjoint_shards(
    tmp_path: Path, tiny_model: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning sets WORLD_SIZE but not RANK; spawned workers see neither the trainer nor a process group."""
    from conftest import write_task_shards

    from datamodules.datamodule import TaskData, TransferDataModule

    write_task_shards(tmp_path / "nli", "demo_nli", {("test", "en"): 22})  # 6 shards: 3 per rank, 2 workers each
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    dm = TransferDataModule(
        [TaskData("demo_nli", str(tmp_path / "nli"), test_split="test")],
        tokenizer=tiny_model["text_model"],
        eval_batch_size=2,
        eval_num_workers=2,
        multiprocessing_context="spawn",
        pin_memory=False,
        persistent_workers=False,
    )
    seen = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, accumulate_grad_batches=1)
        (loader,) = dm.test_dataloader()
        assert loader.multiprocessing_context.get_start_method() == "spawn"
        seen.append([k for batch in loader for k in batch["keys"]])
    assert not set(seen[0]) & set(seen[1]), "both ranks read the same shards"
    assert len(seen[0]) + len(seen[1]) == 22 and len(set(seen[0]) | set(seen[1])) == 22


if __name__ == "__main__":
    run_ddp(json.loads(sys.argv[1]))
