"""English vision-language training sets: SNLI-VE, GQA, VQAv2, NLVR2, Flickr30k and COCO retrieval."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .common import (
    NLI_MAP,
    Conversion,
    Options,
    canonical_split,
    converter,
    find_files,
    first_existing,
    gmt_name,
    map_label,
    need,
    read_json,
    read_jsonl,
    record,
    stem,
    task_entry,
)
from .iglue import (
    VE_FILES,
    caption_records,
    flickr_coco_image,
    gqa_conversion,
    load_label2ans,
    retrieval_fields,
    ve_records,
    ve_split,
    vqa_fields,
)

NLVR2_MAP = {"False": 0, "True": 1}
# The release's files (its balanced/ and unbalanced/ subsets are left out) and IGLUE's .jsonl copies.
NLVR2_FILES = ("train.json", "dev.json", "test1.json", "test2.json", "*.jsonl")


def read_snli_ve(opts: Options) -> Conversion:
    """SNLI-VE: ``snli_ve_{train,dev,test}.jsonl`` or IGLUE's ``XVNLI/annotations/en/{train.jsonl.zip,dev,test}``.

    Only the ``train``/``dev``/``test`` files are read (IGLUE's few-shot and translated files belong to xvnli).
    Images: Flickr30k, ``<images>/<Flickr30K_ID>.jpg``.
    """
    src = opts.need_src("the snli_ve_*.jsonl files or IGLUE's XVNLI/annotations/en folder")
    images = opts.need_images("the Flickr30k images (<Flickr30K_ID>.jpg)")
    found = find_files(src, *VE_FILES)
    files = [p for p in found if ve_split(p) in ("train", "dev", "test")]
    ignored = {p: f"XVNLI split {ve_split(p)}: build it with `xvnli`" for p in found if p not in files}
    skipped, records = [], []
    for path in files:
        records += ve_records("snli_ve", path, ve_split(path), "en", images, skipped)
    return Conversion(records, task_entry("snli_ve", NLI_MAP), files, skipped, ignored)


def gqa_name(path: Path) -> tuple[str, str]:
    """``train_balanced_questions.json`` → train; ``val``/LXMERT's ``valid`` → dev; ``testdev`` stays."""
    return canonical_split(stem(path).removesuffix("_balanced_questions")), "en"


def read_gqa(opts: Options) -> Conversion:
    """GQA: ``{train,val,testdev}_balanced_questions.json`` or LXMERT/IGLUE ``{train,valid,testdev}.json``.

    Answers map onto the 1,842 answers of ``trainval_label2ans.json`` (below ``--src`` or ``--field vocab=PATH``);
    an answer outside it is kept with empty labels. Images: ``<images>/<imageId>.jpg``.
    """
    return gqa_conversion("gqa", opts, gqa_name)


# ------------------------------------------------------------------------------------------------- VQAv2


def vqa_score(count: int, n_answers: int = 10) -> float:
    """The official VQA accuracy of an answer given by ``count`` of ``n_answers`` humans: the mean over the
    leave-one-out subsets of ``min(1, matches / 3)`` (0.3, 0.6, 0.9, 1.0 for 1, 2, 3, 4+ of 10)."""
    total = sum(min(1.0, (count - (i < count)) / 3) for i in range(n_answers))
    return round(total / n_answers, 4)


def normalize_answer(answer: str) -> str:
    """Lower-case, single spaces, no trailing period (a light form of the official answer processing)."""
    return " ".join(answer.lower().split()).rstrip(".")


def vqa_vocab(opts: Options, annotations: list[dict]) -> tuple[list[str], Path | None]:
    """``--field vocab=PATH`` (label2ans list or ans2label dict), else every ``multiple_choice_answer`` seen at
    least ``--field min_answer_count=N`` times (default 9: the common 3,129-answer train+val recipe)."""
    if "vocab" in opts.fields:
        path = Path(opts.fields["vocab"])
        data = read_json(path)
        return (sorted(data, key=data.get) if isinstance(data, dict) else load_label2ans(path)), path
    min_count = int(opts.fields.get("min_answer_count", 9))
    counts = Counter(normalize_answer(a["multiple_choice_answer"]) for a in annotations)
    return sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a)), None


