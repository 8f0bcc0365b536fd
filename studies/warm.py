"""Warm starts for a study's ``train.py`` runs: one process imports train.py's dependencies once (torch,
Lightning, transformers, timm: ~7 s of every run's start-up), and each run is a child forked from it.

Python's own ``forkserver`` does the work: the server is started on first use with ``train`` preloaded, and every
run is a ``Process`` whose child puts itself in a new session (the runner stops a run by signalling its process
group, as it does a ``subprocess``), writes to the run's ``train.log``, takes the run's environment and
arguments, and executes ``train.py`` as ``__main__`` — the same code path as ``python train.py ...``. Each run
stays a process of its own: nothing one run changes reaches another. When the runner dies, the server exits and
its children are killed (``PR_SET_PDEATHSIG``), so no run trains on alone.

A run whose code changed after the server imported it (an edit or a pull during a study) is started as a fresh
``python train.py`` instead, so no run mixes old modules with new files.

Used only for the default train command (``python train.py`` beside study.py) on Linux; ``MMSTILTS_WARM=0``
falls back to one fresh interpreter per run.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing as mp
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

TRAIN = Path(__file__).resolve().parents[1] / "train.py"
ENV = "MMSTILTS_WARM"
PRELOAD = [
    "train",
    "timm",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.data.data_collator",
    "transformers.modeling_utils",
    "transformers.modeling_layers",
    "transformers.activations",
    "wandb",
    "wandb.sdk.launch",
    "wandb.sdk.launch.inputs.internal",
    "matplotlib.pyplot",
]
"""Imported once by the server: train.py's own imports, and what every run imports later (read off
``python -X importtime`` of a demo run): timm and transformers' auto classes and model base classes (train.py
imports them on use, lightning_modules.lazy), W&B's run start imports its ``launch`` package and its inputs, the
reports import pyplot."""
PACKAGES = ("lightning_modules", "datamodules", "shards", "studies")
_LOCK = threading.Lock()
_CONTEXT: Any = None
_LOADED_AT = time.time()
"""When this module was imported: in the server's children, when the server imported the project's code."""


def _code_changed_since(moment: float) -> bool:
    """Whether train.py or a project module was written after ``moment`` (an edit or a pull during a study)."""
    files = [TRAIN, *(p for pkg in PACKAGES for p in (TRAIN.parent / pkg).rglob("*.py"))]
    return any(f.stat().st_mtime > moment for f in files if f.exists())


def usable(cmd: Sequence[str]) -> bool:
    """Whether ``cmd`` is the default ``[python, train.py]`` command and warm starts are on."""
    return (
        os.environ.get(ENV, "1") != "0"
        and sys.platform.startswith("linux")
        and len(cmd) >= 2
        and cmd[0] == sys.executable
        and Path(cmd[1]).resolve() == TRAIN
    )


def _context() -> Any:
    global _CONTEXT
    with _LOCK:
        if _CONTEXT is None:
            context = mp.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
            _CONTEXT = context
    return _CONTEXT


class WarmRun:
    """The ``subprocess.Popen`` surface the runner uses (``pid``, ``wait``) over a forked ``Process``."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid = process.pid

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("train.py", timeout)
        return self.process.exitcode


def start(args: Sequence[str], log: str | Path, env: Mapping[str, str]) -> WarmRun:
    """Fork one ``train.py`` run (``args`` after ``train.py``) appending to ``log``.

    The runner's lock on the run folder stays with the runner (the child cannot outlive it, see above).
    """
    process = _context().Process(target=_child, args=(list(args), str(log), dict(env), os.getcwd()), daemon=False)
    process.start()
    return WarmRun(process)


def _child(args: list[str], log: str, env: dict[str, str], cwd: str) -> None:
    """In the forked child: own session, die with the server, the run's log, environment, directory, argv."""
    os.setsid()
    mp.set_start_method(None, force=True)  # the platform's default, as in `python train.py` (not forkserver)
    mp.current_process().name = "MainProcess"  # a run's main process, as libraries check (transformers' collators)
    # The server hands each child the write end of its "runner alive" pipe; while a child holds it the server never
    # sees the runner die, and so never exits and takes its children with it. A run does not need it.
    server = getattr(forkserver, "_forkserver", None)
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    atexit._clear()  # the server's exit functions are the server's (W&B's media folder, shared by every child)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if env.get("OMP_NUM_THREADS", "").isdigit():  # the server's OpenMP read its own environment at import
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    if _code_changed_since(_LOADED_AT):  # the server holds the old code: this run starts afresh, all new
        os.execv(sys.executable, [sys.executable, str(TRAIN), *args])
    sys.argv = [str(TRAIN), *args]
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # what this run registered, as a fresh interpreter would at exit
        sys.stdout.flush()
        sys.stderr.flush()
