"""Stand-in source files in each dataset's released format, written by the project (``study.py --rehearse``,
tests): they let the documented ``python -m shards build`` commands run end to end without the real data.

- ``iglue_images``: a placeholder picture for every image the IGLUE annotation files name, in each source's own
  folder layout (Flickr30k, COCO val2014, GQA, MaRVL, NLVR2, WIT).
- ``complete_iglue_tree``: a copy of an IGLUE ``datasets/`` tree; files the tree lacks (a cut release leaves out
  those over 4 MiB: GQA train/valid, NLVR2 train, Flickr30k train, WIT train) are written in the released format
  from the records of a sibling file, each listed in ``STANDINS.md`` beside them.
- ``WRITERS``: English intermediate/target datasets that IGLUE does not ship (MultiNLI, VQAv2, COCO Karpathy,
  img2dataset caption folders), as synthetic records in the published file formats.

Nothing here is real data: sentences are templated, pictures are flat colours.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

COLOURS = ("red", "green", "blue", "yellow", "black", "white")
THINGS = ("dog", "cat", "bus", "tree", "boat", "chair")
PLACES = ("on the grass", "in the street", "near the water", "inside a room")


def placeholder(path: Path, png: bool = False, shade: int = 0) -> None:
    """A small flat-colour picture at ``path`` (JPEG, or PNG), unless a file is there."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (40 + shade % 200, 90, 160)).save(buf, format="PNG" if png else "JPEG")
    path.write_bytes(buf.getvalue())


