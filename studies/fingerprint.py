"""What made a run, recorded when it starts and compared on every rerun: a study never mixes runs made with
different settings without saying so.

A run's fingerprint (``<run dir>/fingerprint.json``) holds its ``train.py`` arguments (the parent's checkpoint
path replaced by the parent's name), the sha256 of every ``--config`` file it stacks, the sha256 of the
``manifest.json`` of every shard directory it reads (a rebuilt dataset has another manifest: new hashes, new
counts), and its parent's fingerprint digest. A finished run whose fingerprint differs from what the study
would run now is *changed*, and so is every run that starts from a changed run.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studies.plan import Run, run_args, run_config
from studies.spec import Study

FILE = "fingerprint.json"


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _hash_file(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, once per (path, mtime, size) in a process (a study of 1,800 runs shares a few files)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(study: Study, run: Run) -> dict[str, Any]:
    """What makes ``run`` now: arguments, config file hashes, data manifest hashes, the parent's digest."""
    args = run_args(study, run, f"<{run.parent.name}:{run.init_key}>" if run.parent else None)
    configs = {c: _sha256(Path(c)) for c in (*study.base, *run.configs)}
    shards = sorted(
        {
            str(t.get("shards"))
            for t in (run_config(study, run).get("data") or {}).get("tasks") or []
            if isinstance(t, dict) and t.get("shards")
        }
    )
    data = {s: _sha256(Path(s) / "manifest.json") for s in shards}
    parent = recorded(run.parent).get("digest") if run.parent else None
    body = {"args": args, "configs": configs, "data": data, "parent": parent}
    return {**body, "digest": _digest(body)}


def recorded(run: Run | None) -> dict[str, Any]:
    path = run.run_dir / FILE if run is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def write(study: Study, run: Run) -> None:
    (run.run_dir / FILE).write_text(json.dumps(fingerprint(study, run), indent=1) + "\n")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Readable differences between two fingerprints: argument changes, changed config files and data."""
    out = []
    if old.get("args") != new.get("args"):
        before, after = old.get("args") or [], new.get("args") or []
        gone = [a for a in before if a not in after]
        added = [a for a in after if a not in before]
        out.append(f"arguments: {' '.join(gone) or '-'} -> {' '.join(added) or '-'}")
    for key, what in (("configs", "config file"), ("data", "shard manifest")):
        for path in sorted(set(old.get(key) or {}) | set(new.get(key) or {})):
            if (old.get(key) or {}).get(path) != (new.get(key) or {}).get(path):
                out.append(f"{what} {path} changed")
    return out


def changed_runs(study: Study, runs: Sequence[Run]) -> tuple[dict[str, list[str]], list[str]]:
    """Finished runs made with other settings than the study's now (with the differences), and finished runs
    with no fingerprint (made before fingerprints were recorded: not compared)."""
    changed: dict[str, list[str]] = {}
    unknown = []
    for run in runs:  # plan order: parents first
        if not (run.run_dir / "finished.json").is_file():
            continue
        old = recorded(run)
        if not old:
            unknown.append(run.name)
            continue
        diffs = differences(old, fingerprint(study, run))
        if run.parent is not None and run.parent.name in changed:
            diffs.append(f"starts from {run.parent.name}, which changed")
        elif run.parent is not None and old.get("parent") != recorded(run.parent).get("digest"):
            diffs.append(f"{run.parent.name} was rerun after this run started from it")
        if diffs:
            changed[run.name] = diffs
    return changed, unknown
