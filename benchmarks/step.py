"""Step benchmark: training steps/s of ``TransferModule`` under the Lightning Trainer against a plain PyTorch
loop over the same model (same init), the same batches and the same precision (fp32) on the CPU.

The plain loop does what the Trainer does for a step and nothing more: forward, backward, gradient
clipping at 1.0 (base.yaml), AdamW step, zero_grad, scheduler step. The Trainer runs as configured for real
runs (CSV logger, LearningRateMonitor, per-step loss logging), minus checkpointing and validation. Rounds
alternate plain / Lightning; the figure is the median step (wall and CPU time) of each side: a step on a
shared machine now and then waits for the CPU, and the median ignores those. Target: Lightning / plain ≤ 1.05.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from transformers import XLMRobertaConfig

from benchmarks.common import BENCH_TASK, table
from contracts.catalogue import NLI_LABELS
from lightning_modules.module import CoreConfig, TransferModule

# A small single-stream core: big enough that a CPU step is model compute (~0.1-0.2 s), small enough to be quick.
SHAPES = {
    "full": {
        "hidden": 192,
        "layers": 4,
        "heads": 4,
        "vit_dim": 192,
        "vit_depth": 3,
        "image": 112,
        "batch": 8,
        "tokens": 32,
    },
    "quick": {
        "hidden": 64,
        "layers": 2,
        "heads": 2,
        "vit_dim": 64,
        "vit_depth": 2,
        "image": 64,
        "batch": 4,
        "tokens": 16,
    },
}
VOCAB = 1000


def write_model(root: Path, s: dict[str, int]) -> tuple[str, str]:
    """A local XLM-R config directory and a vision.json (random init: nothing downloads)."""
    text = root / "text"
    XLMRobertaConfig(
        vocab_size=VOCAB,
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        intermediate_size=4 * s["hidden"],
        max_position_embeddings=258,
        type_vocab_size=1,
    ).save_pretrained(text)
    vision = root / "vision.json"
    kwargs = {"img_size": s["image"], "embed_dim": s["vit_dim"], "depth": s["vit_depth"], "num_heads": s["heads"]}
    vision.write_text(json.dumps({"model_name": "vit_tiny_patch16_224", "kwargs": kwargs}))
    return str(text), str(vision)


def make_batches(s: dict[str, int], n: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    b, t = s["batch"], s["tokens"]
    return [
        {
            "task": BENCH_TASK,
            "lang": ["en"] * b,
            "keys": [f"k{i}-{j}" for j in range(b)],
            "input_ids": torch.randint(5, VOCAB, (b, t), generator=g),
            "attention_mask": torch.ones(b, t, dtype=torch.long),
            "labels": torch.randint(0, 3, (b,), generator=g),
            "pixel_values": torch.randn(b, 3, s["image"], s["image"], generator=g),
        }
        for i in range(n)
    ]


def build_module(text: str, vision: str, steps: int, **core: Any) -> TransferModule:
    """``core``: further ``CoreConfig`` fields (``compile``)."""
    torch.manual_seed(0)
    return TransferModule(
        CoreConfig(text, vision, pretrained=False, text_kwargs={"add_pooling_layer": False}, **core),
        tasks={BENCH_TASK: {"labels": list(NLI_LABELS), "train": True, "loss_weight": 1.0}},
        optimizer={"lr": 1e-4},
        max_steps=steps,
    )


class Batches:
    """An iterable of in-memory batches (a bare list would be taken for a list of loaders)."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchList(pl.LightningDataModule):
    """The same in-memory batches for the Trainer; no evaluation sets."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> Batches:
        return Batches(self.batches)

    def eval_names(self, stage: str) -> list[tuple[str, str]]:
        return []


def _now() -> tuple[float, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def _per_step(marks: list[tuple[float, float]], warmup: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each step after ``warmup``, from the marks taken at every step start (+ the end)."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks[warmup:], marks[warmup + 1 :])]


class StepTimer(pl.Callback):
    """Marks the start of every batch and the end of the last: a step's time includes all the Trainer does."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.marks.append(_now())

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.marks.append(_now())


def lightning_steps(
    module: TransferModule,
    batches: list[dict[str, Any]],
    warmup: int,
    root: Path,
    accelerator: str = "cpu",
    precision: str = "32-true",
) -> list[tuple[float, float]]:
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=len(batches),
        max_epochs=1,
        gradient_clip_val=1.0,
        logger=CSVLogger(root, name="csv"),
        callbacks=[timer, LearningRateMonitor("step")],
        log_every_n_steps=50,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=root,
    )
    trainer.fit(module, datamodule=BatchList(batches))
    return _per_step(timer.marks[:-1], warmup)  # the last mark (train end) also holds the epoch-end work


def plain_steps(module: TransferModule, batches: list[dict[str, Any]], warmup: int) -> list[tuple[float, float]]:
    module.train()
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    marks = []
    for batch in batches:
        marks.append(_now())
        loss = module(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    return _per_step(marks, warmup)


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def run(quick: bool = False) -> dict[str, Any]:
    shapes = SHAPES["quick" if quick else "full"]
    warmup, timed, rounds = (1, 4, 1) if quick else (2, 14, 3)
    batches = make_batches(shapes, warmup + timed + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier on a shared machine; both sides get the same
    plain, light = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            text, vision = write_model(Path(tmp), shapes)
            for r in range(rounds):
                plain += plain_steps(build_module(text, vision, len(batches)), batches, warmup)
                light += lightning_steps(build_module(text, vision, len(batches)), batches, warmup, Path(tmp) / f"r{r}")
    finally:
        torch.set_num_threads(threads)
    fig = {
        name: {"wall_ms": _median([w for w, _ in steps]) * 1e3, "cpu_ms": _median([c for _, c in steps]) * 1e3}
        for name, steps in (("plain", plain), ("lightning", light))
    }
    ratio_wall = fig["lightning"]["wall_ms"] / fig["plain"]["wall_ms"]
    ratio_cpu = fig["lightning"]["cpu_ms"] / fig["plain"]["cpu_ms"]
    print(
        table(
            f"Step: TransferModule, fp32 on CPU (1 thread), batch {shapes['batch']} x {shapes['tokens']} tokens + "
            f"{shapes['image']}px image, hidden {shapes['hidden']} x {shapes['layers']} layers; median of "
            f"{len(plain)} steps per side ({rounds} alternating rounds)",
            ["loop", "wall ms / step", "steps/s", "CPU ms / step"],
            [
                ["plain PyTorch", fig["plain"]["wall_ms"], 1e3 / fig["plain"]["wall_ms"], fig["plain"]["cpu_ms"]],
                [
                    "Lightning Trainer",
                    fig["lightning"]["wall_ms"],
                    1e3 / fig["lightning"]["wall_ms"],
                    fig["lightning"]["cpu_ms"],
                ],
            ],
        )
    )
    print(f"Lightning / plain time per step: wall {ratio_wall:.3f}, CPU {ratio_cpu:.3f} (target <= 1.05)")
    return {**fig, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu, "shapes": shapes, "steps_per_side": len(plain)}


if __name__ == "__main__":
    run()
