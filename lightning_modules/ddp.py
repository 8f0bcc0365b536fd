"""DDP that cannot hang silently: evaluation without DDP's collectives, a collective timeout, SIGTERM that ends.

Three failure modes of Lightning's ``DDPStrategy`` this strategy removes (issue 14):

- **A rank without evaluation data.** Inside ``fit``, Lightning runs ``validation_step`` through the DDP wrapper,
  whose forward broadcasts the module buffers from rank 0. A rank with no dev shard runs no step, so rank 0
  waits in that broadcast forever while the other rank waits in the metric gather. Evaluation needs no
  gradient synchronisation, so ``validation_step`` / ``test_step`` call the LightningModule directly; the only
  collectives of an evaluation are then the metric syncs at the epoch end, which every rank runs in the same
  order (``TransferModule._compute_all``).
- **Any other hang.** Every collective times out after ``timeout`` (``--collective_timeout``, default
  ``DEFAULT_TIMEOUT_S``); the rank that times out prints which stage it was in and its rank, and a failing
  launcher rank (rank 0) kills the ranks it launched.
- **SIGTERM.** Python runs signal handlers only between bytecodes, so a rank blocked in a collective never runs
  Lightning's handler (which itself broadcasts). A watcher thread reads the signal from a wakeup fd written by
  the C-level handler, forwards SIGTERM to the ranks this process launched and ends the process after
  ``SIGTERM_GRACE_S`` if the main thread has not ended it by then.

``register_ddp_strategies`` puts the strategy under Lightning's names ``ddp``, ``ddp_spawn`` and ``ddp_fork``,
so ``--trainer.strategy ddp`` and ``strategy: auto`` on several devices use it, with the module's DDP options
(``TransferModule.ddp_options``) as constructor arguments.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities.types import STEP_OUTPUT

DEFAULT_TIMEOUT_S = 900
"""Long enough for the slowest legitimate wait (a rank scoring a larger evaluation shard, rank 0 writing a
large-model checkpoint), short enough that a hung job frees its GPUs within the quarter hour."""
SIGTERM_GRACE_S = 10.0
START_METHODS = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork"}


class TransferDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose evaluation steps bypass the DDP wrapper, whose collectives time out and whose ranks
    all end on SIGTERM (see the module docstring)."""

    def validation_step(self, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        with self.precision_plugin.val_step_context():
            return self.lightning_module.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        with self.precision_plugin.test_step_context():
            return self.lightning_module.test_step(*args, **kwargs)

    def setup_environment(self) -> None:
        super().setup_environment()
        install_sigterm_watcher(self)

    def on_exception(self, exception: BaseException) -> None:
        super().on_exception(exception)
        if is_collective_timeout(exception):
            print(timeout_message(self, exception), file=sys.stderr, flush=True)
        # Lightning ends the launched ranks only on KeyboardInterrupt; after any other failure of this rank they
        # could wait for it forever (a rank outside a collective never sees the broken connection)
        if self.launcher is not None and hasattr(self.launcher, "procs"):
            self.launcher.kill(signal.SIGKILL)


def is_collective_timeout(exception: BaseException) -> bool:
    """True for the errors gloo and NCCL raise when a collective waited longer than the process-group timeout."""
    text = str(exception).lower()
    return "timed out" in text or ("timeout" in text and any(word in text for word in ("gloo", "nccl", "collective")))


def timeout_message(strategy: DDPStrategy, exception: BaseException) -> str:
    trainer = strategy.lightning_module.trainer if strategy.lightning_module is not None else None
    stage = getattr(getattr(trainer, "state", None), "stage", None)
    stage = getattr(stage, "value", stage) or "setup"
    seconds = f"{strategy._timeout.total_seconds():g}" if strategy._timeout else "?"
    return (
        f"mmstilts: rank {strategy.global_rank} of {strategy.world_size}: a collective operation timed out after "
        f"{seconds} s during stage '{stage}' ({type(exception).__name__}). Another rank stopped, is stuck, or "
        "ran a different collective. Raise --collective_timeout if a rank legitimately waits longer."
    )


def install_sigterm_watcher(strategy: DDPStrategy, grace_s: float = SIGTERM_GRACE_S) -> None:
    """Start (once per process) the thread that ends this rank, and the ranks it launched, on SIGTERM."""
    if hasattr(install_sigterm_watcher, "_installed") or threading.current_thread() is not threading.main_thread():
        return
    read_end, write_end = socket.socketpair()
    write_end.setblocking(False)
    signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        # the C-level handler writes the wakeup fd only for signals with a Python handler; Lightning installs
        # its own for the run stage, this one covers the time before it
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    threading.Thread(target=_watch, args=(read_end, strategy, grace_s), daemon=True, name="mmstilts-sigterm").start()
    install_sigterm_watcher._installed = (read_end, write_end)  # type: ignore[attr-defined]  # keeps the fd open


def _watch(read_end: socket.socket, strategy: DDPStrategy, grace_s: float) -> None:
    while True:
        data = read_end.recv(64)
        if signal.SIGTERM.value not in data:
            continue
        print(
            f"mmstilts: rank {strategy.global_rank}: SIGTERM, ending this rank and the ranks it launched "
            f"(at the latest in {grace_s:g} s)",
            file=sys.stderr,
            flush=True,
        )
        launcher = strategy.launcher
        if launcher is not None and hasattr(launcher, "procs"):
            launcher.kill(signal.SIGTERM)
        time.sleep(grace_s)  # the main thread may still end the run cleanly (Lightning's SIGTERM handling)
        if launcher is not None and hasattr(launcher, "procs"):
            launcher.kill(signal.SIGKILL)
        os._exit(128 + signal.SIGTERM.value)


def register_ddp_strategies(timeout_s: float = DEFAULT_TIMEOUT_S, **ddp_options: Any) -> None:
    """Register ``TransferDDPStrategy`` under Lightning's DDP names with the given collective timeout and
    ``DistributedDataParallel`` options (``TransferModule.ddp_options``): the registry passes them to the strategy's
    constructor, Lightning's public way to set them (``DDPStrategy(find_unused_parameters=...)``)."""
    if timeout_s <= 0:
        raise ValueError(f"collective_timeout={timeout_s}: must be > 0 seconds (default {DEFAULT_TIMEOUT_S})")
    for name, start_method in START_METHODS.items():
        StrategyRegistry.register(
            name,
            TransferDDPStrategy,
            description=f"mmstilts DDP ({start_method}), collective timeout {timeout_s:g} s",
            override=True,
            start_method=start_method,
            timeout=timedelta(seconds=timeout_s),
            **ddp_options,
        )
