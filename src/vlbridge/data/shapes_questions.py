"""Questions about Shapes scenes: short-answer (VQA-style) and multiple-choice (ScienceQA-style).

Each question type is one function ``scene -> list[Question]`` returning every question of that type
the scene can answer unambiguously; the dataset builder then picks one per type so answers stay
balanced. Seven of the thirteen types need *where* things are (``local=True``): asking by cell,
answering with a cell, or relating two objects. These are the questions that pooled (global) image
features cannot answer, the case MemVP's "local vs global features" ablation is about.

Answers come from a small closed vocabulary: colour names, shape names, digits, yes/no, cell names.
Relations: A is "left of" B when A's column is smaller (rows ignored); "above" compares rows.
"Directly left of" means the neighbouring cell in the same row.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

from vlbridge.data.shapes import CELLS, COLORS, SHAPES, Scene, ShapeObject
from vlbridge.data.shapes_captions import CELL_PHRASES, plural, with_article


@dataclass(frozen=True)
class Question:
    """One question about a scene with its single correct answer."""

    text: str
    answer: str
    question_type: str  # a key of QUESTION_TYPES
    answer_type: str  # VQA's answer type: "yes/no" | "number" | "other"
    vocabulary: str  # what kind of word the answer is: "color" | "shape" | "cell" | "number" | "yes/no"
    local: bool  # True when answering needs where objects are, not only which objects there are


VOCABULARIES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "cell": CELLS,
    "number": tuple(str(i) for i in range(len(CELLS) + 1)),
    "yes/no": ("yes", "no"),
}

# Referring expressions: the first attribute combination that picks out exactly one object is used.
WITH_COLOR_AND_SHAPE = (("color", "shape"), ("size", "color", "shape"))
WITHOUT_COLOR = (("shape",), ("size", "shape"))
WITHOUT_SHAPE = (("color",), ("size", "color"))

DIRECTIONS = {  # relation phrase -> (row step, column step) to the neighbouring cell
    "directly above": (-1, 0), "directly below": (1, 0),
    "directly to the left of": (0, -1), "directly to the right of": (0, 1),
}
RELATIONS: dict[str, Callable[[ShapeObject, ShapeObject], bool]] = {
    "left of": lambda a, b: a.col < b.col,
    "right of": lambda a, b: a.col > b.col,
    "above": lambda a, b: a.row < b.row,
    "below": lambda a, b: a.row > b.row,
}


def refer(obj: ShapeObject, scene: Scene, combinations: tuple[tuple[str, ...], ...]) -> str | None:
    """A description like "large red circle" that fits ``obj`` and no other object, or None."""
    for attributes in combinations:
        key = tuple(getattr(obj, a) for a in attributes)
        if sum(tuple(getattr(o, a) for a in attributes) == key for o in scene.objects) == 1:
            return " ".join(key)
    return None


def _ask(text: str, answer: str, question_type: str, vocabulary: str, local: bool) -> Question:
    answer_type = {"yes/no": "yes/no", "number": "number"}.get(vocabulary, "other")
    return Question(text, answer, question_type, answer_type, vocabulary, local)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def color_of(scene: Scene) -> list[Question]:
    return [_ask(f"What color is the {name}?", o.color, "color_of", "color", False)
            for o in scene.objects if (name := refer(o, scene, WITHOUT_COLOR))]


def color_at(scene: Scene) -> list[Question]:
    return [_ask(f"What color is the shape {CELL_PHRASES[o.cell]}?", o.color, "color_at", "color", True)
            for o in scene.objects]


def shape_of(scene: Scene) -> list[Question]:
    return [_ask(f"What shape is the {name} object?", o.shape, "shape_of", "shape", False)
            for o in scene.objects if (name := refer(o, scene, WITHOUT_SHAPE))]


def shape_at(scene: Scene) -> list[Question]:
    return [_ask(f"What shape is {CELL_PHRASES[o.cell]}?", o.shape, "shape_at", "shape", True)
            for o in scene.objects]


def count_all(scene: Scene) -> list[Question]:
    return [_ask("How many shapes are there?", str(len(scene.objects)), "count_all", "number", False)]


def count_color(scene: Scene) -> list[Question]:
    return [_ask(f"How many {c} shapes are there?", str(sum(o.color == c for o in scene.objects)),
                 "count_color", "number", False) for c in COLORS]


def count_shape(scene: Scene) -> list[Question]:
    return [_ask(f"How many {plural(s)} are there?", str(sum(o.shape == s for o in scene.objects)),
                 "count_shape", "number", False) for s in SHAPES]


def position(scene: Scene) -> list[Question]:
    return [_ask(f"Where is the {name}?", o.cell, "position", "cell", True)
            for o in scene.objects if (name := refer(o, scene, WITH_COLOR_AND_SHAPE))]


def exists(scene: Scene) -> list[Question]:
    # "No" questions only about near misses (right colour or right shape, wrong combination), so
    # colours and shapes must be bound together, not just detected.
    colors = {o.color for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    present = {(o.color, o.shape) for o in scene.objects}
    return [_ask(f"Is there {with_article(f'{c} {s}')}?", _yes_no((c, s) in present), "exists", "yes/no", False)
            for c in COLORS for s in SHAPES if c in colors or s in shapes]


def exists_at(scene: Scene) -> list[Question]:
    # Only about colours and shapes that occur somewhere in the scene: the answer depends on where.
    questions = []
    for cell in CELLS:
        here = scene.object_at(cell)
        phrase = CELL_PHRASES[cell]
        for s in dict.fromkeys(o.shape for o in scene.objects):
            questions.append(_ask(f"Is there {with_article(s)} {phrase}?",
                                  _yes_no(here is not None and here.shape == s), "exists_at", "yes/no", True))
        for c in dict.fromkeys(o.color for o in scene.objects):
            questions.append(_ask(f"Is there {with_article(c)} shape {phrase}?",
                                  _yes_no(here is not None and here.color == c), "exists_at", "yes/no", True))
    return questions


def relation(scene: Scene) -> list[Question]:
    questions = []
    named = [(o, name) for o in scene.objects if (name := refer(o, scene, WITH_COLOR_AND_SHAPE))]
    for (a, name_a), (b, name_b) in permutations(named, 2):
        for phrase, holds in RELATIONS.items():
            questions.append(_ask(f"Is the {name_a} {phrase} the {name_b}?", _yes_no(holds(a, b)),
                                  "relation", "yes/no", True))
    return questions


def _neighbours(scene: Scene) -> list[tuple[str, str, ShapeObject]]:
    """(name of an anchor object, direction phrase, the object in the cell next to it)."""
    found = []
    for anchor in scene.objects:
        name = refer(anchor, scene, WITH_COLOR_AND_SHAPE)
        for phrase, (dr, dc) in DIRECTIONS.items() if name else ():
            row, col = anchor.row + dr, anchor.col + dc
            if 0 <= row < 3 and 0 <= col < 3 and (other := scene.object_at(CELLS[3 * row + col])):
                found.append((name, phrase, other))
    return found


def relation_shape(scene: Scene) -> list[Question]:
    return [_ask(f"What shape is {phrase} the {name}?", other.shape, "relation_shape", "shape", True)
            for name, phrase, other in _neighbours(scene)]


def relation_color(scene: Scene) -> list[Question]:
    return [_ask(f"What color is the shape {phrase} the {name}?", other.color, "relation_color", "color", True)
            for name, phrase, other in _neighbours(scene)]


QUESTION_TYPES: dict[str, Callable[[Scene], list[Question]]] = {
    "color_of": color_of, "color_at": color_at, "shape_of": shape_of, "shape_at": shape_at,
    "count_all": count_all, "count_color": count_color, "count_shape": count_shape,
    "position": position, "exists": exists, "exists_at": exists_at, "relation": relation,
    "relation_shape": relation_shape, "relation_color": relation_color,
}
"""Every short-answer question type (name -> generator)."""

def all_questions(scene: Scene) -> dict[str, list[Question]]:
    """Every question of every type the scene can answer, by type."""
    return {name: generate(scene) for name, generate in QUESTION_TYPES.items()}


MC_QUESTION_TYPES = tuple(name for name in QUESTION_TYPES if name not in ("exists", "exists_at", "relation"))
"""Types that make sense as multiple choice (not yes/no)."""


def choices_for(question: Question, scene: Scene, rng: random.Random, n_options: int,
                max_count: int = 4) -> tuple[list[str], int]:
    """Options (the answer plus distractors, shuffled) and the index of the answer.

    Distractors are preferably *present in the scene* (other colours/shapes/occupied cells, or
    neighbouring numbers), so the right option cannot be found by checking what the image contains.
    Numbers range over 0..``max_count`` (the most objects a scene of the dataset can hold): a larger
    number would be a giveaway, and so would "0" for "How many shapes are there?".
    """
    vocabulary = list(VOCABULARIES[question.vocabulary])
    if question.vocabulary == "number":
        first = 1 if question.question_type == "count_all" else 0
        vocabulary = [str(i) for i in range(first, max(max_count, int(question.answer)) + 1)]
    others = [v for v in vocabulary if v != question.answer]
    if question.vocabulary == "number":
        hard = sorted(others, key=lambda v: (abs(int(v) - int(question.answer)), int(v)))[:2]
    else:
        attribute = {"color": "color", "shape": "shape", "cell": "cell"}[question.vocabulary]
        hard = [v for v in dict.fromkeys(getattr(o, attribute) for o in scene.objects) if v != question.answer]
    rest = [v for v in others if v not in hard]
    rng.shuffle(hard)
    rng.shuffle(rest)
    n_options = max(2, min(n_options, len(vocabulary)))
    options = [question.answer] + (hard + rest)[: n_options - 1]
    rng.shuffle(options)
    return options, options.index(question.answer)
