"""img2dataset's WebDataset output, read in place: ``python -m shards build img2dataset --src DIR --out DIR``.

img2dataset (``--output_format webdataset``) writes ``00000.tar, 00001.tar, ...`` holding per sample ``<key>.jpg``,
``<key>.txt`` (the caption) and ``<key>.json`` (url, status, sizes, any extra columns kept with
``--save_additional_columns``), with ``<n>_stats.json`` and ``<n>.parquet`` beside them. That is how CC3M, CC12M,
LAION subsets, and COCO / Flickr30k downloaded from their URL lists are held, often terabytes of them.

This command does **not** copy an image. It reads every tar once (sample count, sha256, each sample's json and
caption) and writes only ``manifest.json`` into ``--out``: the shard entries name the original tars by relative
path, so ``python -m shards verify`` checks them and the loader streams them where they lie. The loader turns each
sample into a retrieval sample (``texts`` = [the caption], ``image_id`` = the key; ``datamodules/img2dataset.py``)
and drops the samples the manifest lists under ``img2dataset.drop``.

**xFlickr&CO test images never reach the start phase.** ``--exclude`` names the xFlickr&CO test set (the shard
directory built by ``python -m shards build xflickrco``, or IGLUE's xFlickrCO annotation ``.jsonl`` files); every
sample whose image is one of its images is dropped, listed in the manifest and counted on the console. Without
``--exclude`` the build refuses (``--exclude none`` indexes without the check, and the manifest says so).
An image is matched by its dataset id: Flickr photo id (Flickr30k file names are photo ids) or COCO id, read from
the sample's json columns (``cocoid``, ``coco_id``, ``flickr_id``, ``image_id``, ``filename``, ``filepath``) and from
its URL (``COCO_val2014_000000391895.jpg``, ``val2017/000000391895.jpg``,
``.../staticflickr.com/.../<photo id>_<secret>.jpg``, ``.../<photo id>.jpg``). A copy of a test image under
another URL and id is not caught: pixels are not compared.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from contracts.catalogue import get_task
from contracts.fields import family_fields
from contracts.files import sha256_file
from shards.manifest import MANIFEST, TarReadError, load_manifest, select_shards, tar_samples

FORMAT = "img2dataset"
DEFAULT_TASK = "captions"
MATCHING_TASK = "captions_itm"  # the same samples as image-text matching (datamodules/img2dataset.py makes negatives)
EXCLUDED = "xflickrco_test_image"
NO_CHECK = "none"

Identity = tuple[str, str]  # ("coco", "391895") or ("flickr", "1000092795")

_COCO_NAME = re.compile(r"COCO_(?:train|val|test)20\d\d_0*(\d+)")
_COCO_2017 = re.compile(r"(?:^|/)(?:train|val|test)2017/0*(\d+)\.jpe?g$", re.IGNORECASE)
_FLICKR_STATIC = re.compile(r"staticflickr\.com/(?:\d+/)*(\d+)_[0-9a-f]+(?:_[a-z0-9])?\.jpe?g", re.IGNORECASE)
_DIGITS_FILE = re.compile(r"(?:^|/)(\d+)\.jpe?g$", re.IGNORECASE)


def _canonical(kind: str, value: Any) -> Identity:
    return kind, str(int(str(value)))


def identities_of_name(name: str) -> set[Identity]:
    """Dataset ids a file name or URL reveals: COCO names (2014 style, 2017 zero-padded), Flickr photo ids."""
    found: set[Identity] = set()
    for pattern, kind in ((_COCO_NAME, "coco"), (_COCO_2017, "coco"), (_FLICKR_STATIC, "flickr")):
        match = pattern.search(name)
        if match:
            found.add(_canonical(kind, match.group(1)))
    match = _DIGITS_FILE.search(name)
    if match and not found:
        digits = match.group(1)  # COCO 2017 files are 12 zero-padded digits; Flickr30k files are photo ids
        found.add(_canonical("coco" if len(digits) == 12 and digits.startswith("0") else "flickr", digits))
    return found


def identities_of_sample(meta: dict[str, Any]) -> set[Identity]:
    """Every dataset id an img2dataset sample's json carries (its columns and its URL)."""
    found: set[Identity] = set()
    for key, kinds in (
        ("cocoid", ("coco",)),
        ("coco_id", ("coco",)),
        ("flickr_id", ("flickr",)),
        ("image_id", ("coco", "flickr")),
    ):
        value = meta.get(key)
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            found |= {_canonical(kind, value) for kind in kinds}  # image_id: either dataset, so drop on doubt
    for key in ("url", "filename", "filepath", "img_path"):
        if isinstance(meta.get(key), str):
            found |= identities_of_name(meta[key])
    return found


