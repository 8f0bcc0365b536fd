"""Scale-out without code changes: shards behind URLs (file://, pipe:, fsspec), a 2-process torchrun launch
on the CPU, and SLURM detection through Lightning's SLURMEnvironment (docs/performance.md)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from conftest import free_port, run_process_group, vision_config, write_task_shards

from datamodules.datamodule import TaskData, TransferDataModule
from shards.manifest import load_manifest, sample_count, select_shards

REPO = Path(__file__).resolve().parents[1]
SIZES = {("train", "en"): 6, ("test", "en"): 5, ("test", "de"): 3}


@pytest.fixture(scope="module")
def ve_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "demo_ve"
    write_task_shards(out, "demo_ve", SIZES, max_per_shard=2)
    return out


def data_module(shards: str, tiny_model: dict[str, str], workers: int = 0) -> TransferDataModule:
    return TransferDataModule(
        [TaskData("demo_ve", shards=shards, train_split="train", test_split="test")],
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        batch_size=4,
        eval_batch_size=2,
        num_workers=workers,
        steps_per_epoch=2,
        pin_memory=False,
    )


def check_reads_exactly(dm: TransferDataModule, directory: Path) -> None:
    batch = next(iter(dm.train_dataloader()))
    assert batch["task"] == "demo_ve" and batch["pixel_values"].shape[0] == 4
    counts = {
        lang: sum(len(b["keys"]) for b in loader)
        for (_, lang), loader in zip(dm.eval_names("test"), dm.test_dataloader())
    }
    assert counts == {lang: sample_count(load_manifest(directory), "test", lang=lang) for lang in ("en", "de")}


def test_file_url(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    url = ve_dir.as_uri()  # file:///...
    shards = select_shards(load_manifest(url), "train")
    assert shards == [f"{url}/{s.name}" for s in select_shards(ve_dir, "train")]
    check_reads_exactly(data_module(url, tiny_model), ve_dir)


@pytest.mark.parametrize("template", ["pipe:cat {dir}", "pipe:cat {dir}/{{}}"])
def test_pipe_command(ve_dir: Path, tiny_model: dict[str, str], template: str) -> None:
    url = template.format(dir=shlex.quote(str(ve_dir)))
    assert select_shards(url, "test", lang="de")[0] == f"pipe:cat {shlex.quote(str(ve_dir))}/test-de-000000.tar"
    check_reads_exactly(data_module(url, tiny_model, workers=1), ve_dir)


def test_fsspec_url(ve_dir: Path, tiny_model: dict[str, str]) -> None:
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in ve_dir.iterdir():
        fs.pipe(f"/ve/{path.name}", path.read_bytes())
    check_reads_exactly(data_module("memory://ve", tiny_model), ve_dir)  # in-process: memory fs is per process


def test_unreadable_url_names_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No shard manifest at pipe:cat .*nowhere/manifest.json"):
        load_manifest(f"pipe:cat {tmp_path}/nowhere/{{}} 2>/dev/null")
    with pytest.raises(ValueError, match=r"data.tasks\[demo_ve\].shards: No shard manifest"):
        data_module(f"file://{tmp_path}/nowhere", {"text_model": "", "vision_model": ""})


def test_missing_fsspec_names_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)  # import fsspec now raises ImportError
    with pytest.raises(ImportError, match="pip install fsspec s3fs"):
        load_manifest("s3://bucket/xvnli")


# -- launching: torchrun and SLURM -----------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(demo_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    # shards through a file:// URL: the object-storage code path, end to end on both ranks
    tasks = f"[{{name: demo_ve, shards: '{(demo_dir / 'demo_ve').as_uri()}', train_split: train, val_split: dev}}]"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "train.py",
        "fit",
        "--config",
        "configs/base.yaml",
        "--config",
        "configs/demo/base.yaml",
        f"--data.tasks={tasks}",
        f"--model.core.text_model={demo_dir / 'text_model'}",
        f"--model.core.vision_model={demo_dir / 'vision.json'}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=2",
        "--data.steps_per_epoch=2",
        "--data.num_workers=0",
        "--data.eval_num_workers=0",
        "--trainer.logger=[{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs}}]",
        f"--trainer.default_root_dir={root}",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = run_process_group(cmd, REPO, env, 180, "torchrun launch")
    output = done.stdout
    assert done.returncode == 0, output[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output, output[-4000:]
    assert json.loads((root / "finished.json").read_text())["subcommand"] == "fit"
    assert "file://" in next(root.glob("config-fit-*.yaml")).read_text()


def test_slurm_environment_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    slurm = {
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NAME": "mmstilts",
        "SLURM_JOB_ID": "7",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "node1",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    trainer = Trainer(
        accelerator="cpu", devices=1, num_nodes=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.main_address == "node1" and trainer.global_rank == 0
