"""Shapes questions: every generated answer agrees with an independent reading of the question
against the scene, referring expressions are unambiguous, and multiple-choice options are sound."""

from __future__ import annotations

import random
import re

import pytest

from vlbridge.data.shapes import CELLS, COLORS, SHAPES, Background, Scene, ShapeObject, sample_scene
from vlbridge.data.shapes_questions import (MC_QUESTION_TYPES, QUESTION_TYPES, VOCABULARIES, all_questions,
                                            choices_for)

PHRASE_TO_CELL = {"at the top left": "top left", "at the top": "top", "at the top right": "top right",
                  "on the left": "left", "in the center": "center", "on the right": "right",
                  "at the bottom left": "bottom left", "at the bottom": "bottom", "at the bottom right": "bottom right"}
PHRASE = "|".join(sorted(PHRASE_TO_CELL, key=len, reverse=True))
STEPS = {"directly above": (-1, 0), "directly below": (1, 0), "directly to the left of": (0, -1),
         "directly to the right of": (0, 1)}
STEP = "|".join(STEPS)
DESC = r"(?:(?:small|large) )?(?:(?:red|green|blue|yellow|purple|orange) )?(?:circle|square|triangle|star|cross)"


def resolve(words: str, scene: Scene) -> ShapeObject:
    """The one object fitting a description such as 'large red circle' (fails if not exactly one)."""
    parts = words.split()
    matches = [o for o in scene.objects if all(w in (o.size, o.color, o.shape) for w in parts)]
    assert len(matches) == 1, (words, scene)
    return matches[0]


def at(scene: Scene, row: int, col: int) -> ShapeObject | None:
    if 0 <= row < 3 and 0 <= col < 3:
        return next((o for o in scene.objects if o.cell == CELLS[3 * row + col]), None)
    return None


def oracle(text: str, scene: Scene) -> str:
    """Answer a Shapes question from the scene, written independently of the generator."""
    yes_no = lambda flag: "yes" if flag else "no"
    objects = scene.objects
    if m := re.fullmatch(rf"What color is the shape ({PHRASE})\?", text):
        return next(o.color for o in objects if o.cell == PHRASE_TO_CELL[m[1]])
    if m := re.fullmatch(rf"What color is the shape ({STEP}) the ({DESC})\?", text):
        anchor = resolve(m[2], scene)
        dr, dc = STEPS[m[1]]
        return at(scene, anchor.row + dr, anchor.col + dc).color
    if m := re.fullmatch(r"What color is the ((?:small |large )?\w+)\?", text):
        return resolve(m[1], scene).color
    if m := re.fullmatch(rf"What shape is ({PHRASE})\?", text):
        return next(o.shape for o in objects if o.cell == PHRASE_TO_CELL[m[1]])
    if m := re.fullmatch(rf"What shape is ({STEP}) the ({DESC})\?", text):
        anchor = resolve(m[2], scene)
        dr, dc = STEPS[m[1]]
        return at(scene, anchor.row + dr, anchor.col + dc).shape
    if m := re.fullmatch(r"What shape is the ((?:small |large )?\w+) object\?", text):
        return resolve(m[1], scene).shape
    if text == "How many shapes are there?":
        return str(len(objects))
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", text):
        return str(sum(o.color == m[1] for o in objects))
    if m := re.fullmatch(r"How many (\w+) are there\?", text):
        singular = {s + ("es" if s.endswith("s") else "s"): s for s in SHAPES}[m[1]]
        return str(sum(o.shape == singular for o in objects))
    if m := re.fullmatch(rf"Where is the ({DESC})\?", text):
        return resolve(m[1], scene).cell
    if m := re.fullmatch(rf"Is there an? (\w+) shape ({PHRASE})\?", text):
        return yes_no(any(o.color == m[1] and o.cell == PHRASE_TO_CELL[m[2]] for o in objects))
    if m := re.fullmatch(rf"Is there an? (\w+) ({PHRASE})\?", text):
        return yes_no(any(o.shape == m[1] and o.cell == PHRASE_TO_CELL[m[2]] for o in objects))
    if m := re.fullmatch(r"Is there an? (\w+) (\w+)\?", text):
        return yes_no(any(o.color == m[1] and o.shape == m[2] for o in objects))
    if m := re.fullmatch(rf"Is the ({DESC}) (left of|right of|above|below) the ({DESC})\?", text):
        a, b = resolve(m[1], scene), resolve(m[3], scene)
        return yes_no({"left of": a.col < b.col, "right of": a.col > b.col,
                       "above": a.row < b.row, "below": a.row > b.row}[m[2]])
    raise AssertionError(f"unrecognised question {text!r}")


def random_scenes(count: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, f"s{i}") for i in range(count)]


def test_every_candidate_answer_matches_the_oracle():
    seen_types = set()
    for scene in random_scenes(250):
        for name, questions in all_questions(scene).items():
            for q in questions:
                seen_types.add(name)
                assert q.question_type == name
                assert q.answer in VOCABULARIES[q.vocabulary]
                assert q.answer == oracle(q.text, scene), (q, scene)
                assert q.answer_type == {"yes/no": "yes/no", "number": "number"}.get(q.vocabulary, "other")
    assert seen_types == set(QUESTION_TYPES)


