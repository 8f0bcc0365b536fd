"""Measure seconds per optimizer step for the cost plan: two short runs of a phase's first run, N and 2N steps.

Their wall-time difference is N steps of training: model building, data start-up and the final checkpoint cost
the same in both and cancel. No validation runs (the epoch is longer than 2N steps), nothing is tested.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence

from studies.plan import Run
from studies.runs import execute
from studies.spec import Study, StudyError


def probe_runs(study: Study, runs: Sequence[Run]) -> dict[str, Run]:
    """The first training run of each phase (test-only runs take no steps)."""
    first: dict[str, Run] = {}
    for run in runs:
        if run.subcommand == "fit":
            first.setdefault(run.phase, run)
    return first


def _short(study: Study, run: Run, steps: int) -> Run:
    """The run cut to ``steps`` steps, in ``<out>/.probe/<phase>-<steps>``, from scratch (no parent), untested
    (phase ``probe``)."""
    settings = (f"--trainer.max_steps={steps}", f"--data.steps_per_epoch={4 * steps}")
    return dataclasses.replace(
        run,
        name=f".probe/{run.phase}-{steps}",
        parent=None,
        phase="probe",
        run_dir=study.out_dir / ".probe" / f"{run.phase}-{steps}",
        overrides=(*run.overrides, *settings),
    )


def measure(study: Study, runs: Sequence[Run], steps: int = 20) -> dict[str, float]:
    """Seconds per step of each phase on this machine (``resources.<phase>.gpus`` as the run would use).

    Raises:
        StudyError: a probe run failed (its log is named), or the two timings make no sense.
    """
    if steps < 1:
        raise StudyError(f"--probe {steps}: give the number of steps of the shorter probe run (e.g. 20)")
    rates = {}
    for phase, run in probe_runs(study, runs).items():
        timings = []
        for n in (steps, 2 * steps):
            short = _short(study, run, n)
            shutil.rmtree(short.run_dir, ignore_errors=True)
            t0 = time.monotonic()
            execute(study, short, heartbeat=600)
            timings.append(time.monotonic() - t0)
        rate = (timings[1] - timings[0]) / steps
        if rate <= 0:
            raise StudyError(
                f"probe {phase}: {2 * steps} steps took no longer than {steps} ({timings}); "
                "probe with more steps (--probe N)"
            )
        rates[phase] = rate
        print(
            f"probe {phase}: {rate:.3f} s/step ({steps} vs {2 * steps} steps of {run.name}; "
            f"{study.out_dir / '.probe'})",
            flush=True,
        )
    return rates
