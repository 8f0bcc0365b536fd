"""A 2-process DDP training step of ``TransferModule`` in bf16 autocast, both ranks on one device.

Started by ``benchmarks.gpu.ddp_step`` through torchrun (``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m benchmarks.ddp_step ...``). On a one-GPU machine both ranks share ``cuda:0``: NCCL
may refuse two ranks on one card ("Duplicate GPU detected"), then the caller reruns with gloo. What it
exercises: DDP as the project configures it (``gradient_as_bucket_view``), bf16 autocast on the device,
gradient all-reduce, and that both ranks hold identical weights after the optimizer steps (each rank sees
different batches, so only a working all-reduce keeps them equal).

Rank 0 writes ``--out`` (JSON): backend, device, step ms (median), samples/s over both ranks, the weight
checksums of both ranks and whether they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from benchmarks.step import _median, build_module, make_batches


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def checksum(module: torch.nn.Module) -> float:
    """Sum of every parameter in float64: equal on all ranks iff the all-reduce kept them in step."""
    return float(sum(p.detach().double().sum() for p in module.parameters()).item())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("nccl", "gloo"), required=True)
    parser.add_argument("--text", required=True, help="text config directory (benchmarks.gpu.write_text_config)")
    parser.add_argument("--vision", required=True, help="timm model name or vision.json")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")  # both ranks: one card
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend)  # env:// from torchrun
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        result = run_steps(args, device, rank, world)
    finally:
        dist.destroy_process_group()
    if rank == 0:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_steps(args: argparse.Namespace, device: torch.device, rank: int, world: int) -> dict[str, Any]:
    steps = args.warmup + args.timed
    shapes = {"batch": args.batch, "tokens": args.tokens, "image": args.image}
    batches = make_batches(shapes, steps, seed=rank)  # different data per rank, as a DistributedSampler gives
    module = build_module(args.text, args.vision, steps).to(device)
    module.train()
    ddp = DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True
    )
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    marks, losses = [], []
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        marks.append(_sync(device))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = ddp(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    marks.append(_sync(device))
    step_s = _median([b - a for a, b in zip(marks[args.warmup :], marks[args.warmup + 1 :])])
    sums = [None] * world
    dist.all_gather_object(sums, checksum(module))
    return {
        "backend": args.backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world,
        "ranks_on_one_device": True,
        "batch_per_rank": args.batch,
        "step_ms": step_s * 1e3,
        "samples_s": world * args.batch / step_s,
        "loss_first_last": [losses[0], losses[-1]],
        "weight_checksums": sums,
        "weights_equal": len(set(sums)) == 1,
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else None,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    main()
