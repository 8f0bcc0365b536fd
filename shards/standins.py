"""Stand-in source files in each dataset's released format, written by the project (``study.py --rehearse``,
tests): they let the documented ``python -m shards build`` commands run end to end without the real data.

- ``iglue_images``: a placeholder picture for every image the IGLUE annotation files name, in each source's own
  folder layout (Flickr30k, COCO val2014, GQA, MaRVL, NLVR2, WIT).
- ``complete_iglue_tree``: a copy of an IGLUE ``datasets/`` tree; files the tree lacks (a cut release leaves out
  those over 4 MiB: GQA train/valid, NLVR2 train, Flickr30k train, WIT train) are written in the released format
  from the records of a sibling file, each listed in ``STANDINS.md`` beside them.
- ``WRITERS``: datasets that IGLUE does not ship, as synthetic records in the published file formats: English
  intermediate/target sets (MultiNLI, VQAv2, COCO Karpathy, img2dataset caption folders, Phang et al.'s text
  tasks) and XTREME's multilingual targets (a few languages each, those the target's configs read included).

Nothing here is real data: sentences are templated, pictures are flat colours.

~630 lines: one short writer per released file format (about 40), listed in ``WRITERS``; each is read on its own
beside the converter it feeds, so they stay in one table rather than one module each.
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
    "gqa/annotations/train.json.zip": (
        "gqa/annotations/testdev.json",
        lambda src, dst: _write_zip(
            dst, "train.json", json.dumps(_gqa_split(json.loads(src.read_text()), "900"), indent=1)
        ),
    ),
    "gqa/annotations/valid.json": (
        "gqa/annotations/testdev.json",
        lambda src, dst: dst.write_text(json.dumps(_gqa_split(json.loads(src.read_text()), "800"), indent=1)),
    ),
    "nlvr2/annotations/train.jsonl": (
        "nlvr2/annotations/dev.jsonl",
        lambda src, dst: dst.write_text(
            _jsonl(_nlvr2_train([json.loads(x) for x in src.read_text().splitlines() if x.strip()]))
        ),
    ),
    "flickr30k/annotations/train_ann.jsonl": (
        "flickr30k/annotations/valid_ann.jsonl",
        lambda src, dst: shutil.copyfile(src, dst),
    ),
    "wit/annotations/train_en.jsonl.zip": (
        "wit/annotations/val_en.jsonl",
        lambda src, dst: _write_zip(dst, "train_en.jsonl", src.read_text()),
    ),
}


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
        (out / "STANDINS.md").write_text(
            "# Files written by mmstilts' rehearsal (not in the tree given)\n\n"
            "| file | what |\n| --- | --- |\n" + "\n".join(written) + "\n"
        )
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
            second = {
                "entailment": f"There is a {THINGS[(i // 6) % 6]}.",
                "neutral": "It is a sunny day.",
                "contradiction": "There is nothing at all.",
            }[label]
            rows.append(
                {
                    "annotator_labels": [label],
                    "genre": "fiction",
                    "gold_label": label,
                    "pairID": f"{split}{i}{label[0]}",
                    "promptID": f"{split}{i}",
                    "sentence1": _sentence(i),
                    "sentence2": second,
                }
            )
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
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "question_type": "is there",
                    "answer_type": "other",
                    "multiple_choice_answer": answer,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
                }
            )
            if images is not None:
                placeholder(images / sub / f"COCO_{sub}_{image_id:012d}.jpg", shade=image_id)
        (src / f"v2_OpenEnded_mscoco_{sub}_questions.json").write_text(
            json.dumps({"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": sub, "questions": questions})
        )
        (src / f"v2_mscoco_{sub}_annotations.json").write_text(
            json.dumps({"data_subtype": sub, "data_type": "mscoco", "annotations": annotations})
        )


def write_karpathy(path: Path, images: Path | None, n: int = 24, dataset: str = "coco") -> None:
    """Karpathy's ``dataset_<coco|flickr30k>.json``: one entry per image with five sentences and its split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        split = "train" if i < n * 2 // 3 else ("val" if i % 2 else "test")
        sub = "train2014" if split == "train" else "val2014"
        name = f"COCO_{sub}_{2000 + i:012d}.jpg" if dataset == "coco" else f"{3000 + i}.jpg"
        sentences = [
            {
                "raw": _sentence(i + k),
                "tokens": _sentence(i + k).lower().rstrip(".").split(),
                "imgid": i,
                "sentid": 5 * i + k,
            }
            for k in range(5)
        ]
        entry = {
            "filename": name,
            "imgid": i,
            "split": split,
            "sentences": sentences,
            "sentids": [5 * i + k for k in range(5)],
        }
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
            meta = {
                "url": f"https://example.org/img/{key}.jpg",
                "key": key,
                "status": "success",
                "width": 16,
                "height": 12,
                "caption": _sentence(i),
            }
            for name, data in (
                (f"{key}.jpg", buf.getvalue()),
                (f"{key}.txt", _sentence(i).encode()),
                (f"{key}.json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (src / "00000_stats.json").write_text(json.dumps({"successes": n}))


# ----------------------------------------------------------------------------------------------- text sets

# One small lexicon per language; item i is the same (colour, thing, city) in every language, so that the
# sentences of one index are translations of each other (BUCC, Tatoeba, XNLI's parallel items).
LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "c": ("red", "green", "blue", "yellow"),
        "t": ("dog", "cat", "bus", "tree", "boat", "chair"),
        "p": ("Oslo", "Lima", "Kyoto", "Quito"),
    },
    "de": {
        "c": ("rote", "grüne", "blaue", "gelbe"),
        "t": ("Hund", "Kater", "Bus", "Baum", "Kahn", "Stuhl"),
        "p": ("Oslo", "Lima", "Kyoto", "Quito"),
    },
    "es": {
        "c": ("rojo", "verde", "azul", "amarillo"),
        "t": ("perro", "gato", "autobús", "árbol", "barco", "sillón"),
        "p": ("Oslo", "Lima", "Kioto", "Quito"),
    },
    "fr": {
        "c": ("rouge", "vert", "bleu", "jaune"),
        "t": ("chien", "chat", "bus", "arbre", "bateau", "fauteuil"),
        "p": ("Oslo", "Lima", "Kyoto", "Quito"),
    },
    "ru": {
        "c": ("красный", "зелёный", "синий", "жёлтый"),
        "t": ("пёс", "кот", "автобус", "дуб", "корабль", "стул"),
        "p": ("Осло", "Лима", "Киото", "Кито"),
    },
    "fi": {
        "c": ("punainen", "vihreä", "sininen", "keltainen"),
        "t": ("koira", "kissa", "bussi", "puu", "vene", "tuoli"),
        "p": ("Oslo", "Lima", "Kioto", "Quito"),
    },
    "zh": {
        "c": ("红色", "绿色", "蓝色", "黄色"),
        "t": ("狗", "猫", "公共汽车", "树", "船", "椅子"),
        "p": ("奥斯陆", "利马", "京都", "基多"),
    },
}
# (statement, question about the city, entailed, neutral, contradicted) per language
PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "The {c} {t} is in {p}.",
        "Where is the {c} {t}?",
        "There is a {t}.",
        "The weather is cold.",
        "There is no {t} at all.",
    ),
    "de": (
        "Der {c} {t} ist in {p}.",
        "Wo ist der {c} {t}?",
        "Es gibt einen {t}.",
        "Das Wetter ist kalt.",
        "Es gibt gar keinen {t}.",
    ),
    "es": ("El {t} {c} está en {p}.", "¿Dónde está el {t} {c}?", "Hay un {t}.", "Hace frío.", "No hay ningún {t}."),
    "fr": ("Le {t} {c} est à {p}.", "Où est le {t} {c} ?", "Il y a un {t}.", "Il fait froid.", "Il n'y a aucun {t}."),
    "ru": (
        "{c} {t} находится в городе {p}.",
        "Где {c} {t}?",
        "Здесь есть {t}.",
        "Погода холодная.",
        "Здесь нет никакого {t}.",
    ),
    "fi": (
        "{c} {t} on kaupungissa {p}.",
        "Missä {c} {t} on?",
        "Siellä on {t}.",
        "Sää on kylmä.",
        "Siellä ei ole yhtään {t}.",
    ),
    "zh": ("{c}的{t}在{p}。", "{c}的{t}在哪里？", "有一个{t}。", "天气很冷。", "根本没有{t}。"),
}
NLI_LABELS = ("entailment", "neutral", "contradiction")


