"""One run's folder: its state, its lock (one writer), running ``train.py`` in it, and checkpoint retention."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from studies import fingerprint, warm
from studies.plan import Run, run_args, run_env, train_command
from studies.spec import Study, StudyError

LOCK_NAME = "run.lock"
TIME_FILE = "study_time.json"  # studies.budgets reads it (not imported here: keep the runner light)
EPOCH_PREFIX = "epoch "  # lightning_modules.progress.EpochLine's lines (not imported: it would load Lightning)
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
LIVE: set[subprocess.Popen] = set()
"""Training processes this process started and that still run: killed (process group) on an interrupt."""
_LIVE_LOCK = threading.Lock()
STOPPING = threading.Event()
"""Set when the runner stops its training processes: their runs are interrupted, not failed."""


def finished(run: Run) -> dict[str, Any] | None:
    """The run's ``finished.json`` if it exists (the run completed), else None."""
    path = run.run_dir / "finished.json"
    return json.loads(path.read_text()) if path.is_file() else None


def parent_weights(run: Run) -> str | None:
    """The checkpoint a run starts from (``run.init_key`` of its parent's ``finished.json``: a start/intermediate
    run's final weights, or its best with ``hand_on: best``; a target run's best), resolved against cwd, then the
    parent's run dir. A parent without a selected checkpoint (no validation, NaN scores) hands on its final one."""
    parent = run.parent
    if parent is None:
        return None
    info = finished(parent)
    if info is None:
        raise StudyError(f"{parent.name} has not finished: no {parent.run_dir / 'finished.json'}")
    ckpt = info.get(run.init_key) or info.get("final_ckpt") or info.get("last_ckpt")
    if not ckpt:
        raise StudyError(f"{parent.run_dir / 'finished.json'} has no `{run.init_key}`: {info}")
    for candidate in (Path(ckpt), parent.run_dir / ckpt):
        if candidate.exists():
            return str(candidate)
    raise StudyError(
        f"{parent.run_dir / 'finished.json'} names {ckpt!r}, which does not exist (deleted by "
        "hand, or retention `keep` dropped it): rerun that run (delete its folder) first."
    )


def diverged_at(run: Run) -> str | None:
    """``step N, task T: loss nan`` when the run's training diverged (``diverged.json``, written by train.py's
    DivergenceGuard), else None."""
    path = run.run_dir / "diverged.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return f"step {info.get('step')}, task {info.get('task')}: loss {info.get('loss')}, lr {info.get('lr')}"


def weights_gone(run: Run) -> bool:
    """The run's parent finished, but the checkpoint it hands on is gone (retention deleted it, or by hand)."""
    if run.parent is None or finished(run.parent) is None:
        return False
    try:
        parent_weights(run)
    except StudyError:
        return True
    return False


def supersede(run: Run) -> Path:
    """Move a finished run's folder to ``<run dir>.superseded`` (replacing an older one), so that the runner makes
    the run again; returns where it went."""
    aside = run.run_dir.with_name(run.run_dir.name + ".superseded")
    shutil.rmtree(aside, ignore_errors=True)
    run.run_dir.rename(aside)
    return aside


def redo_parents(runs: Sequence[Run]) -> list[Run]:
    """The runs to redo before ``runs`` can start: a finished parent whose handed-on checkpoint is gone is moved
    aside to ``<run dir>.superseded`` and run again (its own parent too, when its checkpoint is gone as well).
    Prints each, with the reason. Returns them, farthest ancestor first."""
    redo: list[Run] = []
    todo = [r for r in runs if finished(r) is None]
    while todo:
        run = todo.pop(0)
        parent = run.parent
        if parent is None or parent in redo or not weights_gone(run):
            continue
        aside = supersede(parent)
        print(
            f"redo {parent.name}: the checkpoint {run.name} starts from was deleted (retention or by hand); "
            f"rerunning it (the finished run is kept in {aside})",
            flush=True,
        )
        redo.insert(0, parent)
        todo.append(parent)
    return redo


# ----------------------------------------------------------------------------------------------- state


def state_path(study: Study, run: Run) -> Path:
    """Where the runner records a run's queue state (outside the run folder, which a rerun cleans)."""
    return study.out_dir / ".state" / f"{run.name}.json"


