"""Reading img2dataset's WebDataset output in place (indexed by ``python -m shards build img2dataset``).

An img2dataset sample is ``<key>.jpg`` + ``<key>.txt`` (caption) + ``<key>.json`` (url, status, sizes, extra
columns). :class:`Img2datasetSamples` sits where the ``SafeDecoder`` sits in a pipeline: it drops the samples the
manifest lists (xFlickr&CO test images, samples without image or caption), counting each as a skip under its
reason, and hands every other one to the decoder as a retrieval sample: ``texts`` = [the caption],
``image_id`` = the key, ``lang`` = the shard's language; or, for an image-text matching task (classification
family, labels mismatch/match: ``captions_itm``), as ``text`` + ``label``: half the images get the caption of
another image seen shortly before in the (shuffled) stream, so the fusion path learns whether text and image
belong together.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

from contracts.catalogue import get_task
from contracts.fields import family_fields
from datamodules.pipeline import SafeDecoder
from shards.manifest import shard_location

RECENT = 256  # captions kept for matching negatives
FORMAT = "img2dataset"  # manifest["format"] of an index written by shards/converters/img2dataset.py


class Img2datasetSamples:
    """img2dataset raw samples -> retrieval or image-text matching samples -> ``decoder`` (a picklable stage).

    Args:
        decoder: the task's ``SafeDecoder``; its ``count`` is also the ShardReader's, so drops and read
            problems are logged together (``data/skipped/<reason>``).
        manifest: the index's manifest (``load_manifest``), for each shard's language and dropped keys.
        task: the catalogue task these captions train (retrieval: captions; classification: captions_itm).
    """

    def __init__(self, decoder: SafeDecoder, manifest: dict[str, Any], task: str) -> None:
        self.decoder, self.task, self.count = decoder, task, decoder.count
        # a task whose samples carry a label is image-text matching (caption vs another image's), else retrieval
        self.matching = "label" in family_fields(get_task(task).family).required
        self.recent: deque[tuple[str, str]] = deque(maxlen=RECENT)  # (caption, image url) of earlier samples
        directory = manifest["_dir"]
        drop = manifest.get(FORMAT, {}).get("drop", {})
        self.lang = {str(shard_location(directory, s["file"])): s["lang"] for s in manifest["shards"]}
        self.drop = {str(shard_location(directory, file)): keys for file, keys in drop.items()}

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        return self.decoder(self.convert(src))

    def convert(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for raw in src:
            url, key = str(raw.get("__url__")), raw.get("__key__")
            reason = self.drop.get(url, {}).get(key)
            if reason:
                self.count(reason)
                continue
            yield self.as_task_sample(raw, url, key)

    def as_task_sample(self, raw: dict[str, Any], url: str, key: str) -> dict[str, Any]:
        """Caption from ``txt`` (else the json's ``caption``); a sample without one fails the decoder's field check."""
        try:
            meta = json.loads(raw["json"]) if "json" in raw else {}
        except ValueError:
            meta = {}
        caption = raw["txt"].decode("utf-8", errors="replace").strip() if "txt" in raw else meta.get("caption")
        record: dict[str, Any] = {"task": self.task, "lang": self.lang.get(url, "en"), "id": key, "image_id": key}
        if caption and self.matching:
            record.update(self.matching_fields(caption, str(meta.get("url", key)), key))
        elif caption:
            record["texts"] = [caption]
        sample = {k: v for k, v in raw.items() if k in ("__key__", "__url__", "jpg")}
        return {**sample, "json": json.dumps(record).encode("utf-8")}

    def matching_fields(self, caption: str, image: str, key: str) -> dict[str, Any]:
        """``text`` + ``label`` (1 match, 0 mismatch); a negative never comes from the same image (COCO lists an
        image once per caption) nor repeats the caption. The coin is seeded by the key: reproducible."""
        rng = random.Random(zlib.crc32(key.encode("utf-8")))
        negatives = [c for c, u in self.recent if u != image and c != caption]
        self.recent.append((caption, image))
        if negatives and rng.random() < 0.5:
            return {"text": rng.choice(negatives), "label": 0}
        return {"text": caption, "label": 1}


def adapt_decoder(manifest: dict[str, Any], task: str, decoder: SafeDecoder) -> SafeDecoder | Img2datasetSamples:
    """``decoder`` for a shard directory of ours; wrapped in :class:`Img2datasetSamples` for an img2dataset index."""
    return Img2datasetSamples(decoder, manifest, task) if manifest.get("format") == FORMAT else decoder
