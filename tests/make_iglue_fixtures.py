"""Writes ``tests/fixtures/iglue``: records the project wrote, in the exact schemas of ``e-bug/iglue``'s files.

No record comes from the release: ids, sentences, questions, captions and URLs are made up here, laid out
with the release's file names and with every quirk the converters handle (an XVNLI ``"-"`` label, Flickr30k
string ids beside COCO int ids, MaRVL JSON booleans and concept folders, WIT images sharing ``image_idx`` and
captions sharing ``wit_ix``, ``.svg``/``.tif`` and percent-encoded WIT URLs, an xGQA answer outside the
vocabulary, zipped annotation files, an IGLUE ``.pkl`` copy). ``tests/test_converters_iglue.py`` checks that
the committed files are what this script writes.

    python tests/make_iglue_fixtures.py            # rewrite tests/fixtures/iglue
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).parent / "fixtures" / "iglue"

# ------------------------------------------------------------------------------------------ XVNLI
SUBJECTS = ["A painter", "Two runners", "A girl in a red coat", "An old fisherman", "A cook", "A cyclist", "A choir"]
HYPOTHESES = {  # label → English hypothesis template, Arabic counterpart
    "entailment": ("{s} is outdoors.", "الشخص في الخارج."),
    "neutral": ("{s} is waiting for a friend.", "الشخص ينتظر صديقا."),
    "contradiction": ("{s} is asleep in bed.", "الشخص نائم في السرير."),
}
FLICKR_IDS = [str(4100000001 + 7 * i) for i in range(len(SUBJECTS))]  # made-up Flickr30k-style ids


def ve_row(i: int, label: str, english: bool = True, gold: str | None = None) -> dict:
    """One XVNLI/SNLI-VE line in IGLUE's schema (``Flikr30kID``, as IGLUE spells it)."""
    image, subject = FLICKR_IDS[i % len(FLICKR_IDS)], SUBJECTS[i % len(SUBJECTS)]
    en, ar = HYPOTHESES[label]
    caption = f"{image}.jpg#{i % 5}"
    return {
        "gold_label": gold or label,
        "sentence1": f"{subject} stands near a wooden bench.",
        "sentence2": en.format(s=subject) if english else ar,
        "captionID": caption,
        "pairID": f"{caption}r1{label[0]}",
        "Flikr30kID": image,
    }


