"""Check a shard directory against its manifest: every shard exists, hashes and counts match, tars read."""

from __future__ import annotations

from pathlib import Path

from contracts.files import sha256_file
from shards.manifest import TarReadError, load_manifest, tar_samples


def count_samples(path: str | Path) -> int:
    """Number of distinct sample keys in a tar, reading every member (so truncation is caught).

    Raises:
        TarReadError: The tar is unreadable or truncated.
    """
    return sum(1 for _ in tar_samples(path, keep=lambda name: True))


def verify_shard(directory: Path, entry: dict) -> list[str]:
    """Problems with one manifest shard entry (empty when it is fine)."""
    path = directory / entry["file"]
    if not path.is_file():
        return [f"{path}: missing (listed in the manifest); rebuild with `python -m shards build`"]
    problems = []
    if sha256_file(path) != entry["sha256"]:
        problems.append(f"{path}: sha256 differs from the manifest (changed after writing); rebuild it")
    try:
        count = count_samples(path)
    except TarReadError as err:
        return [*problems, f"{path}: unreadable or truncated tar ({err}); rebuild it"]
    if count != entry["count"]:
        problems.append(f"{path}: {count} samples, manifest says {entry['count']}")
    return problems


def verify_dir(directory: str | Path) -> list[str]:
    """Every problem found in ``directory`` (its manifest, shards, hashes, counts); empty when all is well."""
    directory = Path(directory)
    try:
        manifest = load_manifest(directory)
    except (FileNotFoundError, ValueError) as err:
        return [str(err)]
    problems = []
    for entry in manifest["shards"]:
        problems.extend(verify_shard(directory, entry))
    return problems
