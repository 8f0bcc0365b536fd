"""Run every benchmark, print its table, write ``benchmarks/out/results.json``.

    python -m benchmarks.run_all [--quick] [--only loader step ...]

``--quick`` runs each benchmark small (a smoke run, ~1-2 minutes); its figures are not meaningful.
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

BENCHMARKS = ("loader", "memory", "step", "gpu")
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
    parser.add_argument("--out", type=Path, default=OUT / "results.json", help="where the JSON results go")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    print(f"machine: {results['machine']}")
    for name in args.only:
        module = __import__(f"benchmarks.{name}", fromlist=["run"])
        start = time.perf_counter()
        results[name] = module.run(quick=args.quick)
        results[name]["seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"\nresults: {args.out}")
    return results


if __name__ == "__main__":
    main()
