"""The ten demo tasks: how each makes language-independent items and renders one in a language.

Items of a split are drawn once and rendered in every language of that split, so test sets are parallel
across languages (as XVNLI, xGQA and xFlickr&CO are: translations of the same items, same ids, same
pictures).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.catalogue import BINARY_LABELS, DEMO_LANGS, NLI_LABELS
from shards.demo.lexicon import COLOURS, PROPS, SHAPES, SLOTS, WORDS, render, words_and_classes
from shards.demo.scenes import Scene, draw_scene, random_scene

Frame = tuple[str, dict]  # (frame name, args) rendered by lexicon.render

ENGLISH_SPLITS = {"train": ("en",), "dev": ("en",), "test": DEMO_LANGS}
# The visual targets also ship their English training items translated, as IGLUE's translate-train data: the same
# items, ids and pictures in the other languages (split `translate_train`). No zero-shot run reads them; the demo
# study's positive control trains on them (it must help the other languages: if it does not show, nothing would).
TRANSLATED_SPLITS = {"translate_train": "train"}  # split -> the split whose items it translates
TRANSLATE_TRAIN = {**ENGLISH_SPLITS, "translate_train": DEMO_LANGS[1:]}
VQA_ANSWERS = (*COLOURS, *SHAPES, "1", "2", "3", "yes", "no")
VQA_OOV_ITEMS = 2  # test items whose answer ("white") is outside the answer vocabulary: scored as wrong
VQA_ANNOTATORS = 10
TAGS = ("O", "B-COL", "I-COL", "B-SHP", "I-SHP")
MC_CHOICES = 4


@dataclass(frozen=True)
class DemoTask:
    """One demo task: its manifest label metadata, item maker, renderer and split languages."""

    name: str
    make: Callable[[random.Random], dict]  # one language-independent item
    render: Callable[[dict, str], tuple[dict, dict]]  # item, lang -> (json fields, images)
    label_names: tuple[str, ...] = ()
    splits: dict[str, tuple[str, ...]] = field(default_factory=lambda: ENGLISH_SPLITS)
    make_many: Callable[[random.Random, int, str], list[dict]] | None = None  # replaces n x make when set

    def meta(self) -> dict:
        return {"label_names": list(self.label_names), "label_map": {n: i for i, n in enumerate(self.label_names)}}

    def make_items(self, rng: random.Random, n: int, split: str) -> list[dict]:
        """``n`` items of ``split``, each with its ``uid`` (the sample id, shared by its translations)."""
        items = self.make_many(rng, n, split) if self.make_many else [self.make(rng) for _ in range(n)]
        for i, item in enumerate(items):
            item["uid"] = f"{split}-{i:06d}"
        return items


def _pick(rng: random.Random, options: dict[str, list[Frame]]) -> Frame:
    """A frame kind uniformly among those with options, then one of its options."""
    kinds = [k for k, v in options.items() if v]
    return rng.choice(options[rng.choice(kinds)])


def hypothesis(rng: random.Random, scene: Scene, label: str) -> Frame:
    """A statement about ``scene`` with the given NLI label.

    Entailment: true of the picture. Contradiction: false of it (wrong colour or position of a present
    shape, a present shape said absent, an absent one said present). Neutral: a present shape with a
    property no picture shows (weight, material, age).
    """
    objs, absent = scene.objects, [s for s in SHAPES if s not in scene.shapes]
    if label == "entailment":
        options = {
            "colour": [("hyp_colour", {"shape": o.shape, "colour": o.colour}) for o in objs],
            "exists": [("hyp_exists", {"shape": o.shape}) for o in objs],
            "absent": [("hyp_absent", {"shape": s}) for s in absent],
            "pos": [("hyp_pos", {"shape": o.shape, "slot": o.slot}) for o in objs],
        }
    elif label == "contradiction":
        options = {
            "colour": [("hyp_colour", {"shape": o.shape, "colour": c}) for o in objs for c in COLOURS if c != o.colour],
            "exists": [("hyp_exists", {"shape": s}) for s in absent],
            "absent": [("hyp_absent", {"shape": o.shape}) for o in objs],
            "pos": [("hyp_pos", {"shape": o.shape, "slot": s}) for o in objs for s in SLOTS if s != o.slot],
        }
    else:
        options = {"prop": [("hyp_prop", {"shape": o.shape, "prop": p}) for o in objs for p in PROPS]}
    return _pick(rng, options)


def _caption(scene: Scene, lang: str, frame: str = "caption_plain", colours: bool = True) -> str:
    return render(lang, frame, {"objects": scene.objects, "colours": colours})


def _picture(rng: random.Random) -> tuple[Scene, bytes]:
    scene = random_scene(rng)
    return scene, draw_scene(scene)


# ------------------------------------------------------------------------------- entailment (ve, nli)

# Visual-entailment hypotheses: claims about one shape's colour or position. The same sentence is true of
# some pictures (entailment), false of others (the shape is there with another colour or place:
# contradiction) and undecidable of the rest (the shape is not in the picture: neutral). The sentence is
# drawn first and its label uniformly after it, so the text alone predicts nothing (see `reference_rules`).
VE_FRAMES = ("hyp_colour", "hyp_pos")


def ve_label(scene: Scene, frame: str, args: dict) -> str:
    """The NLI label of a colour or position claim about ``scene``."""
    obj = scene.get(args["shape"])
    if obj is None:
        return "neutral"
    said = args["colour"] if frame == "hyp_colour" else args["slot"]
    return "entailment" if said == (obj.colour if frame == "hyp_colour" else obj.slot) else "contradiction"


def scene_where(rng: random.Random, holds: Callable[[Scene], bool]) -> Scene:
    """A random scene for which ``holds`` is true (rejection sampling: every condition used is common)."""
    while True:
        scene = random_scene(rng)
        if holds(scene):
            return scene


def make_entailment(rng: random.Random) -> dict:
    frame, shape = rng.choice(VE_FRAMES), rng.choice(SHAPES)
    args = (
        {"shape": shape, "colour": rng.choice(COLOURS)}
        if frame == "hyp_colour"
        else {"shape": shape, "slot": rng.choice(SLOTS)}
    )
    label = rng.randrange(len(NLI_LABELS))
    scene = scene_where(rng, lambda s: ve_label(s, frame, args) == NLI_LABELS[label])
    return {"scene": scene, "jpg": draw_scene(scene), "hyp": (frame, args), "label": label}


def render_ve(item: dict, lang: str) -> tuple[dict, dict]:
    # Like XVNLI: the picture replaces the premise; the text is the hypothesis alone.
    return {"text": render(lang, *item["hyp"]), "text_pair": None, "label": item["label"]}, {"jpg": item["jpg"]}


def render_nli(item: dict, lang: str) -> tuple[dict, dict]:
    premise = _caption(item["scene"], lang)
    return {"text": premise, "text_pair": render(lang, *item["hyp"]), "label": item["label"]}, {}


# ------------------------------------------------------------------------------------------- nlvr


def _nlvr_statements(left: Scene, right: Scene) -> list[tuple[Frame, bool]]:
    left_colours, right_colours = {o.colour for o in left.objects}, {o.colour for o in right.objects}
    n_left, n_right = len(left.objects), len(right.objects)
    return [
        *((("nlvr_left_has", {"shape": s}), s in left.shapes) for s in SHAPES),
        *((("nlvr_right_has", {"shape": s}), s in right.shapes) for s in SHAPES),
        *((("nlvr_both_colour", {"colour": c}), c in left_colours and c in right_colours) for c in COLOURS),
        (("nlvr_more", {}), n_left > n_right),
        (("nlvr_same", {}), n_left == n_right),
    ]


def make_nlvr(rng: random.Random) -> dict:
    label = rng.randrange(2)
    while True:  # a pair of scenes has true and false statements almost always; redraw the rare exception
        (left, jpg0), (right, jpg1) = _picture(rng), _picture(rng)
        matching = [frame for frame, truth in _nlvr_statements(left, right) if truth == bool(label)]
        if matching:
            return {"jpgs": (jpg0, jpg1), "statement": rng.choice(matching), "label": label}


def render_nlvr(item: dict, lang: str) -> tuple[dict, dict]:
    jpg0, jpg1 = item["jpgs"]
    return {"text": render(lang, *item["statement"]), "label": item["label"]}, {"img0.jpg": jpg0, "img1.jpg": jpg1}


# -------------------------------------------------------------------------------------------- vqa


def _vqa_question(rng: random.Random, scene: Scene) -> tuple[Frame, str, tuple[str, ...]]:
    """A question about ``scene``: (question, answer, plausible wrong answers a careless annotator might give)."""
    kind = rng.choice(("colour", "count", "exists", "which"))
    obj = rng.choice(scene.objects)
    if kind == "colour":
        return ("q_colour", {"shape": obj.shape}), obj.colour, tuple(c for c in COLOURS if c != obj.colour)
    if kind == "count":
        n = len(scene.objects)
        return ("q_count", {}), str(n), tuple(str(m) for m in (n - 1, n + 1) if 1 <= m <= 3)
    if kind == "exists":
        shape = rng.choice(SHAPES)
        answer = "yes" if shape in scene.shapes else "no"
        return ("q_exists", {"shape": shape}), answer, ("no" if answer == "yes" else "yes",)
    return ("q_which", {"slot": obj.slot}), obj.shape, tuple(s for s in SHAPES if s != obj.shape)


def _balanced_vqa(rng: random.Random) -> tuple[Scene, Frame, str, tuple[str, ...]]:
    """Question first, then its answer uniformly among those the question allows, then a scene that answers
    it so: each question sentence has every answer equally often, and only the picture tells which."""
    kind = rng.choice(("colour", "count", "exists", "which"))
    if kind == "colour":
        shape, colour = rng.choice(SHAPES), rng.choice(COLOURS)
        scene = scene_where(rng, lambda s: (o := s.get(shape)) is not None and o.colour == colour)
        return scene, ("q_colour", {"shape": shape}), colour, tuple(c for c in COLOURS if c != colour)
    if kind == "count":
        n = rng.choice((1, 2, 3))
        scene = scene_where(rng, lambda s: len(s.objects) == n)
        return scene, ("q_count", {}), str(n), tuple(str(m) for m in (n - 1, n + 1) if 1 <= m <= 3)
    if kind == "exists":
        shape, there = rng.choice(SHAPES), rng.random() < 0.5
        scene = scene_where(rng, lambda s: (shape in s.shapes) == there)
        answer = "yes" if there else "no"
        return scene, ("q_exists", {"shape": shape}), answer, ("no" if there else "yes",)
    slot, shape = rng.choice(SLOTS), rng.choice(SHAPES)
    scene = scene_where(rng, lambda s: (o := s.get(shape)) is not None and o.slot == slot)
    return scene, ("q_which", {"slot": slot}), shape, tuple(s for s in SHAPES if s != shape)


def make_vqa(rng: random.Random) -> dict:
    scene, question, answer, wrong = _balanced_vqa(rng)
    votes = {answer: VQA_ANNOTATORS}
    if rng.random() < 0.3:  # one or two of ten annotators disagree: VQAv2-style soft targets
        k = rng.choice((1, 2))
        votes = {answer: VQA_ANNOTATORS - k, rng.choice(wrong): k}
    return {"jpg": draw_scene(scene), "question": question, "answer": answer, "votes": votes}


def make_vqa_items(rng: random.Random, n: int, split: str) -> list[dict]:
    items = [make_vqa(rng) for _ in range(n)]
    if split == "test":
        for item in items[-VQA_OOV_ITEMS:]:
            item.update(question=("q_background", {}), answer="white", votes={"white": VQA_ANNOTATORS})
    return items


def render_vqa(item: dict, lang: str) -> tuple[dict, dict]:
    in_vocab = [(VQA_ANSWERS.index(a), n) for a, n in item["votes"].items() if a in VQA_ANSWERS]
    fields = {
        "text": render(lang, *item["question"]),
        "answer": item["answer"],  # answers stay English in every language, as in xGQA
        "labels": [i for i, _ in in_vocab],
        "scores": [round(min(1.0, n / 3), 4) for _, n in in_vocab],  # VQA accuracy: min(1, votes / 3)
    }
    return fields, {"jpg": item["jpg"]}


# -------------------------------------------------------------------------------------- retrieval


# Image captions, like real ones, do not all say everything: half of them leave the colours out ("A big circle on
# the left and a small square in the middle."), so matching a caption to its picture in the start's contrastive
# learning cannot rest on colours alone. Measured (docs/demo.md): with every caption naming every colour, no demo_vqa
# target run read its pictures within 300 steps (10 of 10 stayed at the picture-free rule) and 600 steps gave
# English 48-50; with this change every run of the study read them (counted the shapes) by step 350. Which shape is
# which the tiny model still does not learn either way.
CAPTIONS_WITHOUT_COLOURS = 0.5


def make_retrieval(rng: random.Random) -> dict:
    scene, jpg = _picture(rng)
    return {
        "scene": scene,
        "jpg": jpg,
        "captions": rng.choice((1, 2)),
        "colours": rng.random() >= CAPTIONS_WITHOUT_COLOURS,
    }


def render_retrieval(item: dict, lang: str) -> tuple[dict, dict]:
    frames = ("caption_plain", "caption_shows")[: item["captions"]]
    texts = [_caption(item["scene"], lang, f, item["colours"]) for f in frames]
    return {"texts": texts, "image_id": item["uid"]}, {"jpg": item["jpg"]}


# ------------------------------------------------------------------------------- multiple choice


def make_mc(rng: random.Random) -> dict:
    scene = random_scene(rng)
    wrong: list[Frame] = []
    while len(wrong) < MC_CHOICES - 1:
        frame = hypothesis(rng, scene, "contradiction")
        if frame not in wrong:
            wrong.append(frame)
    label = rng.randrange(MC_CHOICES)
    choices = [*wrong[:label], hypothesis(rng, scene, "entailment"), *wrong[label:]]
    return {"scene": scene, "choices": choices, "label": label}


def render_mc(item: dict, lang: str) -> tuple[dict, dict]:
    choices = [render(lang, *frame) for frame in item["choices"]]
    return {"text": _caption(item["scene"], lang, "caption_shows"), "choices": choices, "label": item["label"]}, {}


# -------------------------------------------------------------------------------------- span qa


def make_qa(rng: random.Random) -> dict:
    scene = random_scene(rng)
    obj = rng.choice(scene.objects)
    kind = rng.choice(("colour", "where", "which"))
    return {"scene": scene, "obj": obj, "kind": kind}


def render_qa(item: dict, lang: str) -> tuple[dict, dict]:
    """Context: one sentence per shape plus one about the background; the answer is a span of the asked one."""
    scene, obj, kind = item["scene"], item["obj"], item["kind"]
    sentences = [
        render(lang, "qa_sentence", {"shape": o.shape, "colour": o.colour, "slot": o.slot}) for o in scene.objects
    ]
    context = " ".join([*sentences, render(lang, "qa_background", {})])
    question, answer = {
        "colour": (("q_colour", {"shape": obj.shape}), WORDS[lang]["colour"][obj.colour]),
        "where": (("qa_where", {"shape": obj.shape}), WORDS[lang]["pos"][obj.slot]),
        "which": (("q_which", {"slot": obj.slot}), WORDS[lang]["shape"][obj.shape]),
    }[kind]
    own = scene.objects.index(obj)
    offset = sum(len(s) + 1 for s in sentences[:own])
    # Case-insensitive: the shape word opens its sentence capitalised ("Круг красный ...").
    match = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", sentences[own], flags=re.IGNORECASE)
    assert match is not None, (lang, answer, sentences[own])
    start = offset + match.start()
    answers = {"text": [context[start : offset + match.end()]], "answer_start": [start]}
    return {"text": render(lang, *question), "context": context, "answers": answers}, {}


# --------------------------------------------------------------------------------------- tagging


def make_tagging(rng: random.Random) -> dict:
    return {"scene": random_scene(rng), "frame": rng.choice(("caption_plain", "caption_shows"))}


def render_tagging(item: dict, lang: str) -> tuple[dict, dict]:
    tokens, classes = words_and_classes(lang, _caption(item["scene"], lang, item["frame"]))
    # Every colour and shape entity is one word here; I- tags stay in the label set for the format's sake.
    tags = [TAGS.index(f"B-{c}") if c != "O" else 0 for c in classes]
    return {"tokens": tokens, "tags": tags}, {}


# -------------------------------------------------------------------------- mlm and tatoeba text


def random_sentence(rng: random.Random, captions_only: bool = False) -> Frame:
    """Any sentence the demo world says: a caption, a hypothesis, a question or a context sentence."""
    scene = random_scene(rng)
    kind = "caption" if captions_only else rng.choice(("caption", "hypothesis", "question", "context"))
    obj = rng.choice(scene.objects)
    if kind == "caption":
        return rng.choice(("caption_plain", "caption_shows")), {"objects": scene.objects}
    if kind == "hypothesis":
        return hypothesis(rng, scene, rng.choice(NLI_LABELS))
    if kind == "question":
        return _vqa_question(rng, scene)[0]
    return "qa_sentence", {"shape": obj.shape, "colour": obj.colour, "slot": obj.slot}


MLM_SWITCHED = 0.5  # share of MLM sentences that are code-switched (their fillers drawn from other languages)


def make_mlm(rng: random.Random) -> dict:
    # A code-switched item carries the seed of its switches; each language's rendering switches on its own.
    switch = rng.randrange(2**31) if rng.random() < MLM_SWITCHED else None
    return {"sentence": random_sentence(rng), "switch": switch}


def render_mlm(item: dict, lang: str) -> tuple[dict, dict]:
    switch = None if item.get("switch") is None else random.Random(f"{item['switch']}/{lang}")
    return {"text": render(lang, *item["sentence"], switch=switch)}, {}


def make_tatoeba_items(rng: random.Random, n: int, split: str) -> list[dict]:
    """Training pairs: any sentence the world says (captions, hypotheses, questions, context sentences), so
    the translation ranking aligns every frame the tasks use; the few distinct short sentences repeat. Dev and
    test: ``n`` distinct captions, as Tatoeba-style retrieval needs every English side to be unique."""
    if split == "train":
        return [{"sentence": random_sentence(rng)} for _ in range(n)]
    seen: dict[str, dict] = {}
    while len(seen) < n:
        frame = random_sentence(rng, captions_only=True)
        seen.setdefault(render("en", *frame), {"sentence": frame})
    return list(seen.values())


def render_tatoeba(item: dict, lang: str) -> tuple[dict, dict]:
    return {"text": render(lang, *item["sentence"]), "text_pair": render("en", *item["sentence"])}, {}


ALL_LANGS = {split: DEMO_LANGS for split in ENGLISH_SPLITS}
NON_ENGLISH = {split: DEMO_LANGS[1:] for split in ENGLISH_SPLITS}

DEMO_TASKS: dict[str, DemoTask] = {
    t.name: t
    for t in (
        DemoTask("demo_ve", make_entailment, render_ve, NLI_LABELS, splits=TRANSLATE_TRAIN),
        DemoTask("demo_nli", make_entailment, render_nli, NLI_LABELS),
        DemoTask("demo_nlvr", make_nlvr, render_nlvr, BINARY_LABELS),
        DemoTask("demo_vqa", make_vqa, render_vqa, VQA_ANSWERS, splits=TRANSLATE_TRAIN, make_many=make_vqa_items),
        DemoTask("demo_retrieval", make_retrieval, render_retrieval),
        DemoTask("demo_mc", make_mc, render_mc),
        DemoTask("demo_qa", make_qa, render_qa),
        DemoTask("demo_tagging", make_tagging, render_tagging, TAGS),
        DemoTask("demo_mlm", make_mlm, render_mlm, splits=ALL_LANGS),  # multilingual MLM: every split, every language
        DemoTask("demo_tatoeba", make_mlm, render_tatoeba, splits=NON_ENGLISH, make_many=make_tatoeba_items),
    )
}
