"""Questions about Shapes clips, and their captions.

As for scenes (:mod:`vlbridge.data.shapes_questions`), each question type is one function ``clip ->
list[Question]`` giving every question of that type the clip answers unambiguously; the dataset builder picks
one per type, balancing answers. Shapes are named by the first attribute combination that fits no other shape of
the clip ("red circle", "large red circle"). Three of the five types need the frames' order (a model that reads
the frames as an unordered set cannot answer them): ``direction``, ``where_first``, ``where_last``.

- ``direction``: "Which way did the red circle move?" -> left | right | up | down | did not move (shapes shown
  in every frame);
- ``frames_showing``: "How many frames show a star?" / "... a blue shape?" -> 0..F (shapes and colours of the
  clip, and one that is absent);
- ``moved_count``: "How many shapes moved?" -> 0..3;
- ``where_first`` / ``where_last``: "Where is the red circle in the first frame?" -> a cell name.

The caption says, in reading order, what each shape does: "A large red circle moves right from the top left to
the top, a small blue star stays in the center and a green square is at the bottom in frames 2 to 3."
"""

from __future__ import annotations

from collections.abc import Callable

from vlbridge.data.shapes import CELLS, COLORS, SHAPES
from vlbridge.data.shapes_captions import CELL_PHRASES, join_list, sentence, with_article
from vlbridge.data.shapes_clips import DIRECTIONS, STILL, Clip, ClipObject
from vlbridge.data.shapes_questions import WITH_COLOR_AND_SHAPE, Question, refer

CLIP_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "direction": tuple(DIRECTIONS) + (STILL,),
    "cell": CELLS,
}


def _ask(text: str, answer: str, question_type: str, vocabulary: str, local: bool) -> Question:
    answer_type = "number" if vocabulary == "number" else "other"
    return Question(text, answer, question_type, answer_type, vocabulary, local)


def _named(clip: Clip, *, always_shown: bool = False) -> list[tuple[ClipObject, str]]:
    """(shape, a name only it fits) for the clip's shapes that such a name exists for."""
    return [(o, name) for o in clip.objects
            if (not always_shown or o.always_shown) and (name := refer(o, clip, WITH_COLOR_AND_SHAPE))]


def direction(clip: Clip) -> list[Question]:
    return [_ask(f"Which way did the {name} move?", o.direction, "direction", "direction", True)
            for o, name in _named(clip, always_shown=True)]


def frames_showing(clip: Clip) -> list[Question]:
    """About every shape and colour of the clip, and the first shape and colour (in vocabulary order) it lacks."""
    shapes = [s for s in SHAPES if any(o.shape == s for o in clip.objects)]
    colors = [c for c in COLORS if any(o.color == c for o in clip.objects)]
    shapes += [s for s in SHAPES if s not in shapes][:1]
    colors += [c for c in COLORS if c not in colors][:1]

    def frames(fits: Callable[[ClipObject], bool]) -> str:
        return str(sum(any(fits(o) and o.cells[t] is not None for o in clip.objects) for t in range(clip.num_frames)))

    return ([_ask(f"How many frames show {with_article(s)}?", frames(lambda o: o.shape == s), "frames_showing",
                  "number", False) for s in shapes]
            + [_ask(f"How many frames show {with_article(c)} shape?", frames(lambda o: o.color == c),
                    "frames_showing", "number", False) for c in colors])


def moved_count(clip: Clip) -> list[Question]:
    moved = sum(o.direction != STILL for o in clip.objects)
    return [_ask("How many shapes moved?", str(moved), "moved_count", "number", True)]


def where_first(clip: Clip) -> list[Question]:
    return [_ask(f"Where is the {name} in the first frame?", o.cells[0], "where_first", "cell", True)
            for o, name in _named(clip) if o.cells[0] is not None]


def where_last(clip: Clip) -> list[Question]:
    return [_ask(f"Where is the {name} in the last frame?", o.cells[-1], "where_last", "cell", True)
            for o, name in _named(clip) if o.cells[-1] is not None]


CLIP_QUESTION_TYPES: dict[str, Callable[[Clip], list[Question]]] = {
    "direction": direction, "frames_showing": frames_showing, "moved_count": moved_count,
    "where_first": where_first, "where_last": where_last,
}
"""Every clip question type (name -> generator)."""


def all_clip_questions(clip: Clip) -> dict[str, list[Question]]:
    """Every question of every type the clip can answer, by type."""
    return {name: generate(clip) for name, generate in CLIP_QUESTION_TYPES.items()}


def clip_caption(clip: Clip) -> str:
    """What each shape does, in the clip's order (reading order of where each is first seen)."""
    parts = []
    for o in clip.objects:
        name = with_article(f"{o.size} {o.color} {o.shape}")
        if o.direction != STILL:
            parts.append(f"{name} moves {o.direction} from the {o.first_cell} to the {o.last_cell}")
        elif o.always_shown:
            parts.append(f"{name} stays {CELL_PHRASES[o.first_cell]}")
        else:
            first, last = o.shown[0] + 1, o.shown[-1] + 1  # frames are counted from 1 in text
            when = f"in frame {first}" if first == last else f"in frames {first} to {last}"
            parts.append(f"{name} is {CELL_PHRASES[o.first_cell]} {when}")
    return sentence(join_list(parts))
