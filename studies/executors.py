"""Where the runs go: ``local`` (one after another), ``local-gpus`` (one run per visible GPU at once) and
``slurm`` (one submitit job per run, ``afterok`` dependencies). All respect the plan's dependencies: a run
starts only once the run it starts from has finished."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from studies.plan import Run, plan, run_args, run_env, train_command
from studies.runs import (
    LOCK_NAME,
    apply_retention,
    duration,
    execute,
    finished,
    kill_live,
    log_tail,
    parent_weights,
    read_state,
    redo_parents,
    write_state,
)
from studies.spec import Study, StudyError


def visible_gpus(gpus: str | None) -> list[str]:
    """The device ids ``local-gpus`` hands out: ``--gpus N`` (ids 0..N-1, also fake ones on a CPU box),
    ``--gpus 2,3`` (these ids), else ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees."""
    if gpus:
        return [str(i) for i in range(int(gpus))] if gpus.isdigit() else [g for g in gpus.split(",") if g]
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    ids = [str(i) for i in range(torch.cuda.device_count())]
    if not ids:
        raise StudyError(
            "--executor local-gpus: no GPU is visible; use --executor local, or --gpus N to hand out N "
            "device ids anyway."
        )
    return ids


def skipped_failed(study: Study, runs: Sequence[Run], retry_failed: bool) -> set[str]:
    """Runs whose last attempt failed: not rerun without ``--retry-failed`` (a failing run would fail again)."""
    if retry_failed:
        return set()
    return {r.name for r in runs if finished(r) is None and read_state(study, r).get("state") == "failed"}


def run_local(
    study: Study,
    runs: Sequence[Run],
    devices: Sequence[str | None] = (None,),
    heartbeat: float = 60.0,
    keep_going: bool = False,
    retry_failed: bool = False,
    on_done: Callable[[], object] | None = None,
) -> list[str]:
    """Run every unfinished run, as many at once as ``devices`` allow, parents before children.

    ``devices`` = ``[None]`` is the plain local executor (one run at a time, the environment unchanged);
    GPU ids give each run ``resources.<phase>.gpus`` of them through ``CUDA_VISIBLE_DEVICES``. After a
    failure nothing new starts (unless ``keep_going``: then only the failed run's dependents are dropped);
    running runs finish. ``on_done`` is called after each finished run (retention). Returns the failures.
    """
    t0 = time.monotonic()
    head = {r.name: f"[{i}/{len(runs)}] {r.name} ({r.phase})" for i, r in enumerate(runs, 1)}
    failed_before = skipped_failed(study, runs, retry_failed)
    redo = redo_parents(runs)
    head.update({r.name: f"[redo] {r.name} ({r.phase})" for r in redo})
    pending = redo + [r for r in _unfinished(runs, failed_before, head) if r not in redo]
    free, failures, dropped = list(devices), [], set(failed_before)
    running: dict[Future, tuple[Run, list[str | None]]] = {}
    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        try:
            while pending or running:
                for run in list(pending):
                    if run.parent is not None and run.parent.name in dropped:
                        pending.remove(run)
                        dropped.add(run.name)
                        print(f"{head[run.name]}: not run ({run.parent.name} failed)", flush=True)
                        continue
                    if (failures and not keep_going) or (run.parent is not None and finished(run.parent) is None):
                        continue
                    need = 1 if devices[0] is None else min(len(devices), study.resources_for(run.phase).gpus)
                    if len(free) >= need:
                        taken, free = free[:need], free[need:]
                        running[_start(pool, study, run, taken, heartbeat, head[run.name], t0)] = (run, taken)
                        pending.remove(run)
                if not running:
                    break  # what is left waits on a parent that will not finish in this invocation
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    run, taken = running.pop(future)
                    free += taken
                    if _outcome(future, run, head[run.name], failures):
                        if on_done is not None:
                            on_done()
                    else:
                        dropped.add(run.name)
        except BaseException:
            kill_live()
            raise
    if failed_before:
        failures.append(
            f"{len(failed_before)} run(s) failed in an earlier attempt and were not rerun: "
            f"{', '.join(sorted(failed_before))}. `study.py status` shows their logs; fix the cause, "
            "then add --retry-failed."
        )
    return failures


def _unfinished(runs: Sequence[Run], failed_before: set[str], head: dict[str, str]) -> list[Run]:
    """The runs still to do, printing a line for each one skipped (finished, or failed in an earlier attempt)."""
    pending = []
    for run in runs:
        if finished(run) is not None:
            print(f"{head[run.name]}: skip (finished)", flush=True)
        elif run.name in failed_before:
            print(f"{head[run.name]}: skip (failed earlier; --retry-failed reruns it)", flush=True)
        else:
            pending.append(run)
    return pending


def _start(
    pool: ThreadPoolExecutor, study: Study, run: Run, devices: list[str | None], heartbeat: float, head: str, t0: float
) -> Future:
    """Start one run in a pool thread; GPU ids (local-gpus) go to it through ``CUDA_VISIBLE_DEVICES``."""
    env = {} if devices[0] is None else {"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))}
    where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if env else ""
    print(f"{head}: start{where} (study elapsed {duration(time.monotonic() - t0)})", flush=True)
    return pool.submit(execute, study, run, heartbeat, env)


def _outcome(future: Future, run: Run, head: str, failures: list[str]) -> bool:
    """Report a finished run's outcome; a failure's message goes to ``failures``."""
    try:
        took = future.result()
    except StudyError as err:
        failures.append(str(err))
        print(f"{head}: FAILED (log: {run.run_dir / 'train.log'})", flush=True)
        return False
    print(f"{head}: done in {duration(took)}", flush=True)
    return True


# ----------------------------------------------------------------------------------------------- SLURM


def _job_parameters(study: Study, run: Run, dependency: Sequence[str], cluster: str) -> dict[str, Any]:
    """submitit parameters of one run's job: the phase's resources, ``afterok`` on the parent's job."""
    res = study.resources_for(run.phase)
    params: dict[str, Any] = dict(
        name=f"{study.name}/{run.name}",
        timeout_min=res.time_min,
        nodes=res.nodes,
        gpus_per_node=res.gpus,
        tasks_per_node=max(1, res.gpus),
        cpus_per_task=res.cpus_per_gpu,
    )
    if res.mem_gb is not None:
        params["mem_gb"] = res.mem_gb
    if cluster == "slurm":
        extra = dict(res.sbatch)
        if dependency:  # a failed parent cancels the child instead of leaving it pending forever
            extra["dependency"] = "afterok:" + ":".join(dependency)
            extra.setdefault("kill-on-invalid-dep", "yes")
        if res.partition:
            params["slurm_partition"] = res.partition
        params["slurm_additional_parameters"] = extra
    return params


def job_args(study: Study, run: Run) -> list[str]:
    """train.py arguments a job adds: one process per GPU and node, as Lightning's SLURM environment expects."""
    res = study.resources_for(run.phase)
    return ["--trainer.devices", str(max(1, res.gpus)), "--trainer.num_nodes", str(res.nodes)] if res.gpus else []


def _store_diagnostics(study: Study, run: Run) -> None:
    """The run's checkpoint diagnostics (``analysis.enabled``); a failure is printed, never fails the job."""
    from studies import diagnostics

    try:
        diagnostics.ensure(study, plan(study), only=[run.name])
    except Exception as err:  # `study.py analyze` retries while the checkpoint exists
        print(f"diagnostics of {run.name} failed ({type(err).__name__}: {err})", flush=True)


def run_in_job(study: Study, run: Run, cwd: str, heartbeat: float = 600.0) -> str:
    """The function a submitit job runs, once per task, in the submitting directory ``cwd``. Rank 0 locks and
    prepares the run folder and trains; the other ranks (DDP over SLURM tasks) start the same command once
    rank 0 holds the lock (Lightning's SLURM environment makes them one DDP group)."""
    import submitit

    os.chdir(cwd)
    rank = submitit.JobEnvironment().global_rank
    if rank == 0:
        execute(study, run, heartbeat, extra_args=job_args(study, run))
        _store_diagnostics(study, run)  # before any retention may delete its checkpoint
        apply_retention(study, plan(study))  # its parent's checkpoints may be needed by nobody now
        return run.name
    job = os.environ.get("SLURM_JOB_ID", "")
    lock = run.run_dir / LOCK_NAME
    deadline = time.monotonic() + 600
    while not (lock.is_file() and f"SLURM job {job}" in lock.read_text()):
        if time.monotonic() > deadline:
            raise StudyError(f"rank {rank} of {run.name}: rank 0 did not lock {run.run_dir} within 10 minutes")
        time.sleep(2)
    if finished(run) is not None:  # rank 0 found it finished by an earlier job
        return run.name
    cmd = train_command(study) + run_args(study, run, parent_weights(run)) + job_args(study, run)
    with (run.run_dir / f"train.rank{rank}.log").open("w") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=run_env(study, run), check=True)
    return run.name


