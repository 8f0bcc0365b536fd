"""Start-up: what a ``train.py`` process pays before it does anything, each figure beside its baseline measured in
the same run (the machine is shared: ratios, and CPU seconds beside wall seconds).

- import: ``import train`` now (torchmetrics lean, timm and transformers on use) vs the eager imports train.py had
  until 2026-12-08 (``MMSTILTS_LEAN_IMPORTS=0`` + ``import timm, transformers`` first); ``import torch`` is the floor.
- ``train.py --help`` and ``train.py fit --help``, the same two ways.
- per-run overhead: a demo target run (configs/demo) from the moment it is asked for to its first training step,
  as a fresh ``python train.py`` process (cold) and as a child of the study runner's warm worker
  (``studies/warm.py``: imports once, forks a run per child).
- ``--make-times demo test`` (opt-in, minutes): the wall time of ``make demo`` / ``make test`` on this machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import table

REPO = Path(__file__).resolve().parents[1]
EAGER = "import timm, transformers, runpy, sys; sys.argv = ['train.py', *sys.argv[1:]]; "
DEMO_RUN = [
    "fit",
    "--config",
    "configs/base.yaml",
    "--config",
    "configs/demo/base.yaml",
    "--config",
    "configs/demo/target_ve.yaml",
    "--trainer.callbacks+=benchmarks.first_step.FirstStep",
    "--seed_everything",
    "0",
    "--test_after_fit",
    "false",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra)
    return env


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one command run to its end in the repository."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env or _env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _pair(cmds: dict[str, tuple[list[str], dict[str, str]]], repeats: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds of each command, run in alternating rounds (both sides see the same load)."""
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, (cmd, env) in cmds.items():
            got[name].append(timed(cmd, env))
    return {
        name: {"wall_s": _median([w for w, _ in v]), "cpu_s": _median([c for _, c in v])} for name, v in got.items()
    }


def _demo_shards() -> Path:
    shards = REPO / "data" / "demo"
    if not (shards / "manifest.json").is_file():
        print(f"startup: building the demo world in {shards} (once; `make demo` does the same)", flush=True)
        subprocess.run([sys.executable, "-m", "shards", "build", "demo", "--out", str(shards)], cwd=REPO, check=True)
    return shards