def _slots(lang: str, i: int) -> dict[str, str]:
    """Item ``i`` (0..95 distinct) in ``lang``: its colour, thing and city."""
    words = LEXICON[lang]
    return {"c": words["c"][i % 4], "t": words["t"][(i // 4) % 6], "p": words["p"][(i // 24) % 4]}


def _phrase(lang: str, kind: int, i: int) -> str:
    """``PHRASES[lang][kind]`` filled with item ``i``."""
    return PHRASES[lang][kind].format(**_slots(lang, i))


def _nli_pair(lang: str, i: int) -> tuple[str, str, str]:
    """(premise, hypothesis, label) for item ``i``: labels cycle through entailment, neutral, contradiction."""
    return _phrase(lang, 0, i), _phrase(lang, 2 + i % 3, i), NLI_LABELS[i % 3]


def _tsv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """GLUE/PAWS-X style: tab-separated, no quoting, a header line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header, *rows]), encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_jsonl(rows), encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


SIZES = {"train": 48, "dev": 12, "test": 12}


def write_xnli(src: Path, images: Path | None, langs: tuple[str, ...] = ("en", "de", "es", "zh")) -> None:
    """XNLI 1.0: ``xnli.{dev,test}.jsonl``, every language's rows in one file, one ``pairID`` per item across
    languages."""
    for split in ("dev", "test"):
        rows = []
        for lang in langs:
            for i in range(SIZES[split]):
                premise, hypothesis, label = _nli_pair(lang, i + (50 if split == "test" else 0))
                rows.append(
                    {
                        "annotator_labels": [label] * 5,
                        "genre": "travel",
                        "gold_label": label,
                        "language": lang,
                        "match": "True",
                        "pairID": str(i + 1),
                        "promptID": str(i // 3 + 1),
                        "sentence1": premise,
                        "sentence1_tokenized": premise,
                        "sentence2": hypothesis,
                        "sentence2_tokenized": hypothesis,
                    }
                )
        _write_jsonl(src / f"xnli.{split}.jsonl", rows)


def write_anli(src: Path, images: Path | None) -> None:
    """ANLI v1.0: ``R{1,2,3}/{train,dev,test}.jsonl`` (``uid``, ``context``, ``hypothesis``, ``e``/``n``/``c``)."""
    for r in (1, 2, 3):
        for split in ("train", "dev", "test"):
            rows = []
            for i in range(SIZES[split] // 3 + 1):
                premise, hypothesis, label = _nli_pair("en", i + r)
                rows.append(
                    {
                        "uid": f"{r:02x}{split[:2]}{i:04x}-anli-0000-0000-{i:012x}",
                        "context": premise,
                        "hypothesis": hypothesis,
                        "label": label[0],
                        "model_label": "e",
                        "emturk": False,
                        "genre": "",
                        "reason": "",
                        "tag": "",
                    }
                )
            _write_jsonl(src / f"R{r}" / f"{split}.jsonl", rows)


def write_qqp(src: Path, images: Path | None) -> None:
    """GLUE QQP: ``{train,dev}.tsv`` (id, qid1, qid2, question1, question2, is_duplicate), ``test.tsv`` unlabelled."""
    for n, split in enumerate(("train", "dev", "test")):
        rows = []
        for i in range(SIZES[split]):
            id_, question = 1000 * n + i, _phrase("en", 1, i)
            other = question.replace("Where is", "In which city is") if i % 2 else _phrase("en", 1, i + 7)
            labelled = [id_, 2 * id_, 2 * id_ + 1, question, other, i % 2]
            rows.append([id_, question, other] if split == "test" else labelled)
        header = (
            ["id", "question1", "question2"]
            if split == "test"
            else ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
        )
        _tsv(src / f"{split}.tsv", header, rows)


def write_sst2(src: Path, images: Path | None) -> None:
    """GLUE SST-2: ``{train,dev}.tsv`` (sentence, label), ``test.tsv`` (index, sentence); tokenised, lower case."""
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(SIZES[split]):
            verdict = ("a dull , tired film about a {t} . ", "a warm and clever film about a {t} . ")[i % 2]
            text = verdict.format(**_slots("en", i))
            rows.append([i, text] if split == "test" else [text, i % 2])
        _tsv(src / f"{split}.tsv", ["index", "sentence"] if split == "test" else ["sentence", "label"], rows)


def write_pawsx(src: Path, images: Path | None, langs: tuple[str, ...] = ("en", "de", "es", "zh")) -> None:
    """PAWS-X ``x-final/<lang>/``: ``train.tsv`` (English) or ``translated_train.tsv``, ``dev_2k.tsv``,
    ``test_2k.tsv`` (id, sentence1, sentence2, label: 1 = paraphrase)."""
    for lang in langs:
        train = ("train", SIZES["train"]) if lang == "en" else ("translated_train", 12)
        files = dict([train, ("dev_2k", 12), ("test_2k", 12)])
        for name, size in files.items():
            rows = []
            for i in range(size):
                first = _phrase(lang, 0, i)
                second = first if i % 2 else _phrase(lang, 0, i + 1)
                rows.append([i + 1, first, second, i % 2])
            _tsv(src / lang / f"{name}.tsv", ["id", "sentence1", "sentence2", "label"], rows)


def _squad_article(
    lang: str, ids: Iterator[str], n: int, first: int, answers: int = 1, impossible: bool = False
) -> dict:
    """A SQuAD-format article: one paragraph per item, one question whose answer (the city) is in the context;
    with ``impossible`` every third question asks about a thing the paragraph does not have (SQuAD v2.0)."""
    paragraphs = []
    for i in range(first, first + n):
        context = f"{_phrase(lang, 0, i)} {_phrase(lang, 3, i)}"
        city = _slots(lang, i)["p"]
        answer = {"text": city, "answer_start": context.index(city)}
        assert context[answer["answer_start"] :].startswith(city), (context, answer)
        qa = {"id": next(ids), "question": _phrase(lang, 1, i), "answers": [answer] * answers}
        if impossible:
            unanswerable = i % 3 == 2
            qa["is_impossible"] = unanswerable
            if unanswerable:
                qa |= {"question": _phrase(lang, 1, i + 1), "answers": [], "plausible_answers": [answer]}
        paragraphs.append({"context": context, "qas": [qa]})
    return {"title": f"Item_{first}", "paragraphs": paragraphs}


def _qids(prefix: str = "") -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{prefix}{n:024x}"


def write_squad(src: Path, images: Path | None) -> None:
    """SQuAD (rajpurkar.github.io/SQuAD-explorer): ``{train,dev}-v1.1.json`` and ``{train,dev}-v2.0.json`` in one
    folder; dev questions carry three (here identical) annotator answers."""
    for version, impossible in (("1.1", False), ("2.0", True)):
        for split, answers in (("train", 1), ("dev", 3)):
            ids = _qids(f"{version[0]}{split[0]}")
            articles = [_squad_article("en", ids, SIZES[split] // 2, k * 50, answers, impossible) for k in (0, 1)]
            _write_json(
                src / f"{split}-v{version}.json",
                {"version": f"v{version}" if impossible else version, "data": articles},
            )


def write_xquad(src: Path, images: Path | None, langs: tuple[str, ...] = ("en", "de", "es", "zh")) -> None:
    """XQuAD: ``xquad.<lang>.json`` (SQuAD format, the same question ids in every language)."""
    for lang in langs:
        _write_json(src / f"xquad.{lang}.json", {"data": [_squad_article(lang, _qids("x"), 12, 0)], "version": "1.1"})


def write_mlqa(src: Path, images: Path | None, langs: tuple[str, ...] = ("en", "de", "es", "zh")) -> None:
    """MLQA v1: ``{dev,test}/{dev,test}-context-<l>-question-<q>.json``; same-language files plus one
    cross-language (G-XLT) pair, which XTREME leaves out."""
    for split in ("dev", "test"):
        for lang in langs:
            data = {"data": [_squad_article(lang, _qids("m"), 12, 20)], "version": 1.0}
            _write_json(src / split / f"{split}-context-{lang}-question-{lang}.json", data)
        _write_json(
            src / split / f"{split}-context-de-question-en.json",
            {"data": [_squad_article("de", _qids("g"), 4, 20)], "version": 1.0},
        )


TYDI_NAMES = {"en": "english", "fi": "finnish", "ru": "russian"}


def write_tydiqa(src: Path, images: Path | None, langs: tuple[str, ...] = ("en", "fi", "ru")) -> None:
    """TyDiQA-GoldP v1.1: ``tydiqa-goldp-v1.1-train.json`` (every language, ids ``<language>-<hash>-<n>``) and the
    dev archive's ``tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-<language>.json``."""
    train = []
    for lang in langs:
        ids = (f"{TYDI_NAMES[lang]}-{-(10**18 + k) if k % 2 else 10**18 + k}-0" for k in range(1000))
        train.append(_squad_article(lang, ids, 48 if lang == "en" else 12, 0))
        dev = _squad_article(lang, (f"{TYDI_NAMES[lang]}-{2 * 10**18 + k}-0" for k in range(1000)), 12, 60)
        _write_json(
            src / "tydiqa-goldp-v1.1-dev" / f"tydiqa-goldp-dev-{TYDI_NAMES[lang]}.json",
            {"data": [dev], "version": "1.1"},
        )
    _write_json(src / "tydiqa-goldp-v1.1-train.json", {"data": train, "version": "1.1"})


def write_hellaswag(src: Path, images: Path | None) -> None:
    """HellaSwag: ``hellaswag_{train,val,test}.jsonl`` (``ctx`` = ``ctx_a`` + ``ctx_b``, four ``endings``,
    ``label`` absent on test)."""
    for n, split in enumerate(("train", "val", "test")):
        rows = []
        for i in range(SIZES["dev" if split == "val" else split]):
            slots = _slots("en", i)
            endings = [f"walks to {slots['p']}.", f"turns {slots['c']}.", "sings a song.", "falls asleep."]
            ctx_a = f"A {slots['c']} {slots['t']} stands in the street."
            row = {
                "ind": 1000 * n + i,
                "activity_label": "Walking",
                "ctx_a": ctx_a,
                "ctx_b": "it",
                "ctx": f"{ctx_a} it",
                "split": split,
                "split_type": "indomain",
                "source_id": f"activitynet~v_stand{i}",
                "endings": endings[i % 4 :] + endings[: i % 4],
            }
            if split != "test":
                row["label"] = (4 - i % 4) % 4  # where "walks to <city>" landed
            rows.append(row)
        _write_jsonl(src / f"hellaswag_{split}.jsonl", rows)


def write_cosmosqa(src: Path, images: Path | None) -> None:
    """CosmosQA: ``train.csv``, ``valid.csv`` (quoted CSV with a header) and ``test.jsonl`` (no labels)."""
    import csv

    src.mkdir(parents=True, exist_ok=True)
    header = ["id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"]
    for split in ("train", "valid", "test"):
        rows = []
        for i in range(SIZES["dev" if split == "valid" else split]):
            slots = _slots("en", i)
            answers = [f"It went to {slots['p']}.", "None of the above choices .", 'It said "no".', "It slept."]
            rows.append(
                {
                    "id": f"3STAND{split}{i:06d}##q1_a1##3STANDQ{i:06d}",
                    "context": f'A {slots["c"]} {slots["t"]} left home, and it said "goodbye".',
                    "question": "What may have happened next ?",
                    "label": i % 2,
                    **{f"answer{k}": a for k, a in enumerate(answers)},
                }
            )
        if split == "test":
            _write_jsonl(src / "test.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in rows])
            continue
        with (src / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)


def write_commonsenseqa(src: Path, images: Path | None) -> None:
    """CommonsenseQA v1.11: ``{train,dev}_rand_split.jsonl``, ``test_rand_split_no_answers.jsonl``; choices A-E
    (listed out of letter order here, as the converter must sort them)."""
    names = {"train": "train_rand_split", "dev": "dev_rand_split", "test": "test_rand_split_no_answers"}
    for split, name in names.items():
        rows = []
        for i in range(SIZES[split]):
            slots = _slots("en", i)
            texts = {"A": "kitchen", "B": slots["p"].lower(), "C": "roof", "D": "river", "E": "garden"}
            letters = ["C", "A", "E", "B", "D"]
            row = {
                "id": f"{split}{i:030x}",
                "question": {
                    "question_concept": slots["t"],
                    "stem": f"Where would you find the {slots['t']}?",
                    "choices": [{"label": x, "text": texts[x]} for x in letters],
                },
            }
            if split != "test":
                row["answerKey"] = "ABCDE"[i % 5]
            rows.append(row)
        _write_jsonl(src / f"{name}.jsonl", rows)


# (tokens, UPOS tags) templates per language; Spanish has a multi-word token (del = de + el)
UD_TEMPLATES: dict[str, tuple[str, str]] = {
    "en": ("The {c} {t} sleeps in {p} .", "DET ADJ NOUN VERB ADP PROPN PUNCT"),
    "de": ("Der {c} {t} schläft in {p} .", "DET ADJ NOUN VERB ADP PROPN PUNCT"),
    "es": ("El {t} {c} duerme cerca de el parque .", "DET NOUN ADJ VERB ADV ADP DET NOUN PUNCT"),
    "zh": ("{c} 的 {t} 在 {p} 睡觉 。", "NOUN PART NOUN ADP PROPN VERB PUNCT"),
}
UD_TREEBANKS = {"en": "UD_English-EWT", "de": "UD_German-GSD", "es": "UD_Spanish-GSD", "zh": "UD_Chinese-GSD"}


def _conllu_sentence(lang: str, sent_id: str, i: int) -> str:
    tokens = UD_TEMPLATES[lang][0].format(**_slots(lang, i)).split()
    tags = UD_TEMPLATES[lang][1].split()
    lines = [f"# sent_id = {sent_id}", f"# text = {' '.join(tokens)}"]
    for n, (token, tag) in enumerate(zip(tokens, tags), 1):
        if lang == "es" and token == "de":
            lines.append(f"{n}-{n + 1}\tdel\t_\t_\t_\t_\t_\t_\t_\t_")
        head, relation = (0, "root") if n == 4 else (4, "dep")
        lines.append(f"{n}\t{token}\t{token.lower()}\t{tag}\t_\t_\t{head}\t{relation}\t_\t_")
    return "\n".join(lines) + "\n\n"


def write_udpos(src: Path, images: Path | None) -> None:
    """Universal Dependencies: ``UD_<Language>-<Treebank>/<lang>_<treebank>-ud-{train,dev,test}.conllu`` for a few
    languages, plus a test-only English treebank (PUD) that merges into English test."""
    files = [(bank, lang, split) for lang, bank in UD_TREEBANKS.items() for split in ("train", "dev", "test")]
    for bank, lang, split in [*files, ("UD_English-PUD", "en", "test")]:
        code = f"{lang}_{bank.split('-')[1].lower()}"
        size = SIZES[split] if lang == "en" or split != "train" else 12
        text = "".join(_conllu_sentence(lang, f"{code}-{split}-{i:04d}", i) for i in range(size))
        path = src / bank / f"{code}-ud-{split}.conllu"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# newdoc id = {code}-{split}\n" + text, encoding="utf-8")


PANX_TEMPLATES: dict[str, tuple[str, str]] = {
    "en": ("Anna Berg works for Acme Corp in {p} .", "B-PER I-PER O O B-ORG I-ORG O B-LOC O"),
    "de": ("Anna Berg arbeitet für Acme AG in {p} .", "B-PER I-PER O O B-ORG I-ORG O B-LOC O"),
    "es": ("Anna Berg trabaja para Acme S.A. en {p} .", "B-PER I-PER O O B-ORG I-ORG O B-LOC O"),
    "zh": ("安娜 在 {p} 的 阿克米 公司 工作 。", "B-PER O B-LOC O B-ORG I-ORG O O"),
}


def write_panx(src: Path, images: Path | None) -> None:
    """PAN-X (WikiANN, XTREME's split): ``<lang>/{train,dev,test}`` (each ``<lang>.tar.gz`` unpacked), blank-line
    separated ``<lang>:<token><TAB><tag>`` lines."""
    for lang, (template, tags) in PANX_TEMPLATES.items():
        for split in ("train", "dev", "test"):
            size = SIZES[split] if lang == "en" or split != "train" else 12
            blocks = []
            for i in range(size):
                tokens = template.format(**_slots(lang, i)).split()
                blocks.append("".join(f"{lang}:{w}\t{t}\n" for w, t in zip(tokens, tags.split())))
            path = src / lang / split
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(blocks) + "\n", encoding="utf-8")


def write_ccg(src: Path, images: Path | None) -> None:
    """CCGbank as jiant preprocesses it: ``ccg.{train,dev,test}``, one sentence a line, ``tokens<TAB>tags``."""
    src.mkdir(parents=True, exist_ok=True)
    tags = "NP[nb]/N N/N N (S[dcl]\\NP)/PP PP/NP N ."
    for split in ("train", "dev", "test"):
        lines = [UD_TEMPLATES["en"][0].format(**_slots("en", i)) + f"\t{tags}\n" for i in range(SIZES[split])]
        (src / f"ccg.{split}").write_text("".join(lines), encoding="utf-8")


def write_bucc(src: Path, images: Path | None, langs: tuple[str, ...] = ("de", "fr", "ru", "zh")) -> None:
    """BUCC 2018 (sample and training archives with gold): ``<l>-en/<l>-en.{sample,training}.{<l>,en,gold}``,
    ``<id><TAB><sentence>`` lines; two thirds of each side have a partner in the gold file."""
    for lang in langs:
        for n, split in enumerate(("sample", "training")):
            size, base = 12, 20 * n
            ids = [f"{lang}-{100 * n + k:09d}" for k in range(size)]
            en_ids = [f"en-{100 * n + (k * 5) % size:09d}" for k in range(size)]  # partners in another order
            pairs = {k: k for k in range(size * 2 // 3)}
            own = [f"{ids[k]}\t{_phrase(lang, 0, base + k)}\n" for k in range(size)]
            english = [f"{en_ids[k]}\t{_phrase('en', 0, base + (k if k in pairs else k + 40))}\n" for k in range(size)]
            folder = src / f"{lang}-en"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{lang}-en.{split}.{lang}").write_text("".join(own), encoding="utf-8")
            (folder / f"{lang}-en.{split}.en").write_text("".join(sorted(english)), encoding="utf-8")
            (folder / f"{lang}-en.{split}.gold").write_text("".join(f"{ids[k]}\t{en_ids[k]}\n" for k in pairs))


def write_tatoeba(src: Path, images: Path | None, codes: tuple[str, ...] = ("deu", "spa", "cmn")) -> None:
    """Tatoeba (LASER ``data/tatoeba/v1``): ``tatoeba.<xxx>-eng.<xxx>`` and ``tatoeba.<xxx>-eng.eng``,
    line-aligned translations."""
    src.mkdir(parents=True, exist_ok=True)
    for code in codes:
        lang = {"deu": "de", "spa": "es", "cmn": "zh"}[code]
        (src / f"tatoeba.{code}-eng.{code}").write_text(
            "".join(_phrase(lang, 0, i) + "\n" for i in range(16)), encoding="utf-8"
        )
        (src / f"tatoeba.{code}-eng.eng").write_text("".join(_phrase("en", 0, i) + "\n" for i in range(16)))


WRITERS: dict[str, Callable[[Path, Path | None], None]] = {
    "mnli": write_mnli,
    "vqav2": write_vqav2,
    "coco": write_karpathy,
    "img2dataset": write_img2dataset,
    "xnli": write_xnli,
    "anli": write_anli,
    "qqp": write_qqp,
    "sst2": write_sst2,
    "pawsx": write_pawsx,
    "squad_v1": write_squad,  # one SQuAD folder holds v1.1 and v2.0
    "squad_v2": write_squad,
    "xquad": write_xquad,
    "mlqa": write_mlqa,
    "tydiqa": write_tydiqa,
    "hellaswag": write_hellaswag,
    "cosmosqa": write_cosmosqa,
    "commonsenseqa": write_commonsenseqa,
    "udpos": write_udpos,
    "panx": write_panx,
    "ccg": write_ccg,
    "bucc": write_bucc,
    "tatoeba": write_tatoeba,
}
"""Dataset (``python -m shards build <dataset>``) -> writer of a stand-in ``--src`` (and its ``--images``)."""