def _xflickrco_id(value: Any, img_path: str | None = None) -> set[Identity]:
    """IGLUE's convention: Flickr ids are strings, COCO ids ints; an image path settles the rest."""
    found = identities_of_name(img_path) if img_path else set()
    if isinstance(value, bool) or value is None:
        return found
    if isinstance(value, int):
        return found | {_canonical("coco", value)}
    text = str(value)
    if text.isdigit():
        return found | {_canonical("flickr", text)}
    return found | identities_of_name(text if text.endswith(".jpg") else f"{text}.jpg")


def test_image_ids(source: str | Path) -> tuple[set[Identity], Path]:
    """The xFlickr&CO test images named by a shard directory (``test`` split) or IGLUE annotation jsonl files.

    Returns the ids and the file that defines them (for the manifest's ``sources``).
    """
    source = Path(source)
    if (source / MANIFEST).is_file():
        found: set[Identity] = set()
        for url in select_shards(load_manifest(source), "test"):
            for record in _tar_json(url):
                found |= _xflickrco_id(record["id"] if "id" in record else record.get("image_id"))  # id: typed
        return found, source / MANIFEST
    files = sorted(source.rglob("test*.jsonl")) if source.is_dir() else [source]  # test.jsonl, test_gmt.jsonl
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(
            f"--exclude {source}: neither a shard directory (manifest.json) nor xFlickrCO "
            "annotation .jsonl files; build one: `python -m shards build xflickrco`"
        )
    found = set()
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                if "id" not in obj:
                    raise ValueError(f"{path}:{n}: no 'id' field; is this an xFlickrCO annotation file?")
                found |= _xflickrco_id(obj["id"], obj.get("img_path"))
    return found, files[0] if len(files) == 1 else source


def _tar_json(path: str | Path) -> Iterator[dict[str, Any]]:
    for sample in tar_samples(path, keep=lambda name: name.endswith(".json")):
        if "json" in sample:
            yield json.loads(sample["json"])


