"""A callback for the start-up benchmark: at a run's first training batch, write the time and the process's CPU
seconds so far (since the fork, for a warm worker's child), and end the process.

``--trainer.callbacks+=benchmarks.first_step.FirstStep`` with ``MMSTILTS_FIRST_STEP_FILE`` set: what a run costs
before its first step (imports, config parsing, data and model set-up, the logger) is that time minus the moment
the process (or the warm worker's child) was asked for.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class FirstStep(Callback):
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        path = os.environ.get("MMSTILTS_FIRST_STEP_FILE")
        if path:
            Path(path).write_text(f"{time.time()!r} {time.process_time()!r}")
        os._exit(0)  # the measurement is taken: no training, no teardown
