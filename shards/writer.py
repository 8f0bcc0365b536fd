"""Write records to WebDataset tar shards plus ``manifest.json`` (layout in ``shards/__init__.py``).

Every converter and the demo world end in :func:`build_shards`::

    build_shards("data/xvnli", records, dataset="xvnli", tasks={"xvnli": {"label_names": [...], "label_map": {...}}})

A record is ``{"key", "split", "lang", "json", "images"}``; ``images`` maps member names (``jpg`` or
``img0.jpg`` + ``img1.jpg``) to a file path, raw bytes or a ``PIL.Image.Image``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image, ImageOps
from tqdm import tqdm

from contracts.files import sha256_file

WRITER_VERSION = 1
JPEG_QUALITY = 90
# A fixed member mtime makes equal inputs give byte-identical tars (the demo world's determinism test).
TAR_MTIME = 0.0
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
IMAGE_MEMBERS = ({"jpg"}, {"img0.jpg", "img1.jpg"}, set())
MISSING_LISTED = 5

ImageSource = str | Path | bytes | Image.Image
Plan = list[tuple[str, str, str, str, list[dict]]]  # (file, task, split, lang, records) per shard


def _open_image(src: ImageSource) -> tuple[Image.Image, bytes | None]:
    """The image and, when it came from a file or bytes, those raw bytes (for the pass-through)."""
    if isinstance(src, Image.Image):
        return src, None
    raw = src if isinstance(src, bytes) else Path(src).read_bytes()
    return Image.open(io.BytesIO(raw)), raw


def reencode_image(src: ImageSource, max_side: int = 384) -> bytes:
    """JPEG bytes (RGB, quality 90) whose short side is at most ``max_side``; never upscales.

    A source that already is an upright RGB JPEG within the bound is passed through unchanged, which
    avoids a second lossy generation and keeps converting already-small datasets fast.

    Args:
        src: A file path, encoded image bytes or a PIL image.
        max_side: Upper bound on the short side in pixels.
    """
    img, raw = _open_image(src)
    orientation = img.getexif().get(0x0112, 1) if raw is not None else 1
    if raw is not None and img.format == "JPEG" and img.mode == "RGB" and orientation == 1:
        if min(img.size) <= max_side:
            return raw
    if img.format == "JPEG" and min(img.size) > max_side:
        # Draft mode decodes at 1/2, 1/4 or 1/8 scale directly: much faster for large photos.
        img.draft("RGB", _scaled(img.size, max_side))
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P"):
        # Transparent pixels would turn black in a plain convert; composite them on white instead.
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    img = img.convert("RGB")
    if min(img.size) > max_side:
        img = img.resize(_scaled(img.size, max_side), Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _scaled(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = max_side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


# --------------------------------------------------------------------------------------------- validation


def _validate(records: list[dict], tasks: dict[str, dict]) -> None:
    """Raise ``ValueError`` on the first malformed record, naming its key and the fix."""
    seen: dict[str, int] = {}
    for pos, rec in enumerate(records):
        missing = {"key", "split", "lang", "json"} - rec.keys()
        if missing:
            raise ValueError(f"Record #{pos} lacks {sorted(missing)}; every record needs key, split, lang, json.")
        key = rec["key"]
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise ValueError(
                f"Invalid sample key {key!r} (record #{pos}): keys may hold only letters, digits, '_' and '-' "
                "(no dots, no '/' or '\\'), since WebDataset splits member names at the first dot. "
                "Replace the offending characters, e.g. key.replace('.', '_')."
            )
        if key in seen:
            raise ValueError(
                f"Duplicate sample key {key!r}: records #{seen[key]} and #{pos}. Keys must be unique within a "
                "directory; add the split, language or a running index to the key."
            )
        seen[key] = pos
        for name in ("split", "lang"):
            if not KEY_RE.match(str(rec[name])):
                raise ValueError(f"Record {key!r}: {name} {rec[name]!r} may hold only letters, digits, '_' and '-'.")
        _validate_json(key, rec, tasks)
        images = set(rec.get("images") or {})
        if images not in IMAGE_MEMBERS:
            raise ValueError(
                f"Record {key!r}: images {sorted(images)} must be {{'jpg'}}, {{'img0.jpg', 'img1.jpg'}} or empty."
            )


def _validate_json(key: str, rec: dict, tasks: dict[str, dict]) -> None:
    sample = rec["json"]
    missing = [f for f in ("task", "lang", "id") if f not in sample]
    if missing:
        raise ValueError(f"Record {key!r}: json lacks {missing}; every sample json needs task, lang and id.")
    if sample["lang"] != rec["lang"]:
        raise ValueError(f"Record {key!r}: json lang {sample['lang']!r} differs from record lang {rec['lang']!r}.")
    if sample["task"] not in tasks:
        raise ValueError(
            f"Record {key!r}: task {sample['task']!r} is not in tasks= ({sorted(tasks)}); add its label_names "
            "and label_map there."
        )


def _missing_images(records: list[dict]) -> list[tuple[int, str, str]]:
    """(position, key, path) for every image given as a path that does not exist."""
    missing = []
    for pos, rec in enumerate(records):
        for src in (rec.get("images") or {}).values():
            if isinstance(src, str | Path) and not Path(src).is_file():
                missing.append((pos, rec["key"], str(src)))
    return missing


def _drop_missing(records: list[dict], allow_missing: bool) -> tuple[list[dict], list[dict]]:
    missing = _missing_images(records)
    if not missing:
        return records, []
    if not allow_missing:
        listed = "\n".join(f"  {key}: {path}" for _, key, path in missing[:MISSING_LISTED])
        more = f"\n  ... and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else ""
        raise FileNotFoundError(
            f"{len(missing)} image file(s) are missing:\n{listed}{more}\n"
            "Check --images, or pass --allow-missing (allow_missing=True) to skip them; skipped samples are "
            "listed in the manifest."
        )
    bad = {pos for pos, _, _ in missing}
    skipped = [{"key": key, "reason": f"missing image {path}"} for _, key, path in missing]
    return [r for pos, r in enumerate(records) if pos not in bad], skipped


# ------------------------------------------------------------------------------------------------ planning


def _plan(records: list[dict], max_per_shard: int) -> Plan:
    """(file, task, split, lang, records) per shard: grouped by (split, lang) in input order, then chunked."""
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be at least 1, got {max_per_shard}.")
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["split"], rec["lang"]), []).append(rec)
    plan = []
    for (split, lang), group in groups.items():
        task_names = list(dict.fromkeys(r["json"]["task"] for r in group))
        if len(task_names) > 1:
            raise ValueError(
                f"Split {split!r}, language {lang!r} mixes tasks {task_names}; a shard directory holds one task "
                "per (split, lang): write each task to its own directory."
            )
        for i, start in enumerate(range(0, len(group), max_per_shard)):
            plan.append(
                (f"{split}-{lang}-{i:06d}.tar", task_names[0], split, lang, group[start : start + max_per_shard])
            )
    return plan


def _fingerprint(records: list[dict], max_side: int) -> str:
    """Hash of what a shard is made from, so a rerun with changed inputs rewrites it."""
    digest = hashlib.sha256(f"v{WRITER_VERSION} q{JPEG_QUALITY} s{max_side}".encode())
    for rec in records:
        digest.update(rec["key"].encode())
        digest.update(json.dumps(rec["json"], sort_keys=True, ensure_ascii=False).encode())
        for name, src in sorted((rec.get("images") or {}).items()):
            digest.update(name.encode())
            if isinstance(src, bytes):
                digest.update(hashlib.sha256(src).digest())
            elif isinstance(src, Image.Image):
                digest.update(hashlib.sha256(src.tobytes()).digest())
            else:
                stat = Path(src).stat()
                digest.update(f"{src}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _state_path(out_dir: Path, file: str) -> Path:
    return out_dir / f".{file}.done.json"


def _finished(out_dir: Path, file: str, fingerprint: str) -> dict | None:
    """The recorded result of an earlier write of this shard when it is still valid, else None."""
    state_file, shard = _state_path(out_dir, file), out_dir / file
    if not (state_file.is_file() and shard.is_file()):
        return None
    try:
        state = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if state.get("fingerprint") != fingerprint or state.get("sha256") != sha256_file(shard):
        return None
    return state


# ------------------------------------------------------------------------------------------------- writing


def _encode_sample(rec: dict, max_side: int) -> dict[str, Any]:
    sample: dict[str, Any] = {"__key__": rec["key"]}
    sample["json"] = json.dumps(rec["json"], ensure_ascii=False).encode("utf-8")
    for name, src in (rec.get("images") or {}).items():
        try:
            sample[name] = reencode_image(src, max_side)
        except (OSError, Image.UnidentifiedImageError) as err:
            where = f" ({src})" if isinstance(src, str | Path) else ""
            raise ValueError(f"Sample {rec['key']!r}: cannot read image {name}{where}: {err}") from err
    return sample


def _write_shard(
    out_dir: Path,
    file: str,
    records: list[dict],
    max_side: int,
    fingerprint: str,
    on_sample: Callable[[], None] | None = None,
) -> dict:
    """Write one shard to ``<file>.tmp``, rename it into place, then record it in its state file."""
    tmp = out_dir / f"{file}.tmp"
    with open(tmp, "wb") as stream:
        writer = wds.TarWriter(stream, encoder=False, mtime=TAR_MTIME)
        for rec in records:
            writer.write(_encode_sample(rec, max_side))
            if on_sample is not None:
                on_sample()
        writer.close()
    os.replace(tmp, out_dir / file)
    state = {"file": file, "count": len(records), "sha256": sha256_file(out_dir / file), "fingerprint": fingerprint}
    state["bytes"] = (out_dir / file).stat().st_size
    _state_path(out_dir, file).write_text(json.dumps(state))
    return state


def _write_all(out_dir: Path, jobs: list[tuple[str, list[dict], str]], max_side: int, workers: int, bar: tqdm) -> dict:
    """Write the shards in ``jobs`` (file, records, fingerprint), sequentially or in a process pool."""
    results: dict[str, dict] = {}
    if workers <= 0 or len(jobs) <= 1:
        for file, recs, fp in jobs:
            results[file] = _write_shard(out_dir, file, recs, max_side, fp, on_sample=lambda: bar.update(1))
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_write_shard, out_dir, f, recs, max_side, fp): (f, len(recs)) for f, recs, fp in jobs}
        for future in as_completed(futures):
            file, count = futures[future]
            results[file] = future.result()
            bar.update(count)
    return results


def build_shards(
    out_dir: str | Path,
    records: Iterable[dict],
    *,
    dataset: str,
    tasks: dict[str, dict],
    sources: Sequence[str | Path] = (),
    skipped: Sequence[dict] = (),
    ignored: Sequence[dict] = (),
    max_per_shard: int = 2000,
    max_side: int = 384,
    workers: int = 0,
    allow_missing: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``records`` as tar shards plus ``manifest.json`` into ``out_dir`` and return the manifest.

    Records are grouped by (split, lang) in input order and cut into ``<split>-<lang>-NNNNNN.tar`` shards.
    A rerun skips every shard whose file and state file (``.<file>.done.json``) match its inputs, so an
    interrupted build resumes where it stopped.

    Args:
        out_dir: Directory for the shards and manifest (created if needed).
        records: ``{"key", "split", "lang", "json", "images"}`` dicts (see the module docstring).
        dataset: Dataset name recorded in the manifest.
        tasks: ``{task: {"label_names": [...], "label_map": {...}}}`` recorded in the manifest.
        sources: Source files whose sha256 goes into the manifest.
        skipped: ``{"key", "reason"}`` entries the converter already dropped.
        ignored: ``{"path", "reason"}`` for each file below the source folder that was not read; each is
            printed as ``ignored: <path>: <reason>`` and kept in the manifest.
        max_per_shard: Most samples per shard.
        max_side: Bound on each image's short side in pixels.
        workers: Processes writing shards in parallel; 0 writes in this process.
        allow_missing: Skip (and list in ``skipped``) records whose image files do not exist instead of failing.
        progress: Show a progress bar and print throughput.

    Returns:
        The manifest as written, plus ``_dir`` (the directory), as :func:`shards.manifest.load_manifest` gives it.
    """
    out = Path(out_dir)
    records = list(records)
    for entry in ignored:  # printed even without progress output: a build never drops a file silently
        print(f"{dataset}: ignored: {entry['path']}: {entry['reason']}", file=sys.stderr)
    _validate(records, tasks)
    records, missing = _drop_missing(records, allow_missing)
    plan = _plan(records, max_per_shard)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    done, jobs = _split_finished(out, plan, max_side)
    todo = sum(len(recs) for _, recs, _ in jobs)
    with tqdm(total=todo, desc=f"{dataset} shards", unit="sample", disable=not progress or todo == 0) as bar:
        done.update(_write_all(out, jobs, max_side, workers, bar))
    if progress:
        written = sum(done[f]["bytes"] for f, _, _ in jobs)
        _report(dataset, out, len(plan) - len(jobs), todo, written, time.perf_counter() - start)
    _warn_stale(dataset, out, plan)
    manifest = _manifest(dataset, tasks, plan, done, sources, [*skipped, *missing], ignored)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    return {**manifest, "_dir": str(out)}