def _first_step(tmp: Path, i: int, warm: bool) -> tuple[float, float]:
    """(wall s from asking for one demo run to its first training step, CPU s of its process until then)."""
    stamp = tmp / f"first{i}.txt"
    args = [*DEMO_RUN, "--trainer.default_root_dir", str(tmp / f"run{i}")]
    env = _env(MMSTILTS_FIRST_STEP_FILE=str(stamp))
    log = tmp / f"run{i}.log"
    log.touch()
    t0 = time.time()
    if warm:
        from studies import warm as warm_mod

        code = warm_mod.start(args, log, env).wait(600)
    else:
        with log.open("a") as out:
            code = subprocess.run(
                [sys.executable, "train.py", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
            ).returncode
    if code != 0 or not stamp.is_file():
        raise RuntimeError(f"demo run {'warm' if warm else 'cold'} failed (exit {code}): {log.read_text()[-2000:]}")
    at, cpu = map(float, stamp.read_text().split())
    return at - t0, cpu


def per_run(repeats: int) -> dict[str, Any]:
    _demo_shards()
    with tempfile.TemporaryDirectory() as tmp:
        first_warm = _first_step(Path(tmp), 0, warm=True)  # starts the warm worker (its imports) and one run
        cold, warm = [], []
        for i in range(repeats):
            cold.append(_first_step(Path(tmp), 2 * i + 1, warm=False))
            warm.append(_first_step(Path(tmp), 2 * i + 2, warm=True))
    return {
        "cold_s": _median([w for w, _ in cold]),
        "warm_s": _median([w for w, _ in warm]),
        "cold_cpu_s": _median([c for _, c in cold]),
        "warm_cpu_s": _median([c for _, c in warm]),
        "warm_first_s": first_warm[0],
        "cold_all": cold,
        "warm_all": warm,
    }


def make_times(targets: list[str]) -> dict[str, float]:
    out = {}
    for target in targets:
        t0 = time.perf_counter()
        subprocess.run(["make", target], cwd=REPO, check=True)
        out[target] = time.perf_counter() - t0
        print(f"make {target}: {out[target] / 60:.1f} min", flush=True)
    return out


def run(quick: bool = False, make_targets: list[str] | None = None) -> dict[str, Any]:
    repeats = 1 if quick else 3
    py = sys.executable
    eager_env = _env(MMSTILTS_LEAN_IMPORTS="0")
    imports = _pair(
        {
            "torch": ([py, "-c", "import torch"], _env()),
            "eager": ([py, "-c", "import timm, transformers, train"], eager_env),
            "lean": ([py, "-c", "import train"], _env()),
            "help_eager": ([py, "-c", EAGER + "runpy.run_path('train.py', run_name='__main__')", "--help"], eager_env),
            "help": ([py, "train.py", "--help"], _env()),
            "fit_help_eager": (
                [py, "-c", EAGER + "runpy.run_path('train.py', run_name='__main__')", "fit", "--help"],
                eager_env,
            ),
            "fit_help": ([py, "train.py", "fit", "--help"], _env()),
        },
        repeats,
    )
    runs = per_run(repeats)
    f = imports

    def row(name: str, now: str, before: str) -> list[Any]:
        return [
            name,
            f[now]["wall_s"],
            f[now]["cpu_s"],
            f[before]["wall_s"],
            f[before]["cpu_s"],
            f[now]["cpu_s"] / f[before]["cpu_s"],
            f[now]["cpu_s"] / f["torch"]["cpu_s"],
        ]

    print(
        table(
            f"Start-up: median of {repeats} alternating rounds; eager = train.py's imports before 2026-12-08 (timm, "
            "transformers, torchmetrics whole); floor = `import torch`",
            ["what", "wall s", "CPU s", "eager wall s", "eager CPU s", "CPU / eager", "CPU / floor"],
            [
                row("import train", "lean", "eager"),
                row("train.py --help", "help", "help_eager"),
                row("train.py fit --help", "fit_help", "fit_help_eager"),
                ["import torch (floor)", f["torch"]["wall_s"], f["torch"]["cpu_s"], "", "", "", 1.0],
            ],
        )
    )
    print(
        table(
            "Per-run overhead: a demo target run, asked for -> first training step (wall s; CPU s of its process; "
            "median of "
            f"{repeats}); warm = a child of the warm worker (studies/warm.py), its first run starting the worker",
            ["run", "wall s", "CPU s", "wall / cold", "CPU / cold"],
            [
                ["cold process (python train.py)", runs["cold_s"], runs["cold_cpu_s"], 1.0, 1.0],
                [
                    "warm worker child",
                    runs["warm_s"],
                    runs["warm_cpu_s"],
                    runs["warm_s"] / runs["cold_s"],
                    runs["warm_cpu_s"] / runs["cold_cpu_s"],
                ],
                [
                    "warm worker, first run (starts the worker)",
                    runs["warm_first_s"],
                    "",
                    runs["warm_first_s"] / runs["cold_s"],
                    "",
                ],
            ],
        )
    )
    out: dict[str, Any] = {
        "imports": imports,
        "per_run": runs,
        "repeats": repeats,
        "help_cpu_ratio": f["help"]["cpu_s"] / f["help_eager"]["cpu_s"],
        "warm_over_cold": runs["warm_s"] / runs["cold_s"],
        "warm_over_cold_cpu": runs["warm_cpu_s"] / runs["cold_cpu_s"],
    }
    if make_targets:
        out["make"] = make_times(make_targets)
        print(
            table(
                "make targets on this machine (wall)", ["target", "min"], [[t, s / 60] for t, s in out["make"].items()]
            )
        )
    return out


if __name__ == "__main__":
    run()
