"""Summarise a shard directory: counts per split and language, label distribution, one sample."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image

from shards.manifest import load_manifest, tar_samples

FIELD_WIDTH = 160  # characters of each sample field shown
MAX_SAMPLES_PER_SPLIT = 20_000  # label counts read only JSON members, but whole tars still stream past


def iter_json(path: Path) -> Iterator[tuple[str, dict]]:
    """(key, sample json) for every sample in a tar, in order (only the json members are read)."""
    for sample in tar_samples(path, keep=lambda name: name.endswith(".json")):
        if "json" in sample:
            yield sample["__key__"], json.loads(sample["json"])


def _label_names(sample: dict, names: list[str]) -> list[str]:
    """The label(s) of one sample as names: class, top VQA answer, or every tag."""

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else str(i)

    if "tags" in sample:
        return [name(t) for t in sample["tags"]]
    if "labels" in sample:
        if not sample["labels"]:
            return ["<out of vocabulary>"]
        best = max(range(len(sample["labels"])), key=lambda i: sample.get("scores", [1] * len(sample["labels"]))[i])
        return [name(sample["labels"][best])]
    if "label" in sample:
        return [name(sample["label"])]
    return []


def label_distribution(manifest: dict, split: str, limit: int | None = MAX_SAMPLES_PER_SPLIT) -> dict[str, Counter]:
    """Per task, label name -> count over the first ``limit`` samples of ``split`` (None: every sample)."""
    dist: dict[str, Counter] = {}
    seen = 0
    for entry in manifest["shards"]:
        if entry["split"] != split:
            continue
        names = manifest["tasks"].get(entry["task"], {}).get("label_names", [])
        for _, sample in iter_json(Path(manifest["_dir"]) / entry["file"]):
            dist.setdefault(entry["task"], Counter()).update(_label_names(sample, names))
            seen += 1
            if limit is not None and seen >= limit:
                return dist
    return dist


def first_sample(path: Path) -> dict:
    """The first sample of a tar: key, json and the size of each image member."""
    first = next(tar_samples(path), None)
    if first is None:
        return {"images": {}}
    sample: dict = {"key": first["__key__"], "images": {}}
    for ext, data in first.items():
        if ext == "json":
            sample["json"] = json.loads(data)
        elif ext == "txt":  # img2dataset's caption
            sample["txt"] = data.decode("utf-8", errors="replace")
        elif not ext.startswith("__"):
            sample["images"][ext] = Image.open(io.BytesIO(data)).size
    return sample


def inspect_dir(
    directory: str | Path, echo: Callable[[str], None] = print, limit: int | None = MAX_SAMPLES_PER_SPLIT
) -> None:
    """Print the summary of one shard directory."""
    manifest = load_manifest(directory)
    echo(f"== {directory}: dataset {manifest['dataset']}, tasks {', '.join(manifest['tasks'])}")
    echo(f"   {len(manifest['shards'])} shards, written {manifest.get('created', '?')}")
    for split, langs in manifest["counts"].items():
        per_lang = ", ".join(f"{lang} {n}" for lang, n in langs.items())
        echo(f"   {split:<6} {sum(langs.values()):>7} samples  ({per_lang})")
    for split, langs in manifest["counts"].items():
        total = sum(langs.values())
        for task, counter in label_distribution(manifest, split, limit).items():
            if counter:
                top = ", ".join(f"{name} {n}" for name, n in counter.most_common(12))
                more = f", ... ({len(counter)} distinct)" if len(counter) > 12 else ""
                sampled = (
                    f" (the first {limit:,} of {total:,} samples: sampled; --all counts every one)"
                    if limit is not None and total > limit
                    else ""
                )
                echo(f"   labels {split}/{task}: {top}{more}{sampled}")
    if manifest.get("skipped"):
        echo(f"   skipped {len(manifest['skipped'])} records, e.g. {manifest['skipped'][0]}")
    if manifest["shards"]:
        sample = first_sample(Path(manifest["_dir"]) / manifest["shards"][0]["file"])
        echo(f"   sample {sample.get('key')}:")
        for field, value in (sample.get("json") or {}).items():
            text = json.dumps(value, ensure_ascii=False)
            echo(f"     {field}: {text if len(text) <= FIELD_WIDTH else text[: FIELD_WIDTH - 3] + '...'}")
        if "txt" in sample:
            echo(f"     txt: {sample['txt'][:FIELD_WIDTH]}")
        for name, (w, h) in sample["images"].items():
            echo(f"     image {name}: {w}x{h}")