def xvnli() -> dict[str, list[dict]]:
    labels = list(HYPOTHESES)
    test = [ve_row(i // 3, labels[i % 3]) for i in range(20)]
    dash = ve_row(20 // 3, "neutral", gold="-")  # no annotator majority: stays in test, scored as wrong
    dash["pairID"] = dash["pairID"].replace("r1n", "r2n")
    few = [ve_row(i, labels[i % 3]) for i in range(3)]
    return {
        "XVNLI/annotations/en/test.jsonl": [*test, dash],
        "XVNLI/annotations/ar/test.jsonl": [ve_row(i // 3, labels[i % 3], english=False) for i in range(20)],
        "XVNLI/annotations/en/train_1.jsonl": few,
        "XVNLI/annotations/ar/train_1.jsonl": [ve_row(i, labels[i % 3], english=False) for i in range(3)],
        "XVNLI/annotations_machine-translate/ar/test.jsonl": test[:2],  # Arabic test, translated into English
        "XVNLI/annotations/en/dev-ar_gmt.jsonl": [ve_row(i, labels[i % 3], english=False) for i in range(2)],
    }


# -------------------------------------------------------------------------------------- GQA / xGQA
VOCAB = ["no", "yes", "left", "right", "red", "blue", "white", "black", "wood", "metal", "dog", "cat", "table"]
GQA_IMAGES = ["n900001", "n900002", "n900003"]


def balanced_question(qid: int, question: str, answer: str, image: str) -> tuple[str, dict]:
    """One question of GQA's balanced-questions JSON (xGQA keeps the schema, translating ``question``)."""
    return str(qid), {
        "semantic": [{"operation": "select", "dependencies": [], "argument": "thing (1)"}],
        "entailed": [],
        "equivalent": [str(qid)],
        "question": question,
        "imageId": image,
        "isBalanced": True,
        "groups": {"global": None, "local": "10q-thing"},
        "answer": answer,
        "semanticStr": "select: thing (1)->query: color [0]",
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
        "types": {"detailed": "color", "semantic": "attr", "structural": "query"},
        "fullAnswer": f"The answer is {answer}.",
    }


GERMAN = [
    ("Ist der Stuhl aus Holz?", "yes"),
    ("Welche Farbe hat die Tasse?", "blue"),
    ("Steht der Hund links oder rechts?", "left"),
    ("Ist die Lampe an?", "no"),
    ("Welches Tier liegt auf dem Sofa?", "cat"),
    ("Woraus ist der Zaun?", "metal"),
]


def xgqa() -> dict[str, object]:
    few = dict(balanced_question(700100 + i, q, a, GQA_IMAGES[i % 3]) for i, (q, a) in enumerate(GERMAN))
    zero = dict(
        [
            balanced_question(700200, "Ist der Himmel blau?", "yes", GQA_IMAGES[0]),
            balanced_question(700201, "Welche Farbe hat das Boot?", "white", GQA_IMAGES[1]),
            balanced_question(700202, "Was steht auf dem Tisch?", "paper lantern", GQA_IMAGES[2]),  # not in VOCAB
        ]
    )
    lxmert = [
        {"img_id": GQA_IMAGES[i % 3], "label": {a: 1.0}, "question_id": str(700300 + i), "sent": q}
        for i, (q, a) in enumerate(
            [
                ("Is the fence made of wood?", "no"),
                ("Which color is the car?", "red"),
                ("Is the dog to the left of the table?", "yes"),
                ("What animal is on the chair?", "dog"),
            ]
        )
    ]
    return {
        "xGQA/annotations/few_shot/de/train_1.json": few,
        "xGQA/annotations/zero_shot/testdev_balanced_questions_de.json": zero,
        "gqa/annotations/testdev.json": lxmert,
        "gqa/annotations/trainval_label2ans.json": VOCAB,
        "gqa/annotations/trainval_ans2label.json": {a: i for i, a in enumerate(VOCAB)},
    }


# ---------------------------------------------------------------------------------------------- MaRVL
def marvl_row(lang: str, i: int, concept: str, caption: str, label: bool, few_shot: bool) -> dict:
    left, right = f"{concept.split('-')[0]}-{2 * i}.jpg", f"{concept.split('-')[0]}-{2 * i + 1}.jpg"
    if few_shot:  # few-shot names carry the concept folder
        left, right = f"{concept}/{left}", f"{concept}/{right}"
    return {
        "concept": concept,
        "language": lang,
        "caption": caption,
        "left_img": left,
        "right_img": right,
        "annotator_info": {"annotator_id": f"{lang}_09", "country_of_birth": "-", "gender": "-", "age": 30},
        "chapter": "Basic actions and technology",
        "id": f"{lang}-{i}",
        "label": label,
    }


def marvl() -> dict[str, list[dict]]:
    zh = [
        "左图有两只碗。",
        "右图的灯是亮的。",
        "两张图里都有一把伞。",
        "左图中的门是开着的。",
        "右图有三个苹果。",
        "两张图都在室外。",
    ]
    labels = [False, False, True, True, False, True]
    idn = [
        "Gambar kiri menunjukkan satu panci.",
        "Kedua gambar berisi sendok.",
        "Ada api di gambar kanan.",
        "Tidak ada tutup.",
    ]
    return {
        "marvl/zero_shot/annotations/marvl-zh.jsonl": [
            marvl_row("zh", i, "12-碗", text, label, False) for i, (text, label) in enumerate(zip(zh, labels))
        ],
        "marvl/few_shot/annotations/marvl-id_train1.jsonl": [
            marvl_row("id", i, "39-Panci", text, i != 1, True) for i, text in enumerate(idn)
        ],
    }


# ---------------------------------------------------------------------------------------------- NLVR2
def nlvr2() -> dict[str, list[dict]]:
    sentences = [
        "The left image shows exactly two kites.",
        "Both images contain a red bicycle.",
        "One image shows a cat.",
    ]
    rows = []
    for i in range(6):
        label = "True" if i % 2 else "False"
        rows.append(
            {
                "validation": {"7": label},
                "sentence": sentences[i // 2],
                "left_url": f"https://example.org/nlvr2/{i}a.jpg",
                "writer": "7",
                "label": label,
                "right_url": f"https://example.org/nlvr2/{i}b.jpg",
                "synset": "kite",
                "query": f"kites {i // 2}",
                "identifier": f"dev-{910 + i // 2}-{i % 2}-0",
                "extra_validations": {"8": label, "9": label},
            }
        )
    return {"nlvr2/annotations/dev.jsonl": rows}


# ------------------------------------------------------------------------------ xFlickr&CO, Flickr30k
def caption_row(sentences: list[str], id_: str | int, coco: bool = False) -> dict:
    path = f"COCO_val2014_{id_:012d}.jpg" if coco else f"{id_}.jpg"
    return {"sentences": sentences, "id": id_, "img_path": path}


def retrieval() -> dict[str, list[dict]]:
    de = [
        "Ein Hund springt über einen Bach.",
        "Zwei Kinder bauen eine Sandburg.",
        "Eine Frau malt ein Bild.",
        "Ein Mann repariert ein Fahrrad.",
        "Drei Vögel sitzen auf einem Draht.",
    ]
    en = ["A dog jumps over a stream.", "Two children build a sandcastle.", "A woman paints a picture."]
    coco = ["A clock on a brick tower.", "A bowl of oranges on a table.", "A kite above a beach."]
    return {
        "xFlickrCO/annotations/de/test.jsonl": [caption_row([t], FLICKR_IDS[i]) for i, t in enumerate(de)],
        "xFlickrCO/annotations/en/test.jsonl": [
            *(caption_row([t], FLICKR_IDS[i]) for i, t in enumerate(en)),
            *(caption_row([t], 880001 + 11 * i, coco=True) for i, t in enumerate(coco)),  # COCO ids are ints
        ],
        "flickr30k/annotations/test_ann.jsonl": [
            caption_row([f"{s} near the water, view {k}." for k in range(5)], FLICKR_IDS[i])
            for i, s in enumerate(SUBJECTS[:4])
        ],
    }


# ------------------------------------------------------------------------------------------------ WIT
def wit_row(ix: str, idx: int, file: str, caption: str, lang: str) -> dict:
    return {
        "image_idx": idx,
        "image_url": f"https://upload.wikimedia.org/wikipedia/commons/0/0a/{file}",
        "meta_url": f"http://commons.wikimedia.org/wiki/File:{file}",
        "caption_reference_description": caption,
        "language": lang,
        "page_url": f"https://{lang}.wikipedia.org/wiki/Example_{idx}",
        "wit_ix": ix,
    }


def wit() -> dict[str, list[dict]]:
    ja = [
        wit_row("wit-test_10", 3, "Harbour_at_dawn.jpg", "夜明けの港", "ja"),
        wit_row("wit-test_11", 5, "Map_of_an_imaginary_county.svg", "架空の郡の地図", "ja"),  # .svg → .png file
        wit_row("wit-test_11", 5, "Map_of_an_imaginary_county.svg", "郡の位置", "ja"),  # second caption, same image
        wit_row("wit-test_12", 8, "Old_survey%2C_1950.tif", "古い測量図", "ja"),  # percent-encoded .tif
        wit_row("wit-test_13", 8, "Mountain_Hut.JPG", "山小屋", "ja"),  # another image under the same image_idx
    ]
    train = [
        wit_row("wit_1001", 0, "Bridge_in_fog.jpg", "A stone bridge in fog.", "en"),
        wit_row("wit_1002", 0, "Lighthouse.jpg", "A lighthouse on a cliff.", "en"),
    ]
    return {"wit/annotations/test_ja.jsonl": ja, "wit/annotations/train_en.jsonl.zip": train}


# ---------------------------------------------------------------------------------------------- write
def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def files() -> dict[str, bytes]:
    """Relative path → bytes of every fixture file (zips with a fixed date, so the bytes are reproducible)."""
    out: dict[str, bytes] = {}
    for part in (xvnli(), xgqa(), marvl(), nlvr2(), retrieval(), wit()):
        for rel, data in part.items():
            if rel.endswith(".jsonl.zip"):
                out[rel] = zipped(rel.removesuffix(".zip").rsplit("/", 1)[-1], jsonl(data))
            elif rel.endswith(".jsonl"):
                out[rel] = jsonl(data).encode()
            else:
                out[rel] = (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode()
    # IGLUE also ships pickled copies; these bytes are not a pickle and are never unpickled (listed as ignored)
    out["gqa/annotations/trainval_label2ans.pkl"] = b"not a pickle: stands for IGLUE's pickled vocabulary\n"
    return out


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(name, date_time=(2022, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def write(root: Path = OUT) -> None:
    for rel, data in files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