def queued_slurm_jobs() -> set[str] | None:
    """Ids of this user's jobs still in the SLURM queue, or None where ``squeue`` is not available."""
    if shutil.which("squeue") is None:
        return None
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-u", getpass.getuser()], capture_output=True, text=True)
    return set(out.stdout.split()) if out.returncode == 0 else None


def submit_slurm(
    study: Study,
    runs: Sequence[Run],
    cluster: str = "slurm",
    folder: Path | None = None,
    retry_failed: bool = False,
    wait_jobs: bool = False,
) -> list[str]:
    """Submit one submitit job per unfinished run; a child depends ``afterok`` on its parent's job.

    A run whose job from an earlier submission is still queued or running is not submitted again (its
    children depend on that job). ``cluster="local"``/``"debug"`` (submitit's executors on this machine)
    have no dependencies, so there a child is submitted once its parent's job has finished. Returns failure
    messages (when waiting).
    """
    import submitit

    absent = [c for c in ("sbatch", "srun") if shutil.which(c) is None] if cluster == "slurm" else []
    if absent:  # submitit's job script starts every task with srun; without it submitit fails with a trace
        raise StudyError(
            f"--executor slurm: no {' and no '.join(f'`{c}`' for c in absent)} on PATH (submitit "
            "submits with sbatch and starts each task with srun). Submit from a machine of the SLURM "
            "cluster (its login node, with the SLURM client tools), or try the jobs here with --cluster "
            "local."
        )
    folder = folder or study.out_dir / ".slurm"
    failed_before = skipped_failed(study, runs, retry_failed)
    in_queue = queued_slurm_jobs() if cluster == "slurm" else None
    redo = redo_parents(runs)
    runs = [*redo, *(r for r in runs if r not in redo)]
    job_ids: dict[str, str] = {}
    jobs: dict[str, Any] = {}
    failures: list[str] = []
    for run in runs:
        if finished(run) is not None or run.name in failed_before:
            continue
        earlier = read_state(study, run).get("job")
        if in_queue is not None and earlier in in_queue:
            job_ids[run.name] = earlier
            print(f"{run.name}: already in the queue as job {earlier}", flush=True)
            continue
        parent_id = job_ids.get(run.parent.name) if run.parent is not None else None
        if parent_id is not None and cluster != "slurm":  # no dependencies there: wait for the parent's job
            if not _wait_job(jobs[run.parent.name], run.parent, failures):
                continue
            parent_id = None
        if run.parent is not None and parent_id is None and finished(run.parent) is None:
            continue  # its parent failed earlier or did not run: nothing to start from
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        executor.update_parameters(**_job_parameters(study, run, [parent_id] if parent_id else [], cluster))
        job = executor.submit(run_in_job, study, run, os.getcwd())
        jobs[run.name], job_ids[run.name] = job, str(job.job_id)
        write_state(study, run, "queued", job=str(job.job_id), job_log=str(folder / str(job.job_id)))
        after = f" after {parent_id}" if parent_id else ""
        print(f"submitted {run.name} ({run.phase}): job {job.job_id}{after}", flush=True)
    if wait_jobs or cluster != "slurm":
        for name, job in jobs.items():
            _wait_job(job, next(r for r in runs if r.name == name), failures)
    return failures


def _wait_job(job: Any, run: Run, failures: list[str]) -> bool:
    """Wait for a job; a failure is recorded with the run's log tail (or the job's error)."""
    try:
        job.result()
        return True
    except Exception as err:  # submitit raises FailedJobError / UncompletedJobError with the job's stderr
        if not any(run.name in f for f in failures):
            tail = log_tail(run.run_dir / "train.log") or str(err)[-2000:]
            why = (str(err).strip().splitlines() or [""])[0][:300]  # the job's own error, when train.log looks fine
            failures.append(
                f"Run {run.name} (job {job.job_id}) failed: {type(err).__name__}: {why}\n"
                f"  log: {run.run_dir / 'train.log'}\n{tail}"
            )
        return False