def write_state(study: Study, run: Run, state: str, **info: Any) -> None:
    path = state_path(study, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    job = {k: v for k, v in read_state(study, run).items() if k in ("job", "job_log")}  # kept from submission
    payload = {
        "state": state,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "log": str(run.run_dir / "train.log"),
        **job,
        **{k: v for k, v in info.items() if v is not None},
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def read_state(study: Study, run: Run) -> dict[str, Any]:
    path = state_path(study, run)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def lock_holder(run: Run) -> str | None:
    """Who holds the run folder's lock (``pid … on host … since …``), or None when nobody does."""
    path = run.run_dir / LOCK_NAME
    if not path.is_file():
        return None
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def run_status(study: Study, run: Run) -> dict[str, Any]:
    """``done`` / ``running`` / ``queued`` / ``failed`` / ``interrupted`` / ``pending``, with its log path."""
    info = read_state(study, run)
    log = run.run_dir / "train.log"
    if finished(run) is not None:
        return {"state": "done", "log": str(log)}
    holder = lock_holder(run)
    if holder:
        return {"state": "running", "log": str(log), "by": holder}
    state = info.get("state", "pending")
    if state == "running":  # its process is gone without finishing: killed runner, node failure, scancel
        state = "interrupted"
    if state == "done":  # recorded as done, but its finished.json is gone: the folder was deleted or moved
        return {"state": "pending", "log": str(log), "why": f"{run.run_dir} was deleted after it finished"}
    out = {**info, "state": state, "log": str(log)}
    if state in ("failed", "interrupted"):
        out["tail"] = log_tail(Path(info.get("log", log)), 8)
    return out


def log_tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ----------------------------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive ``flock`` on ``<run dir>/run.lock``: two runners never write one run folder.

    The lock's file descriptor is passed to the training process, so the folder stays locked until that
    process is gone too, even when the runner itself was killed.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.run.run_dir.mkdir(parents=True, exist_ok=True)
        f = (self.run.run_dir / LOCK_NAME).open("a+")
        for attempt in range(5):  # `study.py status` takes the lock for an instant to see whether it is held
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    f.close()
                    raise
                if attempt < 4:
                    time.sleep(0.2)
                    continue
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise StudyError(
                    f"Run folder {self.run.run_dir} is being written by another study process "
                    f"({holder}). Two runners cannot write one run folder: wait for it (`study.py "
                    "status`) or stop that process first."
                ) from None
        f.seek(0)
        f.truncate()
        job = f" (SLURM job {os.environ['SLURM_JOB_ID']})" if os.environ.get("SLURM_JOB_ID") else ""
        f.write(f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}{job}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def _set_aside(run: Run) -> Path | None:
    """Move what an unfinished earlier attempt left (all but the lock) to ``<run dir>.incomplete``."""
    leftovers = [p for p in run.run_dir.iterdir() if p.name != LOCK_NAME]
    if not leftovers:
        return None
    aside = run.run_dir.with_name(run.run_dir.name + ".incomplete")
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    for path in leftovers:
        path.rename(aside / path.name)
    return aside


# ----------------------------------------------------------------------------------------------- process


def _die_with_parent(parent_pid: int) -> None:
    """In the child before exec: SIGKILL when the runner dies (Linux), so no orphan trains on."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os._exit(1)


def duration(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s" if minutes else f"{seconds:.1f}s"


def kill_live() -> None:
    """Stop every training process this process started (their whole process groups)."""
    STOPPING.set()
    with _LIVE_LOCK:
        procs = list(LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def execute(
    study: Study,
    run: Run,
    heartbeat: float = 60.0,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> float:
    """Run one training process in the run folder (locked), output to ``train.log``; returns its duration.

    Args:
        study: the study.
        run: the run.
        heartbeat: seconds between "still running" lines.
        env: extra environment (CUDA_VISIBLE_DEVICES of local-gpus).
        extra_args: extra train.py arguments (the SLURM executor's devices and nodes).

    Raises:
        StudyError: the folder is locked by another writer, or the run failed or did not write finished.json.
    """
    init_from = parent_weights(run)
    with RunLock(run) as lock:
        if finished(run) is not None:  # another runner finished it while we waited for our turn
            return 0.0
        aside = _set_aside(run)
        if aside:
            print(f"    earlier unfinished attempt moved to {aside}", flush=True)
        fingerprint.write(study, run)  # what made it: compared on every later invocation of the study
        cmd = train_command(study) + run_args(study, run, init_from) + list(extra_args)
        log = run.run_dir / "train.log"
        t0 = time.monotonic()
        write_state(
            study,
            run,
            "running",
            pid=os.getpid(),
            host=socket.gethostname(),
            job=os.environ.get("SLURM_JOB_ID"),
            devices=(env or {}).get("CUDA_VISIBLE_DEVICES"),
        )
        rc = _train(cmd, log, {**run_env(study, run), **(env or {})}, lock.file.fileno(), heartbeat, run.name, t0)
        if STOPPING.is_set() and finished(run) is None:
            write_state(study, run, "interrupted", rc=rc)
            raise StudyError(f"Run {run.name} interrupted; run the same command again to rerun it.")
        if rc != 0 or finished(run) is None:
            why = f"exited with status {rc}" if rc != 0 else "exited without writing finished.json"
            diverged = diverged_at(run)
            if diverged:
                why = f"diverged ({diverged}), exited with status {rc}"
            write_state(study, run, "failed", rc=rc, why=why)
            raise StudyError(
                f"Run {run.name} {why}.\n  run dir: {run.run_dir}\n  log: {log}\n"
                f"--- last lines of {log} ---\n{log_tail(log)}\n"
                "Fix the cause, then run the same command with --retry-failed."
            )
        write_state(study, run, "done", seconds=round(time.monotonic() - t0, 1))
        (run.run_dir / TIME_FILE).write_text(json.dumps({"seconds": time.monotonic() - t0}) + "\n")
    return time.monotonic() - t0


def _last_epoch_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(EPOCH_PREFIX)]
    return f": {lines[-1]}" if lines else ""


def _train(cmd: list[str], log: Path, env: dict[str, str], lock_fd: int, heartbeat: float, name: str, t0: float) -> int:
    with log.open("w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        runner = os.getpid()
        if warm.usable(cmd):  # train.py itself: a child forked from a process that imported it once
            proc: Any = warm.start(cmd[2:], log, env)
        else:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(lock_fd,),
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(runner),
            )
        with _LIVE_LOCK:
            LIVE.add(proc)
            stopping = STOPPING.is_set()  # kill_live() ran between the start and the add: its list missed us
        try:
            if stopping:
                os.killpg(proc.pid, signal.SIGTERM)
            while True:
                try:
                    return proc.wait(timeout=heartbeat)
                except subprocess.TimeoutExpired:
                    latest = _last_epoch_line(log)  # the run's own progress (EpochLine), if any yet
                    print(f"    ... {name} running for {duration(time.monotonic() - t0)}{latest}", flush=True)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        finally:
            with _LIVE_LOCK:
                LIVE.discard(proc)


# ----------------------------------------------------------------------------------------------- retention


def apply_retention(study: Study, runs: Sequence[Run]) -> list[Path]:
    """Delete checkpoints no run still needs: once a finished run's dependents (every run of the whole study
    starting from it) have all finished, keep only what ``retention`` asks. Returns the deleted files."""
    children: dict[str, list[Run]] = {}
    for run in runs:
        if run.parent is not None:
            children.setdefault(run.parent.name, []).append(run)
    deleted = []
    for run in runs:
        info = finished(run)
        ckpt_dir = run.run_dir / "checkpoints"
        if info is None or not ckpt_dir.is_dir() or not all(finished(c) for c in children.get(run.name, [])):
            continue
        keep_mode = study.retention.keep_for(run.phase, run.seed)
        final = info.get("final_ckpt") or info.get("last_ckpt")
        keep = {"best": info.get("best_ckpt") or final, "last": final}.get(keep_mode)  # no selection: the final
        keep_paths = {Path(keep).resolve(), (run.run_dir / keep).resolve()} if keep else set()
        for path in ckpt_dir.glob("*.ckpt"):
            if path.resolve() not in keep_paths:
                path.unlink()
                deleted.append(path)
    return deleted
