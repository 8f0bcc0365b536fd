"""IGLUE test sets (Bugliarello et al. 2022; annotations in the ``e-bug/iglue`` repository, ``datasets/``).

Each reader takes ``--src`` as one annotation file or a folder searched recursively, infers split and language
from IGLUE's file layout (``annotations/<lang>/test.jsonl``, ``testdev_balanced_questions_<lang>.json``,
``marvl-<lang>.jsonl``, ``test_<lang>.jsonl``), and keeps IGLUE's scoring conventions (see each reader's docstring).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from contracts.catalogue import MARVL_LANGS, XFLICKRCO_LANGS, XGQA_LANGS, XVNLI_LANGS

from .common import (
    NLI_MAP,
    Conversion,
    Options,
    canonical_split,
    converter,
    find_files,
    first_existing,
    gmt_name,
    iglue_split,
    lang_from_path,
    make_key,
    map_label,
    need,
    read_json,
    read_jsonl,
    read_table,
    record,
    stem,
    task_entry,
    vocab_file,
)

MARVL_MAP = {"false": 0, "true": 1}  # the JSON booleans false / true

# ------------------------------------------------------------------------------------------- XVNLI / SNLI-VE


VE_FILES = ("*.jsonl", "*.jsonl.zip")


def ve_name(path: Path, lang: str | None) -> tuple[str, str | None]:
    """(split, language) of a visual-entailment file; ``lang`` is the folder's (``annotations/<lang>/``).

    ``test``, ``train_1``, ``dev``, ``train`` (also ``train.jsonl.zip``); ``snli_ve_train`` → ``train``;
    translate-test ``annotations_machine-translate/<lang>/test.jsonl`` → (translate_test, lang: the English
    translation of that language's test set); ``en/dev-ar_gmt.jsonl`` → (translate_dev, ar: English dev
    machine-translated into Arabic, for translate-train), as for NLVR2's ``dev-<lang>_gmt``.
    """
    translated = gmt_name(stem(path))
    if translated:
        return translated
    return ve_split(path), lang


def ve_split(path: Path) -> str:
    """``test``, ``train_1``, ``dev``; ``snli_ve_train`` → ``train``; translate-test files → ``translate_<split>``."""
    translated = gmt_name(stem(path))
    return translated[0] if translated else iglue_split(path, stem(path).removeprefix("snli_ve_"))


def ve_records(task: str, path: Path, split: str, lang: str, images: Path, skipped: list[dict]) -> list[dict]:
    """Visual entailment rows (SNLI-VE schema): image + hypothesis (``sentence2``) only, as IGLUE does.

    A ``gold_label`` of ``"-"`` (no annotator majority) stays as label -1 (scored as wrong) except in training
    splits, where it would have nothing to learn from and is skipped with its reason.
    """
    records = []
    for where, obj in read_jsonl(path):
        id_ = need(obj, where, "pairID")
        label = map_label(need(obj, where, "gold_label"), NLI_MAP, where, unlabelled=("-", ""))
        if label < 0 and split.startswith("train"):
            skipped.append({"key": make_key(split, lang, id_), "reason": "gold_label '-' in a training split"})
            continue
        image_id = need(obj, where, "Flikr30kID", "Flickr30K_ID")  # IGLUE's spelling, then SNLI-VE's
        fields = {"text": need(obj, where, "sentence2"), "text_pair": None, "label": label}
        records.append(record(task, split, lang, id_, fields, {"jpg": images / f"{image_id}.jpg"}))
    return records


def read_xvnli(opts: Options) -> Conversion:
    """XVNLI: ``annotations/<lang>/{test,train_N}.jsonl``, ``annotations_machine-translate/<lang>/test.jsonl``.

    Also IGLUE's English ``annotations/en/{train.jsonl.zip,dev.jsonl,dev-<lang>_gmt.jsonl}``.
    Images: Flickr30k, ``<images>/<Flikr30kID>.jpg``. Splits: test, train_N, dev, train, translate_test
    (``annotations_machine-translate``: English translations of <lang>'s test set), translate_dev
    (``en/dev-<lang>_gmt.jsonl``: English dev machine-translated into <lang>).
    """
    src = opts.need_src("the XVNLI annotations folder (or one of its .jsonl files)")
    images = opts.need_images("the Flickr30k images (<Flikr30kID>.jpg)")
    files, skipped, records = find_files(src, *VE_FILES), [], []
    for path in files:
        split, lang = ve_name(path, lang_from_path(path, XVNLI_LANGS, opts.lang))
        records += ve_records("xvnli", path, split, lang, images, skipped)
    return Conversion(records, task_entry("xvnli", NLI_MAP), files, skipped)


# -------------------------------------------------------------------------------------------- xGQA / GQA


def find_vocab(opts: Options, src: Path) -> Path:
    """``--field vocab=PATH``, else ``trainval_label2ans.json`` below ``--src``."""
    path = vocab_file(opts, src, "trainval_label2ans.json")
    if path is None:
        raise FileNotFoundError(
            f"No trainval_label2ans.json below {src}: pass --field vocab=<path to trainval_label2ans.json>, the "
            "1,842-answer GQA vocabulary as a JSON list (IGLUE's datasets/gqa/annotations/trainval_label2ans.json, "
            "or LXMERT's data/gqa/trainval_label2ans.json; the .pkl copies are not read: data files are never "
            "unpickled)."
        )
    return path


def load_label2ans(path: Path) -> list[str]:
    """An answer vocabulary stored as a JSON list (``trainval_label2ans.json``)."""
    vocab = read_json(path)
    if not isinstance(vocab, list) or not all(isinstance(a, str) for a in vocab):
        raise ValueError(f"{path}: expected a JSON list of answer strings (label2ans).")
    return vocab


def vqa_fields(question: str, answer: str | None, scores: dict[str, float], ans2label: dict[str, int]) -> dict:
    """VQA family fields; answers outside the vocabulary give empty ``labels``/``scores`` (scored as wrong)."""
    known = [(ans2label[a], s) for a, s in scores.items() if a in ans2label]
    return {"text": question, "answer": answer, "labels": [i for i, _ in known], "scores": [s for _, s in known]}


def gqa_items(path: Path) -> list[tuple[str, str, str, str, dict[str, float]]]:
    """``(where, question_id, image_id, question, {answer: score})`` from either GQA format.

    The original balanced-questions JSON (a dict keyed by question id, ``question``/``imageId``/``answer``;
    xGQA keeps this schema with translated questions and English answers) or the LXMERT/IGLUE list of
    ``{img_id, label: {answer: score}, question_id, sent}``.
    """
    data = read_json(path)
    if isinstance(data, dict):
        items = []
        for qid, obj in data.items():
            where = f"{path}: question {qid}"
            answer = obj.get("answer")
            scores = {} if answer is None else {answer: 1.0}
            items.append((where, qid, need(obj, where, "imageId"), need(obj, where, "question"), scores))
        return items
    if isinstance(data, list):
        items = []
        for i, obj in enumerate(data):
            where = f"{path}: item {i}"
            scores = obj.get("label") or {}
            items.append(
                (where, need(obj, where, "question_id"), need(obj, where, "img_id"), need(obj, where, "sent"), scores)
            )
        return items
    raise ValueError(f"{path}: expected a GQA questions dict or an LXMERT-style list, got {type(data).__name__}.")


def gqa_records(
    task: str, path: Path, split: str, lang: str, images: Path, ans2label: dict[str, int], oov: dict
) -> list[dict]:
    """GQA-schema questions as VQA records; counts out-of-vocabulary answers per split and language in ``oov``."""
    records = []
    for _, qid, image_id, question, scores in gqa_items(path):
        answer = max(scores, key=scores.get) if scores else None
        fields = vqa_fields(question, answer, scores, ans2label)
        if scores and not fields["labels"]:
            oov.setdefault(split, {}).setdefault(lang, 0)
            oov[split][lang] += 1
        records.append(record(task, split, lang, qid, fields, {"jpg": images / f"{image_id}.jpg"}))
    return records


GQA_FILES = ("*.json", "*.json.zip")
VOCAB_REASON = "answer vocabulary: trainval_label2ans.json (or --field vocab) is the one read"


def gqa_files(task: str, files: list[Path], name_of: Callable[[Path], tuple[str, str]]) -> tuple[dict, dict]:
    """``{(split, lang): file}`` to read and ``{file: reason}`` left out.

    IGLUE's ``gqa/annotations`` holds ``testdev`` twice, as LXMERT's ``testdev.json`` (soft answer scores) and
    GQA's original ``testdev_balanced_questions.json``: the LXMERT file is read and the other listed as ignored.
    Any other two files for one split are refused, naming both.
    """
    chosen: dict[tuple[str, str], Path] = {}
    ignored: dict[Path, str] = {}
    for path in files:
        if path.name.startswith("trainval_"):
            ignored[path] = VOCAB_REASON
            continue
        split, lang = name_of(path)
        other = chosen.get((split, lang))
        if other is None:
            chosen[split, lang] = path
            continue
        original = [p for p in (path, other) if "_balanced_questions" in p.name]
        if len(original) != 1:
            raise ValueError(f"{path} and {other} both hold {task} split {split!r} ({lang}); give one as --src.")
        kept = other if original[0] is path else path
        chosen[split, lang] = kept
        ignored[original[0]] = (
            f"GQA's original {split} file ({len(read_json(original[0]))} questions); "
            f"{kept.name} (LXMERT format, {len(read_json(kept))} questions) is read instead"
        )
    return chosen, ignored


def gqa_conversion(task: str, opts: Options, name_of: Callable[[Path], tuple[str, str]]) -> Conversion:
    """GQA and xGQA: every ``*.json`` (or ``*.json.zip``) below ``--src`` except the vocabulary files;
    ``name_of`` gives (split, lang)."""
    src = opts.need_src(f"the {task} question files (.json) or their folder")
    images = opts.need_images("the GQA images (<imageId>.jpg)")
    vocab_path = find_vocab(opts, src)
    vocab = load_label2ans(vocab_path)
    ans2label = {a: i for i, a in enumerate(vocab)}
    chosen, ignored = gqa_files(task, find_files(src, *GQA_FILES), name_of)
    records, oov = [], {}
    for (split, lang), path in chosen.items():
        records += gqa_records(task, path, split, lang, images, ans2label, oov)
    tasks = task_entry(task, label_names=vocab)
    tasks[task]["out_of_vocabulary"] = oov  # kept in the shards with empty labels, scored as wrong
    return Conversion(records, tasks, [vocab_path, *chosen.values()], ignored=ignored)


def xgqa_name(path: Path, lang: str | None) -> tuple[str, str]:
    """(split, lang) of an xGQA file; every file of the release gets its own split name.

    - zero-shot ``testdev_balanced_questions_<lang>.json`` → ``test``;
    - few-shot ``few_shot/<lang>/{train_N,dev,test}.json`` → ``train_N``, ``dev``, ``fs_test`` (the few-shot test
      set is a subset of the zero-shot one: kept apart so that both can be built from one folder);
    - ``annotations_machine-translate/``: the same names prefixed with ``translate_`` (``translate_test``,
      ``translate_fs_test``: questions machine-translated into English).
    """
    zero_shot = re.fullmatch(r"testdev_balanced_questions(?:_([a-z]{2}))?", stem(path))
    if zero_shot:
        split, lang = "test", zero_shot.group(1) or lang_from_path(path, XGQA_LANGS, lang or "en")
    else:
        split, lang = canonical_split(stem(path)), lang_from_path(path, XGQA_LANGS, lang)
        if split == "test" and "few_shot" in path.parts:
            split = "fs_test"
    return (f"translate_{split}" if "annotations_machine-translate" in path.parts else split), lang


def read_xgqa(opts: Options) -> Conversion:
    """xGQA: zero-shot ``testdev_balanced_questions_<lang>.json``, few-shot ``few_shot/<lang>/{train_N,dev,test}.json``.

    Splits: test (zero-shot), train_N, dev, fs_test (few-shot test), translate_test / translate_fs_test
    (``annotations_machine-translate``). Answers stay English and map onto GQA's 1,842 answers
    (``trainval_label2ans.json``: found below ``--src`` or given as ``--field vocab=PATH``).
    Images: ``<images>/<imageId>.jpg``.
    """
    return gqa_conversion("xgqa", opts, lambda p: xgqa_name(p, opts.lang))


# ------------------------------------------------------------------------------------------------- MaRVL


def marvl_name(path: Path) -> tuple[str, str | None]:
    """``marvl-zh`` → (test, zh); ``marvl-id_train10x2`` → (train_10x2, id); ``marvl-id_gmt`` → (translate_test, id)."""
    match = re.fullmatch(r"marvl-([a-z]+)(?:_(\w+))?", stem(path))
    if not match:
        return stem(path), None
    lang, rest = match.groups()
    split = re.sub(r"^([a-z]+)(\d)", r"\1_\2", rest or "test")
    return iglue_split(path, "test_gmt" if split == "gmt" else split), lang


def marvl_image(images: Path, lang: str, concept: str, name: str) -> Path:
    """Zero-shot names are bare (``82-6.jpg``, under ``<lang>/images/<concept>/``); few-shot ones carry the concept."""
    root = images / lang / "images"
    return first_existing([root / concept / name, root / name, images / concept / name, images / name])


def read_marvl(opts: Options) -> Conversion:
    """MaRVL: ``marvl-<lang>.jsonl`` (zero-shot test) and ``marvl-<lang>_train<N>.jsonl`` (few-shot).

    JSON boolean labels map to the binary order (false 0, true 1). Images:
    ``<images>/<lang>/images/<concept>/<left_img|right_img>``.
    """
    src = opts.need_src("the MaRVL annotation .jsonl files or their folder")
    images = opts.need_images("the MaRVL images (<lang>/images/<concept>/...)")
    files, records = find_files(src, "*.jsonl"), []
    for path in files:
        split, file_lang = marvl_name(path)
        for where, obj in read_jsonl(path):
            lang = obj.get("language") or file_lang or lang_from_path(path, MARVL_LANGS, opts.lang)
            label = need(obj, where, "label")
            if not isinstance(label, bool):
                raise ValueError(f"{where}: MaRVL label must be a JSON boolean, got {label!r}.")
            concept = need(obj, where, "concept")
            pair = {
                f"img{i}.jpg": marvl_image(images, lang, concept, need(obj, where, side))
                for i, side in enumerate(("left_img", "right_img"))
            }
            fields = {"text": need(obj, where, "caption"), "label": int(label)}
            records.append(record("marvl", split, lang, need(obj, where, "id"), fields, pair))
    return Conversion(records, task_entry("marvl", MARVL_MAP), files)


# --------------------------------------------------------------------------------------- retrieval (jsonl)


def retrieval_fields(texts: list[str], image_id: object) -> dict:
    return {"texts": list(texts), "image_id": str(image_id)}


def caption_records(task: str, path: Path, split: str, lang: str, image_of: Callable[[str], Path]) -> list[dict]:
    """IGLUE/VOLTA retrieval jsonl (``sentences``, ``id``, ``img_path``): one sample per image, id type kept."""
    records = []
    for where, obj in read_jsonl(path):
        id_ = need(obj, where, "id")
        fields = retrieval_fields(need(obj, where, "sentences"), id_)
        records.append(record(task, split, lang, id_, fields, {"jpg": image_of(need(obj, where, "img_path"))}))
    return records


def flickr_coco_image(opts: Options, images: Path) -> Callable[[str], Path]:
    """``COCO_val2014_…`` names under ``--field coco_images=DIR`` (else ``--images``), Flickr ones under
    ``--field flickr_images=DIR`` (else ``--images``)."""
    coco = Path(opts.fields.get("coco_images", images))
    flickr = Path(opts.fields.get("flickr_images", images))
    return lambda name: first_existing([(coco if name.startswith("COCO_") else flickr) / name, images / name])


def read_xflickrco(opts: Options) -> Conversion:
    """xFlickr&CO: ``xFlickrCO/annotations/<lang>/{test,train_N,train}.jsonl``, ``de/train_ann.jsonl``,
    ``annotations_machine-translate/<lang>/test_gmt.jsonl``.

    Splits: ``test``, ``train_N`` (few-shot, ``train_100x5``), ``train`` (``train.jsonl``, ``train_ann.jsonl``),
    ``translate_test``. Flickr30k ids stay strings, COCO ids ints (``img_path`` ``COCO_val2014_<12 digits>.jpg``).
    """
    src = opts.need_src("the xFlickrCO annotations folder (or one <lang>/test.jsonl)")
    images = opts.need_images("the Flickr30k and COCO val2014 images (see --field flickr_images/coco_images)")
    image_of = flickr_coco_image(opts, images)
    files, records = find_files(src, "*.jsonl"), []
    for path in files:
        lang = lang_from_path(path, XFLICKRCO_LANGS, opts.lang)
        split = iglue_split(path, stem(path).removesuffix("_ann"))
        records += caption_records("xflickrco", path, split, lang, image_of)
    return Conversion(records, task_entry("xflickrco"), files)


# --------------------------------------------------------------------------------------------------- WIT


def wit_name(path: Path, lang: str | None) -> tuple[str, str]:
    """``test_ja`` → (test, ja); ``val_en`` → (dev, en); ``test_ar_gmt`` → (translate_test, ar)."""
    match = re.fullmatch(r"([a-z]+)_([a-z]{2})(_gmt)?", stem(path))
    if match:
        return iglue_split(path, match.group(1) + (match.group(3) or "")), match.group(2)
    if lang is None:
        raise ValueError(f"{path}: expected a name like test_<lang>.jsonl; pass --lang and --split.")
    return iglue_split(path, stem(path)), lang


def load_image_map(path: Path) -> dict[str, str]:
    """``--field image_map=PATH``: JSON object or two-column TSV/CSV, from ``wit_ix`` or ``image_url`` to a file."""
    if path.suffix == ".json":
        return {str(k): str(v) for k, v in read_json(path).items()}
    return {row["key"]: row["file"] for _, row in read_table(path, header=("key", "file"))}


def wit_image(images: Path, obj: dict, mapping: dict[str, str]) -> Path:
    """The mapped file, else the URL's (percent-decoded) file name, also tried as a ``.jpg``/``.png`` conversion."""
    for key in (obj.get("wit_ix"), obj.get("image_url")):
        if key in mapping:
            return images / mapping[key]
    name = unquote(Path(urlparse(obj.get("image_url", "")).path).name)
    base = Path(name).stem
    return first_existing([images / name, images / f"{base}.jpg", images / f"{base}.png"])


def read_wit(opts: Options) -> Conversion:
    """WIT (IGLUE's subset): ``test_<lang>.jsonl``, ``val_en.jsonl``, ``train_en.jsonl.zip``, translate-test
    ``annotations_machine-translate/test_<lang>_gmt.jsonl``; text ``caption_reference_description``.

    Images are identified as IGLUE scores them (volta's retrieval dataset): by ``wit_ix``. Rows sharing a
    ``wit_ix`` become one sample with all their captions; ``image_idx`` is not an identity (the release reuses
    it for different images in one file). Images: ``--images`` holding the files named as in their URL, or
    ``--field image_map=PATH`` (wit_ix or image_url → file name).
    """
    src = opts.need_src("the WIT annotation .jsonl files or their folder")
    images = opts.need_images("the WIT images")
    mapping = load_image_map(Path(opts.fields["image_map"])) if "image_map" in opts.fields else {}
    files, records = find_files(src, "*.jsonl", "*.jsonl.zip"), []
    for path in files:
        split, lang = wit_name(path, opts.lang)
        by_ix: dict[str, dict] = {}
        for where, obj in read_jsonl(path):
            caption = need(obj, where, "caption_reference_description")
            ix = str(need(obj, where, "wit_ix"))
            if ix in by_ix:
                by_ix[ix]["json"]["texts"].append(caption)
                continue
            need(obj, where, "image_url")
            fields = retrieval_fields([caption], ix)
            by_ix[ix] = record("wit", split, lang, ix, fields, {"jpg": wit_image(images, obj, mapping)})
        records += by_ix.values()
    sources = [*files, Path(opts.fields["image_map"])] if mapping else files
    return Conversion(records, task_entry("wit"), sources)


xvnli = converter("xvnli", read_xvnli)
xgqa = converter("xgqa", read_xgqa)
marvl = converter("marvl", read_marvl)
xflickrco = converter("xflickrco", read_xflickrco)
wit = converter("wit", read_wit)