def read_img2dataset_tar(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """``{key: {"json": dict, "caption": str | None, "jpg": bool}}`` of one tar (every member read) and its sha256."""
    samples: dict[str, dict[str, Any]] = {}
    try:
        for raw in tar_samples(path):
            try:
                meta = json.loads(raw["json"]) if "json" in raw else {}
            except ValueError as err:
                raise ValueError(f"{path}: {raw['__key__']}.json is not valid JSON ({err})") from None
            caption = raw["txt"].decode("utf-8").strip() if "txt" in raw else None
            samples[raw["__key__"]] = {"json": meta, "caption": caption, "jpg": "jpg" in raw}
    except TarReadError as err:
        raise ValueError(f"{path}: unreadable or truncated tar ({err}); re-download that img2dataset shard") from None
    return samples, sha256_file(path)


def _drop_reason(sample: dict[str, Any], excluded: set[Identity]) -> str | None:
    if excluded and identities_of_sample(sample["json"]) & excluded:
        return EXCLUDED
    if not sample["jpg"]:
        return "missing_image"
    if not (sample["caption"] or sample["json"].get("caption")):
        return "missing_caption"
    return None


def index_img2dataset(
    src: str | Path,
    out: str | Path,
    *,
    exclude: Iterable[str],
    split: str = "train",
    lang: str = "en",
    task: str = DEFAULT_TASK,
) -> dict:
    """Index img2dataset tars under ``src`` into ``out/manifest.json`` (no image copied); see the module docstring.

    Raises:
        ValueError: no ``exclude`` given, a task that is not a retrieval task, no tars, or a malformed tar.
    """
    exclude = list(exclude)
    if not exclude:
        raise ValueError(
            "img2dataset: the start phase must not see xFlickr&CO test images. Pass --exclude with the "
            "xFlickr&CO shard directory (python -m shards build xflickrco ...) or IGLUE's xFlickrCO "
            f"annotation .jsonl files; --exclude {NO_CHECK} indexes without the check."
        )
    if family_fields(get_task(task).family).required != ("texts", "image_id"):  # an image with its captions
        raise ValueError(f"--field task={task}: img2dataset captions feed a retrieval task (e.g. {DEFAULT_TASK})")
    src, out = Path(src), Path(out)
    tars = sorted(src.rglob("*.tar"))
    if not tars:
        raise FileNotFoundError(f"--src {src}: no .tar files (img2dataset --output_format webdataset writes them)")
    excluded: set[Identity] = set()
    sources = []
    for source in exclude:
        if source != NO_CHECK:
            ids, defined_by = test_image_ids(source)
            excluded |= ids
            sources.append({"path": str(source), "sha256": _sha256(defined_by)})
    out.mkdir(parents=True, exist_ok=True)
    shards, drop, skipped, kept = [], {}, [], 0
    for path in tars:
        samples, digest = read_img2dataset_tar(path)
        file = os.path.relpath(path, out)
        reasons = {key: why for key, s in samples.items() if (why := _drop_reason(s, excluded))}
        if reasons:
            drop[file] = reasons
            skipped += [{"key": f"{file}:{key}", "reason": why} for key, why in reasons.items()]
        kept += len(samples) - len(reasons)
        shards.append(
            {"file": file, "task": task, "split": split, "lang": lang, "count": len(samples), "sha256": digest}
        )
    n_excluded = sum(1 for s in skipped if s["reason"] == EXCLUDED)
    check = "not checked (--exclude none)" if not excluded else f"{len(excluded)} test images"
    earlier = _earlier_index(out, {s["file"] for s in shards}, task)
    printed = (len(shards), sum(s["count"] for s in shards), kept)
    shards = earlier["shards"] + shards
    drop = {**earlier["drop"], **drop}
    skipped = earlier["skipped"] + skipped
    kept += earlier["kept"]
    counts: dict[str, dict[str, int]] = {}
    for shard in shards:
        counts.setdefault(shard["split"], {}).setdefault(shard["lang"], 0)
        counts[shard["split"]][shard["lang"]] += shard["count"]
    manifest = {
        "writer_version": 1,
        "dataset": FORMAT,
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tasks": {
            task: {"label_names": [], "label_map": {}},
            MATCHING_TASK: {"label_names": list(get_task(MATCHING_TASK).labels), "label_map": {}},
        },
        # every tar is listed once per task (the loader selects shards by task): `verify` reads it twice
        "shards": shards + [{**s, "task": MATCHING_TASK} for s in shards],
        "counts": counts,
        "sources": earlier["sources"] + [x for x in sources if x not in earlier["sources"]],
        "skipped": skipped,
        FORMAT: {
            "src": earlier["src"] + [str(src)],
            "kept": kept,
            "drop": drop,
            "xflickrco_exclusion": earlier["exclusion"]
            + [{"src": str(src), "checked_against": check, "excluded": n_excluded}],
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    n_tars, total, kept = printed
    print(
        f"img2dataset: indexed {n_tars} tars under {src} in place: {total} samples, {kept} kept; "
        f"{n_excluded} dropped as xFlickr&CO test images ({check}), "
        f"{len(skipped) - n_excluded} without image or caption; manifest: {out / MANIFEST}"
    )
    return manifest


def _earlier_index(out: Path, files: set[str], task: str) -> dict[str, Any]:
    """What an earlier run wrote into ``out`` (another img2dataset folder, another language), minus the tars indexed
    again now: one index can hold COCO and Flickr30k train, or captions in several languages."""
    empty: dict[str, Any] = {
        "shards": [],
        "drop": {},
        "skipped": [],
        "kept": 0,
        "sources": [],
        "src": [],
        "exclusion": [],
    }
    if not (out / MANIFEST).is_file():
        return empty
    old = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if old.get("format") != FORMAT or task not in old.get("tasks", {}):
        held = f"{old.get('dataset')}, tasks {sorted(old.get('tasks', {}))}"
        raise ValueError(f"--out {out} holds another index ({held}); choose another --out for the {task} captions")
    info = old[FORMAT]
    drop = {f: keys for f, keys in info["drop"].items() if f not in files}
    return {
        "shards": [s for s in old["shards"] if s["file"] not in files and s["task"] == task],
        "drop": drop,
        "skipped": [s for s in old["skipped"] if s["key"].rsplit(":", 1)[0] not in files],
        "kept": sum(s["count"] for s in old["shards"] if s["file"] not in files and s["task"] == task)
        - sum(map(len, drop.values())),
        "sources": old["sources"],
        "src": info["src"],
        "exclusion": info["xflickrco_exclusion"],
    }


def _sha256(path: Path) -> str:
    return "" if path.is_dir() else sha256_file(path)


def img2dataset(**kwargs: Any) -> dict:
    """img2dataset's WebDataset output (``<n>.tar`` with ``<key>.jpg``, ``<key>.txt`` caption, ``<key>.json``), indexed
    in place: only ``manifest.json`` is written (tasks ``captions`` and ``captions_itm``), no image is copied.

    ``--src`` the img2dataset output folder; ``--exclude`` (required, repeatable) the xFlickr&CO test set: its
    shard directory or IGLUE's xFlickrCO annotation ``.jsonl`` files (``none``: no check); ``--lang`` (default en)
    and ``--split`` (default train) for every tar of the folder; run again with another folder and the same
    ``--out`` to add it (COCO and Flickr30k train, or captions in another language)."""
    fields = kwargs.get("fields") or {}
    if not kwargs.get("src"):
        raise ValueError("--src is required: the img2dataset output folder (the .tar files)")
    return index_img2dataset(
        kwargs["src"],
        kwargs["out"],
        exclude=kwargs.get("exclude") or (),
        split=kwargs.get("split") or "train",
        lang=kwargs.get("lang") or "en",
        task=fields.get("task", DEFAULT_TASK),
    )