def vqa_image(images: Path, subtype: str, image_id: int) -> Path:
    """``<images>/<subtype>/COCO_<subtype>_<12-digit id>.jpg``; test-dev images live in ``test2015``."""
    folder = "test2015" if subtype.startswith("test") else subtype
    name = f"COCO_{folder}_{image_id:012d}.jpg"
    return first_existing([images / folder / name, images / name])


def read_vqav2(opts: Options) -> Conversion:
    """VQAv2: ``v2_OpenEnded_mscoco_<subtype>_questions.json`` plus ``v2_mscoco_<subtype>_annotations.json``.

    Splits are the subtypes without the year (train, dev = val, test, testdev); test questions have no answers.
    Soft scores are the official VQA accuracy per answer (:func:`vqa_score`) over the 10 human answers.
    """
    src = opts.need_src("the folder with the VQAv2 questions and annotations JSON files")
    images = opts.need_images("the COCO images (<subtype>/COCO_<subtype>_<id>.jpg)")
    question_files = find_files(src, "*questions.json")
    annotation_files = [] if src.is_file() else sorted(src.rglob("*annotations.json"))
    by_subtype = {}
    for path in annotation_files:
        data = read_json(path)
        by_subtype[need(data, str(path), "data_subtype")] = need(data, str(path), "annotations")
    vocab, vocab_path = vqa_vocab(opts, [a for anns in by_subtype.values() for a in anns])
    ans2label = {a: i for i, a in enumerate(vocab)}
    records = []
    for path in question_files:
        data = read_json(path)
        subtype = need(data, str(path), "data_subtype")
        answers = {a["question_id"]: a for a in by_subtype.get(subtype, [])}
        split = canonical_split(re.sub(r"[^a-z]", "", subtype))
        for i, q in enumerate(need(data, str(path), "questions")):
            where = f"{path}: question {i}"
            qid, image_id = need(q, where, "question_id"), need(q, where, "image_id")
            ann = answers.get(qid)
            answer = None if ann is None else ann["multiple_choice_answer"]
            counts = Counter(normalize_answer(a["answer"]) for a in ann["answers"]) if ann else Counter()
            scores = {a: vqa_score(c, len(ann["answers"])) for a, c in counts.items()} if ann else {}
            fields = vqa_fields(need(q, where, "question"), answer, scores, ans2label)
            records.append(record("vqav2", split, "en", qid, fields, {"jpg": vqa_image(images, subtype, image_id)}))
    sources = [*question_files, *annotation_files, *([vocab_path] if vocab_path else [])]
    return Conversion(records, task_entry("vqav2", label_names=vocab), sources)


# ------------------------------------------------------------------------------------------------- NLVR2


def nlvr2_name(path: Path) -> tuple[str, str]:
    """``dev.json`` → (dev, en); IGLUE's ``test.jsonl`` → (test1, en): it is NLVR2's public test set (identifiers
    ``test1-…``); machine-translated ``dev-id_gmt.jsonl`` → (translate_dev, id)."""
    translated = gmt_name(stem(path))
    if translated:
        return translated
    if stem(path) == "test" and path.suffix == ".jsonl":
        return "test1", "en"
    return stem(path), "en"


