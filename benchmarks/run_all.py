"""Run every benchmark, print its table, write ``benchmarks/out/results.json``.

    python -m benchmarks.run_all [--quick] [--only loader step ...]
    python -m benchmarks.run_all --only gpu loader --gpu-run [--dry-run]     # = make bench-gpu
    python -m benchmarks.run_all --only startup [--make-times demo test]     # start-up row (+ make wall times)

``--quick`` runs each benchmark small (a smoke run, ~1-2 minutes); its figures are not meaningful.
``--gpu-run`` is the prepared plan for a GPU machine (one call, under 8 minutes on one H200 with 16 cores):
bf16 samples/s and MFU of the base and large configs ± torch.compile, a 2-process DDP step on the one GPU
(NCCL, else gloo), and loader scaling at 1/2/4/8 workers; one JSON, ``benchmarks/out/gpu_run.json``.
``--dry-run`` runs that plan tiny on the CPU (figures meaningless) to check it where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

BENCHMARKS = ("loader", "memory", "step", "gpu", "startup")
OUT = Path(__file__).resolve().parent / "out"


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke run; figures not meaningful")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--gpu-run", action="store_true", help="the prepared GPU plan (gpu and loader only)")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu-run: the same plan tiny, on the CPU")
    parser.add_argument(
        "--make-times",
        nargs="+",
        default=[],
        metavar="TARGET",
        help="startup: also time these make targets here, e.g. demo test (minutes; opt-in)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the JSON results go (default benchmarks/out/results.json, gpu_run.json)",
    )
    args = parser.parse_args(argv)
    if args.dry_run and not args.gpu_run:
        parser.error("--dry-run rehearses --gpu-run: give both")
    if args.gpu_run and not set(args.only) <= {"gpu", "loader"}:
        parser.error(f"--gpu-run runs gpu and loader only, not {sorted(set(args.only) - {'gpu', 'loader'})}")
    out = args.out or OUT / ("gpu_run.json" if args.gpu_run else "results.json")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "gpu_run": args.gpu_run,
        "dry_run": args.dry_run,
    }
    print(f"machine: {results['machine']}")
    start_all = time.perf_counter()
    for name in args.only:
        module = __import__(f"benchmarks.{name}", fromlist=["run"])
        start = time.perf_counter()
        if args.gpu_run:
            results[name] = module.gpu_run(dry_run=args.dry_run)
        elif name == "startup":
            results[name] = module.run(quick=args.quick, make_targets=args.make_times)
        else:
            results[name] = module.run(quick=args.quick)
        results[name]["seconds"] = time.perf_counter() - start
        out.parent.mkdir(parents=True, exist_ok=True)  # after every benchmark: a later crash keeps what ran
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    results["machine"]["load_average_end"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - start_all
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {out} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