def _split_finished(out: Path, plan: Plan, max_side: int) -> tuple[dict[str, dict], list[tuple[str, list[dict], str]]]:
    """The states of shards an earlier run finished, and the (file, records, fingerprint) jobs still to write."""
    done, jobs = {}, []
    for file, _, _, _, recs in plan:
        fingerprint = _fingerprint(recs, max_side)
        state = _finished(out, file, fingerprint)
        if state is not None:
            done[file] = state
        else:
            jobs.append((file, recs, fingerprint))
    return done, jobs


def _warn_stale(dataset: str, out: Path, plan: Plan) -> None:
    stale = sorted({p.name for p in out.glob("*.tar")} - {file for file, *_ in plan})
    if stale:
        # Left by an earlier, larger build; the manifest does not list them, so readers never see them.
        print(f"{dataset}: {len(stale)} tar file(s) in {out} are not in the new manifest: {stale[:3]}", file=sys.stderr)


def _report(dataset: str, out: Path, reused: int, samples: int, nbytes: int, elapsed: float) -> None:
    rate = samples / max(elapsed, 1e-9)
    mbps = nbytes / 1e6 / max(elapsed, 1e-9)
    reuse = f", {reused} shard(s) reused from an earlier run" if reused else ""
    print(
        f"{dataset}: wrote {samples} samples ({nbytes / 1e6:.1f} MB) to {out} in {elapsed:.1f}s: "
        f"{rate:.0f} samples/s, {mbps:.1f} MB/s{reuse}",
        file=sys.stderr,
    )


def _manifest(
    dataset: str,
    tasks: dict[str, dict],
    plan: Plan,
    done: dict[str, dict],
    sources: Sequence[str | Path],
    skipped: list[dict],
    ignored: Sequence[dict] = (),
) -> dict:
    shards, counts = [], {}
    for file, task, split, lang, recs in plan:
        shards.append(
            {
                "file": file,
                "task": task,
                "split": split,
                "lang": lang,
                "count": len(recs),
                "sha256": done[file]["sha256"],
            }
        )
        counts.setdefault(split, {}).setdefault(lang, 0)
        counts[split][lang] += len(recs)
    task_meta = {
        name: {**spec, "label_names": list(spec.get("label_names", [])), "label_map": dict(spec.get("label_map", {}))}
        for name, spec in tasks.items()
    }
    return {
        "writer_version": WRITER_VERSION,
        "dataset": dataset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": task_meta,
        "shards": shards,
        "counts": counts,
        "sources": [{"path": str(p), "sha256": sha256_file(p)} for p in sources],
        "skipped": list(skipped),
        "ignored": [dict(entry) for entry in ignored],
    }