class Nlvr2Images:
    """Finds NLVR2 image files in the release's layout: ``train/<0..99>/``, ``dev/``, ``test1/`` (the folder is
    the identifier's first part), or flat in ``--images``.

    ``<split>/<directory>/`` comes from a record's ``directory`` field; train records without one (IGLUE's
    copies) are looked up in an index of the numbered sub-folders, built once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, dict[str, Path]] = {}

    def pair(self, obj: dict, where: str) -> dict[str, Path]:
        """``dev-850-0-0`` → ``dev-850-0-img0.png`` / ``-img1.png`` as ``img0.jpg`` / ``img1.jpg``."""
        identifier = need(obj, where, "identifier")
        base, folder = identifier.rsplit("-", 1)[0], self.root / identifier.split("-", 1)[0]
        dirs = [self.root, folder] + ([folder / str(obj["directory"])] if "directory" in obj else [])
        pair = {}
        for i in (0, 1):
            name = f"{base}-img{i}.png"
            found = next((d / name for d in dirs if (d / name).is_file()), None)
            pair[f"img{i}.jpg"] = found or self._nested(folder).get(name, folder / name)
        return pair

    def _nested(self, folder: Path) -> dict[str, Path]:
        key = str(folder)
        if key not in self._index:
            self._index[key] = {p.name: p for p in folder.glob("*/*.png")} if folder.is_dir() else {}
        return self._index[key]


def read_nlvr2(opts: Options) -> Conversion:
    """NLVR2: ``{train,dev,test1}.json`` (one JSON object a line, the original release) or IGLUE's ``.jsonl``.

    Labels are the strings "True"/"False" (→ 1/0). Images: :class:`Nlvr2Images` (``train/<0..99>/``, ``dev/``,
    ``test1/`` below ``--images``).
    """
    src = opts.need_src("the NLVR2 data files (train.json, dev.json, test1.json) or their folder")
    images = Nlvr2Images(opts.need_images("the NLVR2 images (train/<0..99>/, dev/, test1/)"))
    files, records = find_files(src, *NLVR2_FILES), []
    for path in files:
        split, lang = nlvr2_name(path)
        for where, obj in read_jsonl(path):
            fields = {
                "text": need(obj, where, "sentence"),
                "label": map_label(need(obj, where, "label"), NLVR2_MAP, where),
            }
            records.append(record("nlvr2", split, lang, obj["identifier"], fields, images.pair(obj, where)))
    return Conversion(records, task_entry("nlvr2", NLVR2_MAP), files)


# ------------------------------------------------------------------------------------- Flickr30k and COCO


def karpathy_records(task: str, path: Path, images: Path) -> list[dict]:
    """Karpathy ``dataset_{flickr30k,coco}.json``: one sample per image; ``restval`` joins ``train``.

    Ids: COCO's ``cocoid`` (int); Flickr30k's file name without ``.jpg`` (str, as IGLUE writes them).
    """
    records = []
    for i, img in enumerate(need(read_json(path), str(path), "images")):
        where = f"{path}: image {i}"
        name = need(img, where, "filename")
        id_ = img["cocoid"] if "cocoid" in img else Path(name).stem
        split = canonical_split(need(img, where, "split"))
        texts = [s["raw"] for s in need(img, where, "sentences")]
        image = first_existing([images / img.get("filepath", "") / name, images / name])
        records.append(record(task, split, "en", id_, retrieval_fields(texts, id_), {"jpg": image}))
    return records


def retrieval_conversion(task: str, opts: Options) -> Conversion:
    src = opts.need_src(f"Karpathy's dataset_{task}.json or IGLUE's {task}/annotations/*_ann.jsonl")
    images = opts.need_images(f"the {task} images")
    image_of = flickr_coco_image(opts, images)
    files, records = find_files(src, "dataset_*.json", "*_ann.jsonl", "*_gmt.jsonl"), []
    for path in files:
        if path.suffix == ".json":
            records += karpathy_records(task, path, images)
        else:
            split, lang = gmt_name(stem(path)) or (canonical_split(stem(path).removesuffix("_ann")), "en")
            records += caption_records(task, path, split, lang, image_of)
    return Conversion(records, task_entry(task), files)


def read_flickr30k(opts: Options) -> Conversion:
    """Flickr30k retrieval: Karpathy ``dataset_flickr30k.json`` or IGLUE ``flickr30k/annotations/*_ann.jsonl``
    (+ ``annotations_machine-translate/valid-<lang>_gmt.jsonl`` → ``translate_dev``).

    Splits train (with restval), dev, test (1,000 images, 5 captions each). Images: ``<images>/<id>.jpg``.
    """
    return retrieval_conversion("flickr30k", opts)


def read_coco(opts: Options) -> Conversion:
    """COCO retrieval: Karpathy ``dataset_coco.json`` (5k test split) or ``*_ann.jsonl`` in IGLUE's format.

    Images: ``<images>/<filepath>/<filename>`` (``val2014/COCO_val2014_…jpg``) or directly under ``--images``.
    """
    return retrieval_conversion("coco", opts)


snli_ve = converter("snli_ve", read_snli_ve)
gqa = converter("gqa", read_gqa)
vqav2 = converter("vqav2", read_vqav2)
nlvr2 = converter("nlvr2", read_nlvr2)
flickr30k = converter("flickr30k", read_flickr30k)
coco = converter("coco", read_coco)
