"""Memory benchmark: RSS and private memory (USS) of the training loader's worker processes at the end of
each of 3 epochs (persistent workers, the shuffle buffer full after the first). Target: flat after epoch 1.

Linux only (reads ``/proc/<pid>/status`` and ``smaps_rollup``); elsewhere the figures are reported as missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import table
from benchmarks.loader import pipeline_loader, prepare

EPOCHS = 3
WORKERS = 2
# Smaller than the real 1000-2000 so the buffer is full within epoch 1 and later growth would be a leak.
SHUFFLE_BUFFER = 256


def _kib(path: Path, fields: tuple[str, ...]) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    return sum(int(line.split()[1]) for line in lines if line.split(":")[0] in fields)


def process_memory_mib(pid: int) -> tuple[float | None, float | None]:
    """(RSS, USS) in MiB: resident set, and the private pages only (copy-on-write growth shows here)."""
    rss = _kib(Path(f"/proc/{pid}/status"), ("VmRSS",))
    uss = _kib(Path(f"/proc/{pid}/smaps_rollup"), ("Private_Clean", "Private_Dirty"))
    return tuple(None if v is None else v / 1024 for v in (rss, uss))  # type: ignore[return-value]


def worker_pids(loader: Any) -> list[int]:
    """Worker pids of the (single-task) MultiTaskLoader's live DataLoader iterator."""
    (it,) = loader._iters.values()
    return [w.pid for w in it._workers]


def run(quick: bool = False, root: Path | None = None) -> dict[str, Any]:
    n_photos, steps = (96, 6) if quick else (480, 30)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = prepare(Path(root or tmp), n_photos)
            loader = pipeline_loader(data, WORKERS, steps, shuffle_buffer=SHUFFLE_BUFFER)
            for epoch in range(1, EPOCHS + 1):
                samples = sum(len(batch["input_ids"]) for batch in loader)
                mems = [process_memory_mib(pid) for pid in worker_pids(loader)]
                rss = [m[0] for m in mems if m[0] is not None]
                uss = [m[1] for m in mems if m[1] is not None]
                rows.append(
                    {
                        "epoch": epoch,
                        "samples": samples,
                        "rss_mib": sum(rss) if rss else None,
                        "uss_mib": sum(uss) if uss else None,
                    }
                )
            del loader
    finally:
        torch.set_num_threads(threads)

    def growth(key: str) -> float | None:
        first, last = rows[0][key], rows[-1][key]
        return None if first is None or last is None else last - first

    print(
        table(
            f"Memory: {WORKERS} persistent loader workers (summed), {steps} batches of 32 per epoch, shuffle buffer "
            f"{SHUFFLE_BUFFER} (full within epoch 1)",
            ["epoch", "samples", "worker RSS MiB", "worker USS (private) MiB"],
            [[r["epoch"], r["samples"], r["rss_mib"] or "n/a", r["uss_mib"] or "n/a"] for r in rows],
        )
    )
    rss_growth, uss_growth = growth("rss_mib"), growth("uss_mib")
    if rss_growth is not None:
        print(f"growth epoch 1 -> {EPOCHS}: RSS {rss_growth:+.1f} MiB, USS {uss_growth or 0.0:+.1f} MiB (target: flat)")
    return {"rows": rows, "rss_growth_mib": rss_growth, "uss_growth_mib": uss_growth, "workers": WORKERS}


if __name__ == "__main__":
    run()