def test_position_answers_are_the_object_cells():
    for scene in random_scenes(100, seed=3):
        for q in all_questions(scene)["position"]:
            name = q.text.removeprefix("Where is the ").removesuffix("?")
            assert q.answer == resolve(name, scene).cell


SCENE = Scene("hand", (
    ShapeObject("circle", "red", "large", "top left"),
    ShapeObject("circle", "blue", "small", "top"),
    ShapeObject("square", "red", "small", "center"),
    ShapeObject("triangle", "green", "large", "bottom right"),
), Background("plain", "beige"))


def texts(name: str) -> dict[str, str]:
    return {q.text: q.answer for q in QUESTION_TYPES[name](SCENE)}


def test_hand_made_scene():
    assert texts("color_of") == {"What color is the large circle?": "red", "What color is the small circle?": "blue",
                                 "What color is the square?": "red", "What color is the triangle?": "green"}
    assert "What color is the circle?" not in texts("color_of")  # ambiguous: two circles
    assert texts("shape_of") == {"What shape is the large red object?": "circle",
                                 "What shape is the small red object?": "square",
                                 "What shape is the blue object?": "circle", "What shape is the green object?": "triangle"}
    assert texts("position")["Where is the red circle?"] == "top left"
    assert texts("color_at")["What color is the shape in the center?"] == "red"
    assert texts("shape_at")["What shape is at the bottom right?"] == "triangle"
    assert texts("count_all") == {"How many shapes are there?": "4"}
    assert texts("count_color")["How many red shapes are there?"] == "2"
    assert texts("count_color")["How many yellow shapes are there?"] == "0"
    assert texts("count_shape")["How many circles are there?"] == "2"
    assert texts("count_shape")["How many crosses are there?"] == "0"
    relation = texts("relation")
    assert relation["Is the red circle left of the red square?"] == "yes"
    assert relation["Is the red circle above the green triangle?"] == "yes"
    assert relation["Is the blue circle left of the red square?"] == "no"  # same column
    assert relation["Is the green triangle below the blue circle?"] == "yes"
    assert texts("relation_shape") == {
        "What shape is directly to the right of the red circle?": "circle",
        "What shape is directly to the left of the blue circle?": "circle",
        "What shape is directly below the blue circle?": "square",
        "What shape is directly above the red square?": "circle",
    }
    assert texts("relation_color")["What color is the shape directly below the blue circle?"] == "red"
    exists = texts("exists")
    assert exists["Is there a green triangle?"] == "yes" and exists["Is there a red triangle?"] == "no"
    assert "Is there a yellow star?" not in exists  # only near misses are asked
    exists_at = texts("exists_at")
    assert exists_at["Is there a circle at the top?"] == "yes"
    assert exists_at["Is there a square at the top?"] == "no"
    assert exists_at["Is there a red shape in the center?"] == "yes"
    assert exists_at["Is there a green shape on the left?"] == "no"
    assert "Is there a star at the top?" not in exists_at  # no star anywhere: not a "where" question


def test_referring_expressions_need_size_when_colour_and_shape_repeat():
    scene = Scene("twins", (ShapeObject("star", "red", "large", "top"), ShapeObject("star", "red", "small", "bottom"),
                            ShapeObject("star", "red", "small", "left")), Background("plain", "gray"))
    assert texts_of(scene, "position") == {"Where is the large red star?": "top"}  # the small ones are twins
    assert texts_of(scene, "relation") == {}
    assert texts_of(scene, "color_of") == {"What color is the large star?": "red"}


def texts_of(scene: Scene, name: str) -> dict[str, str]:
    return {q.text: q.answer for q in QUESTION_TYPES[name](scene)}


def test_local_questions_are_a_large_share_of_types():
    local = {q.question_type for s in random_scenes(50) for qs in all_questions(s).values() for q in qs if q.local}
    assert local == {"color_at", "shape_at", "position", "exists_at", "relation", "relation_shape", "relation_color"}


@pytest.mark.parametrize("seed", range(3))
def test_multiple_choice_options(seed):
    rng = random.Random(seed)
    for scene in random_scenes(60, seed=seed):
        for name in MC_QUESTION_TYPES:
            for q in all_questions(scene)[name]:
                n = rng.randint(2, 5)
                choices, index = choices_for(q, scene, rng, n_options=n)
                assert choices[index] == q.answer
                domain = {"0", "1", "2", "3", "4"} if q.vocabulary == "number" else set(VOCABULARIES[q.vocabulary])
                if name == "count_all":
                    domain.discard("0")  # at least one shape: "0" would be a giveaway
                assert len(set(choices)) == len(choices) == min(n, len(domain))
                assert set(choices) <= domain
                if q.vocabulary in ("color", "shape") and n >= 3:
                    # Other values present in the scene are preferred as distractors.
                    present = {getattr(o, q.vocabulary) for o in scene.objects} - {q.answer}
                    assert set(choices) & present == present or len(present) >= n - 1


def test_vocabularies_are_small_and_closed():
    assert VOCABULARIES["color"] == tuple(COLORS) and len(COLORS) >= 6
    assert VOCABULARIES["shape"] == SHAPES and len(SHAPES) >= 4
    assert VOCABULARIES["cell"] == CELLS and len(CELLS) == 9
