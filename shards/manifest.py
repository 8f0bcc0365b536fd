"""Read a shard directory's ``manifest.json`` and pick shards from it (format in ``shards/__init__.py``).

A shard location is a local directory or a URL, so one config runs on a laptop and on a cluster that
streams its shards from object storage:

- ``s3://bucket/xvnli``, ``gs://bucket/xvnli``, ``file:///data/xvnli`` or any other fsspec URL (needs
  ``pip install fsspec`` plus the filesystem's package: ``s3fs``, ``gcsfs``, ...);
- ``pipe:<command>``: a shell command that writes one file to stdout. The file name is appended to the
  command as ``<command>/<file>`` (``pipe:cat /data/xvnli``, ``pipe:curl -s https://host/xvnli``), or
  replaces a ``{}`` placeholder (``pipe:aws s3 cp s3://bucket/xvnli/{} -``).

``manifest.json`` is read through the same mechanism, and :func:`select_shards` returns URL strings that
:func:`open_shard` opens. :func:`tar_samples` is the project's one tar reader (the training and evaluation
pipelines, ``shards verify``/``inspect``, preflight and the benchmarks all read shards through it), and
``contracts.files.sha256_file`` its one file hash (manifests, verify, checkpoint lineage).
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
SUPPORTED_WRITER_VERSION = 1
REQUIRED_FIELDS = ("writer_version", "dataset", "tasks", "shards", "counts")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str | Path) -> bool:
    """True for ``pipe:`` commands and ``scheme://`` URLs; False for local paths."""
    return isinstance(location, str) and (location.startswith("pipe:") or bool(_SCHEME.match(location)))


def shard_location(directory: str | Path, file: str) -> Path | str:
    """``file`` inside a shard location: a Path for a local directory, a URL string otherwise."""
    if not is_url(directory):
        return Path(directory) / file
    directory = str(directory)
    if directory.startswith("pipe:") and "{}" in directory:
        return directory.replace("{}", file)
    return f"{directory.rstrip('/')}/{file}"


def open_shard(url: str | Path) -> IO[bytes]:
    """A binary stream of a local file, a ``pipe:`` command's stdout or an fsspec URL.

    Local files and ``pipe:`` go through WebDataset's ``gopen`` (a failing command raises ``OSError`` on
    close); other URLs through fsspec, imported only here so that local runs do not need it.
    """
    url = str(url)
    if not is_url(url) or url.startswith(("pipe:", "file:")):
        import webdataset as wds

        return wds.gopen(url, "rb")
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"Reading {url} needs fsspec and the filesystem's package: `pip install fsspec s3fs` "
            "(gcsfs for gs://, adlfs for az://)"
        ) from None
    return fsspec.open(url, "rb").open()


def _read_text(location: str | Path) -> str:
    """The text of a local file or URL; FileNotFoundError when it cannot be read."""
    if not is_url(location):
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(path)
        return path.read_text(encoding="utf-8")
    try:
        with open_shard(location) as stream:
            data = stream.read()
    except (OSError, ValueError) as err:  # a failing pipe command, a missing object, an unknown scheme
        raise FileNotFoundError(f"{location} ({err})") from None
    if not data:  # a pipe whose command wrote nothing
        raise FileNotFoundError(f"{location} (empty)")
    return data.decode("utf-8")


def safe_member(name: str) -> bool:
    """Only json, JPEG and text members (img2dataset's captions) are read out of a tar at all; anything else never
    reaches memory."""
    return name.endswith((".json", ".jpg", ".txt"))


def split_member_name(name: str) -> tuple[str, str]:
    """``key.img0.jpg`` -> (``key``, ``img0.jpg``): WebDataset's rule, the key ends at the first dot."""
    base = name.rsplit("/", 1)[-1]
    prefix = name[: len(name) - len(base)]
    key, _, ext = base.partition(".")
    return prefix + key, ext.lower()


class TarReadError(OSError):
    """A shard that cannot be read to its end; ``key`` is the sample being read when it broke ("" if none)."""

    def __init__(self, url: str, key: str, cause: BaseException) -> None:
        super().__init__(f"{cause}")
        self.url, self.key, self.cause = url, key, cause


def tar_samples(
    url: str | Path, *, keep: Callable[[str], bool] = safe_member, duplicate: Callable[[str], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The samples of one shard in tar order: ``{"__key__", "__url__", "<ext>": bytes, ...}``.

    A sample is the run of adjacent members sharing a key (as TarWriter writes them); only members whose
    name ``keep`` accepts are read into memory (every member is still streamed past, so a truncated tar is
    always noticed). The tar is streamed (``r|``), so local files, ``pipe:`` commands and URLs read alike.

    Args:
        url: A local path or any location :func:`open_shard` opens.
        keep: Which member names to read (default: json and JPEG only).
        duplicate: Called with the key of a second group that reuses a key; that group is skipped.
            Default: duplicates are skipped silently.

    Raises:
        TarReadError: The tar is unreadable or truncated (the sample being read is dropped).
    """
    url = str(url)
    sample: dict[str, Any] | None = None
    key, seen, skipping = "", set(), False
    try:
        with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name_key, ext = split_member_name(member.name)
                if name_key != key or (sample is not None and ext in sample):  # a new sample starts
                    if sample is not None:
                        yield sample
                    key, sample, skipping = name_key, None, name_key in seen
                    if skipping:
                        if duplicate is not None:
                            duplicate(key)
                    else:
                        seen.add(key)
                        sample = {"__key__": key, "__url__": url}
                if skipping or not keep(member.name):
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {member.name} is truncated ({len(data)} of {member.size} bytes)")
                sample[ext] = data
                tar.members = []  # streaming: do not keep every header in memory
    except (tarfile.TarError, EOFError, OSError) as err:
        raise TarReadError(url, key, err) from err
    if sample is not None:
        yield sample


def load_manifest(directory: str | Path) -> dict:
    """The manifest of a shard directory or URL, with ``_dir`` (the location, as a string) added.

    Raises:
        FileNotFoundError: No ``manifest.json`` in ``directory``.
        ValueError: The file is not valid JSON, lacks fields, is a demo world index, or is too new.
    """
    directory = directory if is_url(directory) else Path(directory)
    path = shard_location(directory, MANIFEST)
    try:
        text = _read_text(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"No shard manifest at {err.args[0] if is_url(directory) else path}. Build the shards first: `python -m "
            f"shards build <dataset> --out {directory}` (or `python -m shards build demo --out <dir>` for the demo "
            "world); a URL must point at the directory holding manifest.json."
        ) from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rebuild it with `python -m shards build`.") from err
    if manifest.get("demo") and "shards" not in manifest:
        subdirs = ", ".join(str(shard_location(directory, sub)) for sub in manifest.get("tasks", {}).values())
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
) -> list[Path | str]:
    """The shards of ``split`` (optionally one language / task), in manifest order: Paths for a local
    directory, URL strings for a URL location (:func:`shard_location`).

    Raises:
        ValueError: Nothing matches; the message lists the (split, lang) pairs the directory has.
    """
    manifest = _as_manifest(manifest_or_dir)
    entries = _matching(manifest, split, lang, task)
    if not entries:
        have = ", ".join(f"{sp}/{lg}" for sp, langs in manifest["counts"].items() for lg in langs)
        wanted = f"split={split!r}" + (f" lang={lang!r}" if lang else "") + (f" task={task!r}" if task else "")
        raise ValueError(f"No shards with {wanted} in {manifest['_dir']}; it has (split/lang): {have}")
    return [shard_location(manifest["_dir"], s["file"]) for s in entries]


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
