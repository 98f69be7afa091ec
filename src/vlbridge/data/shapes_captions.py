"""Captions of Shapes scenes: one canonical caption plus paraphrased references (like COCO's five).

The canonical caption lists every object in reading order with size, colour, shape and cell::

    A large red circle at the top left and a small blue square in the center.

The paraphrases say the same with other templates and synonyms (so CIDEr's consensus over several
references is meaningful), and some also mention the background.
"""

from __future__ import annotations

import random

from vlbridge.data.shapes import Scene, ShapeObject

CELL_PHRASES: dict[str, str] = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom", "bottom right": "at the bottom right",
}
"""How a cell is named inside a sentence ("the shape at the top left", "the shape in the center")."""

CELL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "in the upper left"),
    "top": ("at the top middle", "in the upper middle"),
    "top right": ("in the top right corner", "in the upper right"),
    "left": ("at the middle left", "on the left side"),
    "center": ("in the middle",),
    "right": ("at the middle right", "on the right side"),
    "bottom left": ("in the bottom left corner", "in the lower left"),
    "bottom": ("at the bottom middle", "in the lower middle"),
    "bottom right": ("in the bottom right corner", "in the lower right"),
}
SIZE_SYNONYMS = {"small": ("little", "tiny"), "large": ("big",)}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BACKGROUND_ADJECTIVES = {"plain": "plain", "stripes": "striped", "checkers": "checkered", "noise": "mottled"}
N_REFERENCES = 5


def article(phrase: str) -> str:
    """'a' or 'an' for the phrase that follows."""
    return "an" if phrase[:1] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith(("s", "x", "sh", "ch")) else shape + "s"


def join_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def caption(scene: Scene) -> str:
    """The canonical caption: every object with size, colour, shape and cell, in reading order."""
    parts = [f"{with_article(f'{o.size} {o.color} {o.shape}')} {CELL_PHRASES[o.cell]}" for o in scene.objects]
    return sentence(join_list(parts))


def background_phrase(scene: Scene) -> str:
    return f"{BACKGROUND_ADJECTIVES[scene.background.kind]} {scene.background.tone} background"


def references(scene: Scene, rng: random.Random) -> list[str]:
    """:data:`N_REFERENCES` distinct captions of the scene, the canonical one first."""
    count = len(scene.objects)
    noun = "shape" if count == 1 else "shapes"

    def name(obj: ShapeObject, *, size: bool = True, synonyms: bool = False) -> str:
        words = []
        if size:
            words.append(rng.choice((obj.size,) + SIZE_SYNONYMS[obj.size]) if synonyms else obj.size)
        return with_article(" ".join(words + [obj.color, obj.shape]))

    def where(obj: ShapeObject) -> str:
        return rng.choice((CELL_PHRASES[obj.cell],) + CELL_SYNONYMS[obj.cell])

    objects = list(scene.objects)
    listed = join_list([f"{name(o, synonyms=True)} {where(o)}" for o in objects])
    if count == 1:
        counted = f"there is one shape: {listed}"
    else:
        counted = f"there are {NUMBER_WORDS[count]} shapes: {listed}"
    located = ", and ".join(f"{where(o)} there is {name(o, synonyms=True)}" for o in reversed(objects))
    pictured = (f"a picture of {join_list([f'{name(o, size=False)} {where(o)}' for o in objects])} "
                f"on a {background_phrase(scene)}")
    on_background = (f"{NUMBER_WORDS[count]} {noun} on a {background_phrase(scene)}: "
                     + join_list([f"{name(o, synonyms=True)} {where(o)}" for o in objects]))
    candidates = [caption(scene)] + [sentence(t) for t in (counted, located, pictured, on_background)]
    # Templates differ in wording, so they are distinct; guard anyway to never emit duplicates.
    unique = list(dict.fromkeys(candidates))
    if len(unique) != N_REFERENCES:
        raise AssertionError(f"scene {scene.id}: references are not distinct: {candidates}")
    return unique
