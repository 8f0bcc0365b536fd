"""What the benchmarks share: realistic photos and captions, their shards, a tokenizer, table printing."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

# Natural photographs scikit-image ships (no download); grey and synthetic images left out.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "stereo_motorcycle",
    "retina",
)
# COCO and Flickr30k sizes: 640×480 and 500×375 are the common ones.
SIZES = ((640, 480), (640, 427), (612, 459), (600, 450), (560, 420), (512, 384), (500, 375), (500, 333))
WORDS = (
    "a man woman child dog cat two three people group young old red blue green white black small large "
    "standing sitting riding walking playing holding looking running next to in on of the with near front "
    "street park beach field table kitchen room city water snow grass building car bike horse train bus "
    "shirt hat ball frisbee phone camera pizza sandwich plate bowl cup sign road tree sky"
).split()
BENCH_TASK = "demo_ve"  # an image + text classification task of the catalogue: the common case


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (floats with 2 decimals) under a title line."""

    def cell(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join(
        [f"\n{title}", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in body)]
    )


def _sources() -> list[Image.Image]:
    import skimage.data

    images = []
    for name in PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a photo that needs pooch/network is simply not used
            continue
        array = array[0] if isinstance(array, tuple) else array
        images.append(Image.fromarray(array).convert("RGB"))
    if not images:
        raise RuntimeError("no scikit-image sample photograph loads: `pip install scikit-image`")
    return images


def make_photos(out: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEG photos of 500×375 .. 640×480 (some portrait): random crops, flips and rescales of the
    scikit-image sample photographs, quality 90 like typical web images."""
    out.mkdir(parents=True, exist_ok=True)
    sources, rng, paths = _sources(), random.Random(seed), []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = rng.choice(SIZES)
        if rng.random() < 0.2:
            w, h = h, w
        scale = max(w / src.width, h / src.height) * rng.uniform(1.0, 1.6)
        img = src.resize((max(w, round(src.width * scale)), max(h, round(src.height * scale))), Image.BICUBIC)
        x, y = rng.randint(0, img.width - w), rng.randint(0, img.height - h)
        img = img.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = out / f"{i:05d}.jpg"
        img.save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def make_captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like English sentences of 8-24 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 24))).capitalize() + "." for _ in range(n)]


def write_text_model(out: Path, captions: Sequence[str]) -> Path:
    """The demo world's tokenizer trainer (BPE, fast) over the captions, with a tiny XLM-R config."""
    from shards.demo.text_model import save_text_model

    return save_text_model(out, captions)


def write_bench_shards(
    out: Path, photos: Sequence[Path], captions: Sequence[str], per_shard: int, max_side: int = 384
) -> Path:
    """The photos + captions as ``demo_ve`` training shards, images bounded at ``max_side`` (the real default)."""
    from contracts.catalogue import NLI_LABELS
    from shards.writer import build_shards

    records = [
        {
            "key": f"bench-{i:05d}",
            "split": "train",
            "lang": "en",
            "images": {"jpg": str(path)},
            "json": {"task": BENCH_TASK, "lang": "en", "id": i, "text": text, "label": i % 3},
        }
        for i, (path, text) in enumerate(zip(photos, captions))
    ]
    build_shards(
        out,
        records,
        dataset="bench",
        tasks={BENCH_TASK: {"label_names": list(NLI_LABELS), "label_map": {}}},
        max_per_shard=per_shard,
        max_side=max_side,
        progress=False,
    )
    return out
