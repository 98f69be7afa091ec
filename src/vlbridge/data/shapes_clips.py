"""Short clips of the Shapes world: a few frames of one 3x3 scene in which shapes move by whole cells.

A clip shows 1-3 shapes over ``num_frames`` frames on one background. Each shape is one of:

- *moving*: shown in every frame; between some consecutive frames it steps one cell, always the same way
  (left, right, up or down), one to two steps in all, so where it went is a single direction;
- *still*: shown in every frame, in one cell;
- *passing*: in one cell, but shown only in a run of consecutive frames (it appears late or leaves early).

No two shapes share a cell in any frame, and each keeps its size and its offset inside the cell (``dx``, ``dy``),
so a move is exactly one cell. Frame ``t`` is an ordinary :class:`Scene` (:meth:`Clip.frame`), drawn by
:func:`vlbridge.data.shapes.render_scene`. Everything comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vlbridge.data.shapes import (CELL_MARGIN, CELLS, COLORS, SHAPES, SIZE_RADIUS, SIZES, Background, Scene,
                                  ShapeObject, sample_background)

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
"""Where a moving shape goes: (row step, column step) per move."""
STILL = "did not move"
"""The answer to "Which way did it move?" for a shape that stayed in its cell."""
KINDS = ("moving", "still", "passing")
KIND_WEIGHTS = (0.5, 0.25, 0.25)
MAX_STEPS = 2  # a 3x3 grid has room for at most two steps one way
PLACEMENT_ATTEMPTS = 50


@dataclass(frozen=True)
class ClipObject:
    """One shape of a clip: its cell in each frame (None where the frame does not show it)."""

    shape: str
    color: str
    size: str
    cells: tuple[str | None, ...]
    dx: float = 0.0
    dy: float = 0.0

    @property
    def shown(self) -> tuple[int, ...]:
        """The frames that show it (0-based, in order)."""
        return tuple(t for t, cell in enumerate(self.cells) if cell is not None)

    @property
    def always_shown(self) -> bool:
        return len(self.shown) == len(self.cells)

    @property
    def first_cell(self) -> str:
        return self.cells[self.shown[0]]

    @property
    def last_cell(self) -> str:
        return self.cells[self.shown[-1]]

    @property
    def direction(self) -> str:
        """Which way it moved from its first to its last shown frame (one of :data:`DIRECTIONS`), or :data:`STILL`."""
        start, end = CELLS.index(self.first_cell), CELLS.index(self.last_cell)
        rows, cols = end // 3 - start // 3, end % 3 - start % 3
        if rows == cols == 0:
            return STILL
        return next(name for name, (dr, dc) in DIRECTIONS.items() if (dr, dc) == (_sign(rows), _sign(cols)))


@dataclass(frozen=True)
class Clip:
    """A clip: its id (also the stem of its frames' files), its shapes, its background."""

    id: str
    objects: tuple[ClipObject, ...]
    background: Background

    @property
    def num_frames(self) -> int:
        return len(self.objects[0].cells)

    def frame(self, t: int) -> Scene:
        """Frame ``t`` as a scene of the shapes it shows (in reading order, as a scene's objects are)."""
        shown = [ShapeObject(o.shape, o.color, o.size, o.cells[t], o.dx, o.dy) for o in self.objects
                 if o.cells[t] is not None]
        shown.sort(key=lambda o: CELLS.index(o.cell))
        return Scene(f"{self.id}_f{t}", tuple(shown), self.background)

    @property
    def signature(self) -> tuple:
        """What the clip shows, ignoring jitter and background: equal signatures = same content."""
        return tuple((o.cells, o.shape, o.color, o.size) for o in self.objects)


def sample_clip(rng: random.Random, clip_id: str, num_frames: int = 4, max_objects: int = 3) -> Clip:
    """Draw one clip of ``num_frames`` frames and 1..``max_objects`` shapes from ``rng``."""
    if num_frames < 2:
        raise ValueError(f"a clip has at least 2 frames, got {num_frames}")
    if not 1 <= max_objects <= 4:
        raise ValueError(f"a clip holds 1..4 shapes, got {max_objects}")
    wanted = rng.randint(1, max_objects)
    objects: list[ClipObject] = []
    for _ in range(PLACEMENT_ATTEMPTS * wanted):
        if len(objects) == wanted:
            break
        candidate = _sample_object(rng, num_frames)
        if all(_apart(candidate, other) for other in objects):
            objects.append(candidate)
    # reading order of where each shape is first seen, then by its first frame
    objects.sort(key=lambda o: (CELLS.index(o.first_cell), o.shown[0]))
    return Clip(clip_id, tuple(objects), sample_background(rng))


def _sample_object(rng: random.Random, num_frames: int) -> ClipObject:
    kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
    shape, color, size = rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES)
    jitter = 0.5 - SIZE_RADIUS[size] - CELL_MARGIN
    dx, dy = round(rng.uniform(-jitter, jitter), 4), round(rng.uniform(-jitter, jitter), 4)
    if kind == "moving":
        cells = _moving_cells(rng, num_frames)
    else:
        cell = rng.choice(CELLS)
        first, last = 0, num_frames - 1
        if kind == "passing":  # a run of frames that is not all of them
            while (first, last) == (0, num_frames - 1):
                first = rng.randrange(num_frames)
                last = rng.randrange(first, num_frames)
        cells = tuple(cell if first <= t <= last else None for t in range(num_frames))
    return ClipObject(shape, color, size, cells, dx, dy)


def _moving_cells(rng: random.Random, num_frames: int) -> tuple[str, ...]:
    """A start cell, a direction and 1..MAX_STEPS one-cell steps at distinct frame changes."""
    direction = rng.choice(list(DIRECTIONS))
    dr, dc = DIRECTIONS[direction]
    steps = rng.randint(1, min(MAX_STEPS, num_frames - 1))
    # start cells from which `steps` steps stay on the grid
    starts = [c for c in range(len(CELLS)) if 0 <= c // 3 + steps * dr < 3 and 0 <= c % 3 + steps * dc < 3]
    start = rng.choice(starts)
    moves = set(rng.sample(range(1, num_frames), steps))  # frame t differs from frame t-1
    row, col, cells = start // 3, start % 3, []
    for t in range(num_frames):
        if t in moves:
            row, col = row + dr, col + dc
        cells.append(CELLS[3 * row + col])
    return tuple(cells)


def _apart(a: ClipObject, b: ClipObject) -> bool:
    """No frame shows the two in one cell."""
    return all(x is None or y is None or x != y for x, y in zip(a.cells, b.cells))


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)