def open_text(path: Path) -> str:
    """A text file, or the first member of a ``.zip`` (IGLUE zips single files)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            return archive.read(archive.namelist()[0]).decode("utf-8")
    return path.read_text(encoding="utf-8")


def jsonl_rows(folder: Path, *patterns: str) -> Iterator[dict]:
    for pattern in patterns:
        for path in sorted(folder.rglob(pattern)):
            yield from (json.loads(line) for line in open_text(path).splitlines() if line.strip())


# ----------------------------------------------------------------------------------------------- IGLUE


def iglue_images(root: Path, out: Path) -> None:
    """Placeholder images for every image the IGLUE tree ``root`` names, below ``out`` in the layout of
    docs/real_data.md's image roots (``flickr30k/flickr30k_images``, ``coco/val2014``, ``gqa/images``,
    ``marvl-images``, ``nlvr2/images``, ``wit/images``)."""
    flickr, coco = out / "flickr30k/flickr30k_images", out / "coco/val2014"
    for row in jsonl_rows(root / "XVNLI", "*.jsonl", "*.jsonl.zip"):
        placeholder(flickr / f"{row['Flikr30kID']}.jpg")
    for folder in (root / "xFlickrCO", root / "flickr30k"):
        for row in jsonl_rows(folder, "*.jsonl"):
            placeholder((coco if row["img_path"].startswith("COCO_") else flickr) / row["img_path"])
    gqa_files = [*(root / "xGQA").rglob("*.json"), *(root / "gqa").rglob("*.json"), *(root / "gqa").rglob("*.json.zip")]
    for path in gqa_files:
        if path.name.startswith("trainval_"):
            continue
        data = json.loads(open_text(path))
        ids = [q["imageId"] for q in data.values()] if isinstance(data, dict) else [q["img_id"] for q in data]
        for image_id in ids:
            placeholder(out / "gqa/images" / f"{image_id}.jpg")
    for row in jsonl_rows(root / "marvl", "*.jsonl"):
        lang_root = out / "marvl-images" / row["language"] / "images"
        for side in ("left_img", "right_img"):
            name = row[side]  # few-shot names carry their concept folder, zero-shot ones do not
            placeholder(lang_root / (name if "/" in name else f"{row['concept']}/{name}"))
    for row in jsonl_rows(root / "nlvr2", "*.jsonl"):
        identifier = row["identifier"]
        folder = out / "nlvr2/images" / identifier.split("-")[0]
        if identifier.startswith("train"):  # the release spreads train over train/0 .. train/99
            folder = folder / str(row.get("directory", sum(map(ord, identifier)) % 100))
        for i in (0, 1):
            placeholder(folder / f"{identifier.rsplit('-', 1)[0]}-img{i}.png", png=True)
    for row in jsonl_rows(root / "wit", "*.jsonl", "*.jsonl.zip"):
        name = unquote(Path(urlparse(row["image_url"]).path).name)
        is_jpeg = name.lower().endswith((".jpg", ".jpeg"))
        placeholder(out / "wit/images" / (name if is_jpeg else Path(name).stem + ".png"), png=not is_jpeg)


def _write_zip(path: Path, member: str, text: str) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, text)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _gqa_split(rows: list[dict], prefix: str) -> list[dict]:
    return [dict(r, question_id=f"{prefix}{r['question_id']}") for r in rows]


def _nlvr2_train(rows: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        identifier = "train-" + r["identifier"].split("-", 1)[1]
        out.append(dict(r, identifier=identifier, directory=i % 100))
    return out


# file the cut tree may lack -> (sibling it is written from, how)
TREE_STANDINS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "gqa/annotations/train.json.zip": ("gqa/annotations/testdev.json", lambda src, dst: _write_zip(
        dst, "train.json", json.dumps(_gqa_split(json.loads(src.read_text()), "900"), indent=1))),
    "gqa/annotations/valid.json": ("gqa/annotations/testdev.json", lambda src, dst: dst.write_text(
        json.dumps(_gqa_split(json.loads(src.read_text()), "800"), indent=1))),
    "nlvr2/annotations/train.jsonl": ("nlvr2/annotations/dev.jsonl", lambda src, dst: dst.write_text(
        _jsonl(_nlvr2_train([json.loads(x) for x in src.read_text().splitlines() if x.strip()])))),
    "flickr30k/annotations/train_ann.jsonl": ("flickr30k/annotations/valid_ann.jsonl",
                                              lambda src, dst: shutil.copyfile(src, dst)),
    "wit/annotations/train_en.jsonl.zip": ("wit/annotations/val_en.jsonl",
                                           lambda src, dst: _write_zip(dst, "train_en.jsonl", src.read_text())),
}  # fmt: skip


def complete_iglue_tree(root: Path, out: Path) -> list[str]:
    """Copy the IGLUE ``datasets/`` tree ``root`` to ``out`` and write the files of ``TREE_STANDINS`` it lacks
    (listed in ``out/STANDINS.md``). Returns the relative paths written."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(root, out)
    written = []
    for rel, (sibling, write) in TREE_STANDINS.items():
        if (out / rel).exists() or not (out / sibling).is_file():
            continue
        write(out / sibling, out / rel)
        written.append(f"| `{rel}` | stand-in: the records of `{sibling}` in its own format, renamed ids |")
    if written:
        (out / "STANDINS.md").write_text("# Files written by mmstilts' rehearsal (not in the tree given)\n\n"
                                         "| file | what |\n| --- | --- |\n" + "\n".join(written) + "\n")  # fmt: skip
    return [w.split("`")[1] for w in written]


# ----------------------------------------------------------------------------------------------- English sets


def _sentence(i: int) -> str:
    return f"A {COLOURS[i % 6]} {THINGS[(i // 6) % 6]} is {PLACES[(i // 36) % 4]}."


