"""Read a shard directory's ``manifest.json`` and pick shards from it (format in ``shards/__init__.py``)."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "manifest.json"
SUPPORTED_WRITER_VERSION = 1
REQUIRED_FIELDS = ("writer_version", "dataset", "tasks", "shards", "counts")


def load_manifest(directory: str | Path) -> dict:
    """The manifest of a shard directory, with ``_dir`` (the directory, as a string) added.

    Raises:
        FileNotFoundError: No ``manifest.json`` in ``directory``.
        ValueError: The file is not valid JSON, lacks fields, is a demo world index, or is too new.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"No shard manifest at {path}. Build the shards first: `python -m shards build <dataset> --out "
            f"{directory}` (or `python -m shards build demo --out <dir>` for the demo world)."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rebuild it with `python -m shards build`.") from err
    if manifest.get("demo") and "shards" not in manifest:
        subdirs = ", ".join(str(directory / sub) for sub in manifest.get("tasks", {}).values())
        raise ValueError(f"{path} is the demo world index, not a shard directory; use one of: {subdirs}")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {missing}; rebuild it with `python -m shards build`.")
    if manifest["writer_version"] > SUPPORTED_WRITER_VERSION:
        raise ValueError(
            f"{path} has writer_version {manifest['writer_version']}, newer than this code reads "
            f"({SUPPORTED_WRITER_VERSION}); update mmstilts or rebuild the shards."
        )
    return {**manifest, "_dir": str(directory)}


def _as_manifest(manifest_or_dir: dict | str | Path) -> dict:
    if isinstance(manifest_or_dir, dict):
        if "_dir" not in manifest_or_dir:
            raise ValueError("This manifest dict has no '_dir'; pass the shard directory or load_manifest()'s result.")
        return manifest_or_dir
    return load_manifest(manifest_or_dir)


def _matching(manifest: dict, split: str, lang: str | None, task: str | None) -> list[dict]:
    return [
        s
        for s in manifest["shards"]
        if s["split"] == split and (lang is None or s["lang"] == lang) and (task is None or s["task"] == task)
    ]


def select_shards(
    manifest_or_dir: dict | str | Path, split: str, lang: str | None = None, task: str | None = None
) -> list[Path]:
    """Paths of the shards of ``split`` (optionally one language / task), in manifest order.

    Raises:
        ValueError: Nothing matches; the message lists the (split, lang) pairs the directory has.
    """
    manifest = _as_manifest(manifest_or_dir)
    entries = _matching(manifest, split, lang, task)
    if not entries:
        have = ", ".join(f"{sp}/{lg}" for sp, langs in manifest["counts"].items() for lg in langs)
        wanted = f"split={split!r}" + (f" lang={lang!r}" if lang else "") + (f" task={task!r}" if task else "")
        raise ValueError(f"No shards with {wanted} in {manifest['_dir']}; it has (split/lang): {have}")
    return [Path(manifest["_dir"]) / s["file"] for s in entries]


def sample_count(
    manifest_or_dir: dict | str | Path, split: str, lang: str | None = None, task: str | None = None
) -> int:
    """Number of samples in the matching shards (0 when none match)."""
    return sum(s["count"] for s in _matching(_as_manifest(manifest_or_dir), split, lang, task))


def languages(manifest_or_dir: dict | str | Path, split: str) -> list[str]:
    """The languages ``split`` has, in the order the manifest lists them (empty if the split is absent)."""
    return list(_as_manifest(manifest_or_dir)["counts"].get(split, {}))


def splits(manifest_or_dir: dict | str | Path) -> list[str]:
    """The splits the directory has, in manifest order."""
    return list(_as_manifest(manifest_or_dir)["counts"])


def shard_dirs(root: str | Path) -> list[Path]:
    """``root`` when it is a shard directory, else its sub-directories holding manifests (the demo world)."""
    root = Path(root)
    index = root / MANIFEST
    if index.is_file():
        try:
            if "shards" in json.loads(index.read_text(encoding="utf-8")):
                return [root]
        except json.JSONDecodeError:
            return [root]  # load_manifest will report the broken file
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) or [root]
