"""Files written whole or not at all, and the one file hash.

Written whole or not at all: a reader (the study runner, a rerun, a person) never sees one cut short.

``atomic_open(path)`` yields a file ``.<name>.tmp-<pid>`` beside ``path``; when the block ends without an error the
file is flushed to disk and renamed over ``path`` (``os.replace``: atomic within one filesystem); on an error, or
if the process dies, ``path`` keeps its old content (or stays absent) and the temporary file is removed (or left
hidden, never under the final name). ``atomic_write_text`` is the one-shot form.

The run's result files should be written through it, ``results.json`` last, so that a ``results.json`` means every
other result file is complete: ``contracts.outcomes.write_outcomes`` (``outcomes.jsonl``), ``reports.write_run_report``
(``results.csv``, ``results.md``, then ``results.json``), and ``callbacks.RunReport.on_test_end`` writing
``outcomes.jsonl`` before calling ``write_run_report``.

``sha256_file`` is the project's one file hash: shard manifests, ``shards verify``, the evaluation's check that a
shard did not change, and a checkpoint's lineage.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose content appears under ``path`` only once the block has ended without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` whole or not at all (``atomic_open``); returns ``path``."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