def write_mnli(src: Path, images: Path | None, n: int = 48) -> None:
    """MultiNLI 1.0: ``multinli_1.0_{train,dev_matched}.jsonl``."""
    src.mkdir(parents=True, exist_ok=True)
    labels = ("entailment", "neutral", "contradiction")
    for split, size in (("train", n), ("dev_matched", n // 4)):
        rows = []
        for i in range(size):
            label = labels[i % 3]
            second = {"entailment": f"There is a {THINGS[(i // 6) % 6]}.", "neutral": "It is a sunny day.",
                      "contradiction": "There is nothing at all."}[label]  # fmt: skip
            rows.append({"annotator_labels": [label], "genre": "fiction", "gold_label": label,
                         "pairID": f"{split}{i}{label[0]}", "promptID": f"{split}{i}", "sentence1": _sentence(i),
                         "sentence2": second})  # fmt: skip
        (src / f"multinli_1.0_{split}.jsonl").write_text(_jsonl(rows))


def write_vqav2(src: Path, images: Path | None, n: int = 48) -> None:
    """VQAv2: ``v2_OpenEnded_mscoco_<sub>_questions.json`` + ``v2_mscoco_<sub>_annotations.json`` (train2014,
    val2014), pictures ``<images>/<sub>/COCO_<sub>_<id>.jpg``. Answers repeat so that the default answer
    vocabulary (answers seen >= 9 times) keeps them."""
    src.mkdir(parents=True, exist_ok=True)
    for sub, size in (("train2014", n), ("val2014", n // 2)):
        questions, annotations = [], []
        for i in range(size):
            image_id, qid = 1000 + i // 2, (1000 + i) * 10
            answer = ("yes", "no", "2")[i % 3]
            questions.append({"image_id": image_id, "question": f"Is there a {THINGS[i % 6]}?", "question_id": qid})
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": "is there",
                                "answer_type": "other", "multiple_choice_answer": answer,
                                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1}
                                            for k in range(10)]})  # fmt: skip
            if images is not None:
                placeholder(images / sub / f"COCO_{sub}_{image_id:012d}.jpg", shade=image_id)
        (src / f"v2_OpenEnded_mscoco_{sub}_questions.json").write_text(json.dumps(
            {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": sub, "questions": questions}))
        (src / f"v2_mscoco_{sub}_annotations.json").write_text(json.dumps(
            {"data_subtype": sub, "data_type": "mscoco", "annotations": annotations}))


def write_karpathy(path: Path, images: Path | None, n: int = 24, dataset: str = "coco") -> None:
    """Karpathy's ``dataset_<coco|flickr30k>.json``: one entry per image with five sentences and its split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        split = "train" if i < n * 2 // 3 else ("val" if i % 2 else "test")
        sub = "train2014" if split == "train" else "val2014"
        name = f"COCO_{sub}_{2000 + i:012d}.jpg" if dataset == "coco" else f"{3000 + i}.jpg"
        sentences = [{"raw": _sentence(i + k), "tokens": _sentence(i + k).lower().rstrip(".").split(),
                      "imgid": i, "sentid": 5 * i + k} for k in range(5)]  # fmt: skip
        entry = {"filename": name, "imgid": i, "split": split, "sentences": sentences,
                 "sentids": [5 * i + k for k in range(5)]}  # fmt: skip
        if dataset == "coco":
            entry |= {"filepath": sub, "cocoid": 2000 + i}
        entries.append(entry)
        if images is not None:
            placeholder(images / (sub if dataset == "coco" else "") / name, shade=i)
    path.write_text(json.dumps({"dataset": dataset, "images": entries}))


def write_img2dataset(src: Path, images: Path | None, n: int = 24) -> None:
    """img2dataset ``--output_format webdataset``: ``<shard>.tar`` of ``<key>.jpg/.txt/.json`` + ``_stats.json``."""
    src.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src / "00000.tar", "w") as tar:
        for i in range(n):
            key = f"{i:09d}"
            buf = io.BytesIO()
            Image.new("RGB", (16, 12), (30 + 8 * i % 200, 120, 60)).save(buf, format="JPEG")
            meta = {"url": f"https://example.org/img/{key}.jpg", "key": key, "status": "success", "width": 16,
                    "height": 12, "caption": _sentence(i)}  # fmt: skip
            for name, data in ((f"{key}.jpg", buf.getvalue()), (f"{key}.txt", _sentence(i).encode()),
                               (f"{key}.json", json.dumps(meta).encode())):  # fmt: skip
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (src / "00000_stats.json").write_text(json.dumps({"successes": n}))


WRITERS: dict[str, Callable[[Path, Path | None], None]] = {
    "mnli": write_mnli,
    "vqav2": write_vqav2,
    "coco": write_karpathy,
    "img2dataset": write_img2dataset,
}
"""Dataset (``python -m shards build <dataset>``) -> writer of a stand-in ``--src`` (and its ``--images``)."""
