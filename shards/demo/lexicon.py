"""Hand-written words and sentence frames of the demo world in English, German, Spanish and Russian.

A sentence is built language-independently as ``(frame, args)`` (e.g. ``("hyp_colour", {"shape": "circle",
"colour": "red"})``) and rendered per language by :func:`render`, which fills the frame with inflected
forms. German needs case and gender (der Kreis / das Quadrat, einen roten Kreis); Spanish and Russian
shape nouns are all masculine, but "shape" (figura, фигура) is feminine.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
SLOTS = ("left", "middle", "right")
SIZES = ("big", "small")
PROPS = ("heavy", "wood", "old")  # properties a picture cannot show: the neutral hypotheses


@dataclass(frozen=True)
class Obj:
    """One shape in a picture."""

    shape: str
    colour: str
    slot: str
    size: str


WORDS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "colour": {c: c for c in COLOURS},
        "colour_f": {c: c for c in COLOURS},
        "shape": {s: s for s in SHAPES},
        "the_shape": {s: f"the {s}" for s in SHAPES},
        "a_shape": {s: f"a {s}" for s in SHAPES},
        "no_shape": {s: f"no {s}" for s in SHAPES},
        "pos": {"left": "on the left", "middle": "in the middle", "right": "on the right"},
        "size": {"big": "big", "small": "small"},
        "prop": {"heavy": "heavy", "wood": "made of wood", "old": "very old"},
    },
    "de": {
        "colour": {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb"},
        "colour_f": {"red": "rote", "green": "grüne", "blue": "blaue", "yellow": "gelbe"},
        "shape": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck"},
        "the_shape": {"circle": "der Kreis", "square": "das Quadrat", "triangle": "das Dreieck"},
        "a_shape": {"circle": "einen Kreis", "square": "ein Quadrat", "triangle": "ein Dreieck"},
        "no_shape": {"circle": "keinen Kreis", "square": "kein Quadrat", "triangle": "kein Dreieck"},
        "pos": {"left": "links", "middle": "in der Mitte", "right": "rechts"},
        "size": {"big": "groß", "small": "klein"},
        "prop": {"heavy": "schwer", "wood": "aus Holz", "old": "sehr alt"},
    },
    "es": {
        "colour": {"red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo"},
        "colour_f": {"red": "roja", "green": "verde", "blue": "azul", "yellow": "amarilla"},
        "shape": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo"},
        "the_shape": {"circle": "el círculo", "square": "el cuadrado", "triangle": "el triángulo"},
        "a_shape": {"circle": "un círculo", "square": "un cuadrado", "triangle": "un triángulo"},
        "no_shape": {"circle": "ningún círculo", "square": "ningún cuadrado", "triangle": "ningún triángulo"},
        "pos": {"left": "a la izquierda", "middle": "en el centro", "right": "a la derecha"},
        "size": {"big": "grande", "small": "pequeño"},
        "prop": {"heavy": "pesado", "wood": "de madera", "old": "muy viejo"},
    },
    "ru": {
        "colour": {"red": "красный", "green": "зелёный", "blue": "синий", "yellow": "жёлтый"},
        "colour_f": {"red": "красная", "green": "зелёная", "blue": "синяя", "yellow": "жёлтая"},
        "shape": {"circle": "круг", "square": "квадрат", "triangle": "треугольник"},
        "the_shape": {"circle": "круг", "square": "квадрат", "triangle": "треугольник"},
        "a_shape": {"circle": "круг", "square": "квадрат", "triangle": "треугольник"},
        "no_shape": {"circle": "круга", "square": "квадрата", "triangle": "треугольника"},  # genitive after нет
        "pos": {"left": "слева", "middle": "в центре", "right": "справа"},
        "size": {"big": "большой", "small": "маленький"},
        "prop": {"heavy": "тяжёлый", "wood": "из дерева", "old": "очень старый"},
    },
}

FRAMES: dict[str, dict[str, str]] = {
    "en": {
        "caption_plain": "{objs}.",
        "caption_shows": "The picture shows {objs}.",
        "hyp_colour": "{the_shape} is {colour}.",
        "hyp_exists": "There is {a_shape}.",
        "hyp_absent": "There is {no_shape}.",
        "hyp_pos": "{the_shape} is {pos}.",
        "hyp_prop": "{the_shape} is {prop}.",
        "nlvr_left_has": "The left picture contains {a_shape}.",
        "nlvr_right_has": "The right picture contains {a_shape}.",
        "nlvr_both_colour": "Both pictures contain a {colour_f} shape.",
        "nlvr_more": "The left picture has more shapes than the right one.",
        "nlvr_same": "Both pictures have the same number of shapes.",
        "q_colour": "What colour is {the_shape}?",
        "q_count": "How many shapes are there?",
        "q_exists": "Is there {a_shape}?",
        "q_which": "Which shape is {pos}?",
        "q_background": "What colour is the background?",
        "qa_sentence": "{the_shape} is {colour} and it is {pos}.",
        "qa_background": "The background is light grey.",
        "qa_where": "Where is {the_shape}?",
    },
    "de": {
        "caption_plain": "{objs}.",
        "caption_shows": "Das Bild zeigt {objs_acc}.",
        "hyp_colour": "{the_shape} ist {colour}.",
        "hyp_exists": "Es gibt {a_shape}.",
        "hyp_absent": "Es gibt {no_shape}.",
        "hyp_pos": "{the_shape} ist {pos}.",
        "hyp_prop": "{the_shape} ist {prop}.",
        "nlvr_left_has": "Das linke Bild enthält {a_shape}.",
        "nlvr_right_has": "Das rechte Bild enthält {a_shape}.",
        "nlvr_both_colour": "Beide Bilder enthalten eine {colour_f} Form.",
        "nlvr_more": "Das linke Bild hat mehr Formen als das rechte.",
        "nlvr_same": "Beide Bilder haben gleich viele Formen.",
        "q_colour": "Welche Farbe hat {the_shape}?",
        "q_count": "Wie viele Formen gibt es?",
        "q_exists": "Gibt es {a_shape}?",
        "q_which": "Welche Form ist {pos}?",
        "q_background": "Welche Farbe hat der Hintergrund?",
        "qa_sentence": "{the_shape} ist {colour} und liegt {pos}.",
        "qa_background": "Der Hintergrund ist hellgrau.",
        "qa_where": "Wo liegt {the_shape}?",
    },
    "es": {
        "caption_plain": "{objs}.",
        "caption_shows": "La imagen muestra {objs}.",
        "hyp_colour": "{the_shape} es {colour}.",
        "hyp_exists": "Hay {a_shape}.",
        "hyp_absent": "No hay {no_shape}.",
        "hyp_pos": "{the_shape} está {pos}.",
        "hyp_prop": "{the_shape} es {prop}.",
        "nlvr_left_has": "La imagen de la izquierda contiene {a_shape}.",
        "nlvr_right_has": "La imagen de la derecha contiene {a_shape}.",
        "nlvr_both_colour": "Ambas imágenes contienen una figura {colour_f}.",
        "nlvr_more": "La imagen de la izquierda tiene más figuras que la de la derecha.",
        "nlvr_same": "Ambas imágenes tienen el mismo número de figuras.",
        "q_colour": "¿De qué color es {the_shape}?",
        "q_count": "¿Cuántas figuras hay?",
        "q_exists": "¿Hay {a_shape}?",
        "q_which": "¿Qué figura está {pos}?",
        "q_background": "¿De qué color es el fondo?",
        "qa_sentence": "{the_shape} es {colour} y está {pos}.",
        "qa_background": "El fondo es gris claro.",
        "qa_where": "¿Dónde está {the_shape}?",
    },
    "ru": {
        "caption_plain": "{objs}.",
        "caption_shows": "На картинке {objs}.",
        "hyp_colour": "{the_shape} {colour}.",
        "hyp_exists": "На картинке есть {a_shape}.",
        "hyp_absent": "На картинке нет {no_shape}.",
        "hyp_pos": "{the_shape} находится {pos}.",
        "hyp_prop": "{the_shape} {prop}.",
        "nlvr_left_has": "На левой картинке есть {a_shape}.",
        "nlvr_right_has": "На правой картинке есть {a_shape}.",
        "nlvr_both_colour": "На обеих картинках есть {colour_f} фигура.",
        "nlvr_more": "На левой картинке больше фигур, чем на правой.",
        "nlvr_same": "На обеих картинках одинаковое число фигур.",
        "q_colour": "Какого цвета {the_shape}?",
        "q_count": "Сколько фигур на картинке?",
        "q_exists": "Есть ли на картинке {a_shape}?",
        "q_which": "Какая фигура находится {pos}?",
        "q_background": "Какого цвета фон?",
        "qa_sentence": "{the_shape} {colour} и находится {pos}.",
        "qa_background": "Фон светло-серый.",
        "qa_where": "Где находится {the_shape}?",
    },
}
AND = {"en": "and", "de": "und", "es": "y", "ru": "и"}
GERMAN_NEUTER = {"square", "triangle"}


def noun_phrase(lang: str, obj: Obj, accusative: bool = False, colour: bool = True) -> str:
    """'a big red circle on the left' in ``lang`` (German inflects for gender and case); without ``colour``:
    'a big circle on the left'."""
    words = WORDS[lang]
    size, col, shape, pos = (words[k][v] for k, v in zip(("size", "colour", "shape", "pos"), astuple(obj)))
    if lang == "de":
        # Mixed declension after "ein": -er/-es in the nominative, -en/-es in the accusative.
        neuter = obj.shape in GERMAN_NEUTER
        article, ending = ("ein", "es") if neuter else ("einen", "en") if accusative else ("ein", "er")
        size, col = f"{size}{ending}", f"{col}{ending}"
    adjectives = f"{size} {col}" if colour else size
    if lang == "en":
        return f"a {adjectives} {shape} {pos}"
    if lang == "de":
        return f"{article} {adjectives} {shape} {pos}"
    if lang == "es":
        return f"un {shape} {col} {size} {pos}" if colour else f"un {shape} {size} {pos}"
    return f"{adjectives} {shape} {pos}"


def astuple(obj: Obj) -> tuple[str, str, str, str]:
    return obj.size, obj.colour, obj.shape, obj.slot


def join_list(lang: str, items: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {AND[lang]} {items[-1]}"


def render(lang: str, frame: str, args: dict, switch: random.Random | None = None, p_switch: float = 0.5) -> str:
    """Fill ``frame`` in ``lang`` with the inflected forms of ``args`` (shape, colour, slot, prop, objects; a
    caption's ``colours: False`` leaves the objects' colours out).

    With ``switch``, code-switched text (CoSDA-ML, Qin et al. 2020): each filler (a shape, colour, position,
    property or listed object) is, with probability ``p_switch``, taken from another language, drawn by
    ``switch``; the frame's own words stay in ``lang``. Multilingual MLM on such text aligns the languages.
    """

    def source() -> str:
        if switch is None or switch.random() >= p_switch:
            return lang
        return switch.choice([other for other in WORDS if other != lang])

    fields: dict[str, str] = {}
    if "shape" in args:
        words = WORDS[source()]
        fields.update({k: words[k][args["shape"]] for k in ("the_shape", "a_shape", "no_shape")})
    if "colour" in args:
        words = WORDS[source()]
        fields.update(colour=words["colour"][args["colour"]], colour_f=words["colour_f"][args["colour"]])
    if "slot" in args:
        fields["pos"] = WORDS[source()]["pos"][args["slot"]]
    if "prop" in args:
        fields["prop"] = WORDS[source()]["prop"][args["prop"]]
    if "objects" in args:
        sources, colour = [source() for _ in args["objects"]], args.get("colours", True)
        fields["objs"] = join_list(lang, [noun_phrase(s, o, colour=colour) for s, o in zip(sources, args["objects"])])
        fields["objs_acc"] = join_list(
            lang, [noun_phrase(s, o, accusative=True, colour=colour) for s, o in zip(sources, args["objects"])]
        )
    text = FRAMES[lang][frame].format(**fields)
    return text[0].upper() + text[1:]


# ----------------------------------------------------------------------------------------- word classes

WORD_RE = re.compile(r"\w+|[^\w\s]")


def _colour_forms(lang: str) -> set[str]:
    forms = set(WORDS[lang]["colour"].values()) | set(WORDS[lang]["colour_f"].values())
    if lang == "de":
        forms |= {stem + ending for stem in WORDS["de"]["colour"].values() for ending in ("er", "es", "en")}
    return {f.lower() for f in forms}


COLOUR_WORDS = {lang: _colour_forms(lang) for lang in WORDS}
SHAPE_WORDS = {
    lang: {w.lower() for w in (*words["shape"].values(), *words["no_shape"].values()) if " " not in w}
    for lang, words in WORDS.items()
}


def words_and_classes(lang: str, text: str) -> tuple[list[str], list[str]]:
    """Word tokens of ``text`` (punctuation split off) and each one's class: ``COL``, ``SHP`` or ``O``."""
    tokens = WORD_RE.findall(text)
    classes = [
        "COL" if t.lower() in COLOUR_WORDS[lang] else "SHP" if t.lower() in SHAPE_WORDS[lang] else "O" for t in tokens
    ]
    return tokens, classes
