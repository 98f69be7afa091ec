"""The Shapes world: small procedurally generated scenes, the built-in dataset of vlbridge.

A scene is 1-4 coloured shapes placed on a 3x3 grid of cells (at most one per cell) over a plain or
textured background. Everything is drawn from a ``random.Random`` passed in, so one seed gives the same
scenes on every machine, and rendering is a pure function of the scene.

Colours are saturated and far apart in hue; backgrounds use only near-grey tones (HSV saturation
<= 0.12) so no background is ever mistaken for an object colour.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 40),
    "green": (30, 165, 60),
    "blue": (40, 90, 225),
    "yellow": (245, 215, 20),
    "purple": (145, 55, 195),
    "orange": (250, 120, 10),
}
SIZES = ("small", "large")
CELLS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # row-major: cell index i is row i // 3, column i % 3
BACKGROUND_KINDS = ("plain", "stripes", "checkers", "noise")
BACKGROUND_TONES: dict[str, tuple[int, int, int]] = {
    "light gray": (210, 210, 210),
    "beige": (222, 214, 198),
    "gray blue": (188, 196, 206),
    "gray": (150, 150, 150),
    "dark gray": (72, 74, 78),
}
STRIPE_ORIENTATIONS = ("horizontal", "vertical", "diagonal")

# Half-extent of a shape as a fraction of the cell width; the gap keeps shapes of neighbouring cells
# apart even after jitter.
SIZE_RADIUS = {"small": 0.21, "large": 0.40}
CELL_MARGIN = 0.05
SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered down: anti-aliased edges
REPEAT_PROBABILITY = 0.3  # chance to reuse an earlier object's colour (or shape): makes position matter


@dataclass(frozen=True)
class ShapeObject:
    """One shape of a scene. ``dx``/``dy`` move its centre off the cell centre, in cell widths."""

    shape: str
    color: str
    size: str
    cell: str
    dx: float = 0.0
    dy: float = 0.0

    @property
    def row(self) -> int:
        return CELLS.index(self.cell) // 3

    @property
    def col(self) -> int:
        return CELLS.index(self.cell) % 3


@dataclass(frozen=True)
class Background:
    """What is behind the shapes. ``period`` (pixels at 224) and ``orientation`` apply to textures."""

    kind: str
    tone: str
    period: int = 0
    orientation: str = ""
    noise_seed: int = 0


@dataclass(frozen=True)
class Scene:
    """A scene: its id (also the image file stem), its objects in reading order, its background."""

    id: str
    objects: tuple[ShapeObject, ...]
    background: Background

    def object_at(self, cell: str) -> ShapeObject | None:
        return next((obj for obj in self.objects if obj.cell == cell), None)

    @property
    def signature(self) -> tuple:
        """What the scene shows, ignoring jitter and background: equal signatures = same content."""
        return tuple((obj.cell, obj.shape, obj.color, obj.size) for obj in self.objects)


def sample_scene(rng: random.Random, scene_id: str, n_objects: int | None = None, max_objects: int = 4) -> Scene:
    """Draw one scene from ``rng`` (1..``max_objects`` objects unless ``n_objects`` is given)."""
    if n_objects is None:
        n_objects = rng.randint(1, max_objects)
    if not 1 <= n_objects <= len(CELLS):
        raise ValueError(f"a scene holds 1..{len(CELLS)} objects, got {n_objects}")
    cells = sorted(rng.sample(range(len(CELLS)), n_objects))
    objects: list[ShapeObject] = []
    for cell in cells:
        color = _maybe_repeat(rng, [o.color for o in objects], list(COLORS))
        shape = _maybe_repeat(rng, [o.shape for o in objects], list(SHAPES))
        size = rng.choice(SIZES)
        jitter = 0.5 - SIZE_RADIUS[size] - CELL_MARGIN
        objects.append(ShapeObject(shape, color, size, CELLS[cell],
                                   dx=round(rng.uniform(-jitter, jitter), 4),
                                   dy=round(rng.uniform(-jitter, jitter), 4)))
    return Scene(scene_id, tuple(objects), sample_background(rng))


def _maybe_repeat(rng: random.Random, used: list[str], vocabulary: list[str]) -> str:
    if used and rng.random() < REPEAT_PROBABILITY:
        return rng.choice(used)
    return rng.choice(vocabulary)


def sample_background(rng: random.Random) -> Background:
    """Draw a background (kind, tone and texture) from ``rng``."""
    kind = rng.choice(BACKGROUND_KINDS)
    tone = rng.choice(list(BACKGROUND_TONES))
    if kind == "stripes":
        return Background(kind, tone, period=rng.randint(8, 24), orientation=rng.choice(STRIPE_ORIENTATIONS))
    if kind == "checkers":
        return Background(kind, tone, period=rng.randint(10, 32))
    if kind == "noise":
        return Background(kind, tone, period=rng.choice((4, 8, 14)), noise_seed=rng.getrandbits(32))
    return Background(kind, tone)


def object_center(obj: ShapeObject, image_size: int = 224) -> tuple[float, float]:
    """Pixel coordinates (x, y) of an object's centre in an image of ``image_size``."""
    cell = image_size / 3
    return ((obj.col + 0.5 + obj.dx) * cell, (obj.row + 0.5 + obj.dy) * cell)


def object_radius(obj: ShapeObject, image_size: int = 224) -> float:
    """Half-extent in pixels (circle radius; the other shapes fit in the same circle)."""
    return SIZE_RADIUS[obj.size] * image_size / 3


def render_scene(scene: Scene, image_size: int = 224) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``image_size`` x ``image_size`` pixels."""
    canvas = Image.fromarray(render_background(scene.background, image_size))
    for obj in scene.objects:
        x, y = object_center(obj, image_size)
        r = object_radius(obj, image_size)
        # Anti-aliasing: the shape's coverage is drawn at SUPERSAMPLE x resolution in a patch around it
        # and box-filtered down, then used as the paste mask (cheaper than drawing the whole image big).
        left, top, side = math.floor(x - r) - 1, math.floor(y - r) - 1, math.ceil(2 * r) + 3
        coverage = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
        _draw_shape(ImageDraw.Draw(coverage), obj.shape, (x - left) * SUPERSAMPLE, (y - top) * SUPERSAMPLE,
                    r * SUPERSAMPLE, 255)
        canvas.paste(COLORS[obj.color], (left, top, left + side, top + side), coverage.reduce(SUPERSAMPLE))
    return canvas


def render_background(background: Background, image_size: int = 224) -> np.ndarray:
    """The background as a (H, W, 3) uint8 array of near-grey tones."""
    base = np.array(BACKGROUND_TONES[background.tone], dtype=np.float32)
    # Texture contrast goes towards the middle grey so light and dark tones both stay muted.
    contrast = 22.0 if base.mean() > 110 else -22.0
    period = max(2.0, background.period * image_size / 224)  # periods are given for 224 pixels
    ys, xs = np.ogrid[0:image_size, 0:image_size]  # (H, 1), (1, W): broadcasting keeps this cheap
    if background.kind == "plain":
        shade = np.zeros((image_size, image_size), np.uint8)
    elif background.kind == "stripes":
        coord = {"horizontal": ys, "vertical": xs, "diagonal": (xs + ys) / math.sqrt(2)}[background.orientation]
        shade = np.broadcast_to(((coord // (period / 2)) % 2 * 255).astype(np.uint8), (image_size, image_size))
    elif background.kind == "checkers":
        shade = ((xs // period + ys // period) % 2 * 255).astype(np.uint8)
    elif background.kind == "noise":
        # Smooth blotches: a coarse random field upsampled bilinearly (compresses well as PNG).
        coarse = max(2, round(image_size / period))
        field = np.random.default_rng(background.noise_seed).random((coarse, coarse), dtype=np.float32)
        small = Image.fromarray((field * 255).astype(np.uint8))
        shade = np.asarray(small.resize((image_size, image_size), Image.BILINEAR))
    else:
        raise ValueError(f"unknown background kind {background.kind!r}; valid: {list(BACKGROUND_KINDS)}")
    # shade (H, W) in 0..255 picks a colour from the tone darkened (or lightened) by up to `contrast`.
    levels = np.arange(256, dtype=np.float32)[:, None] / 255.0
    palette = np.clip(np.rint(base[None, :] - contrast * levels), 0, 255).astype(np.uint8)  # (256, 3)
    return np.take(palette, shade, axis=0)  # (H, W, 3)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float, r: float, rgb: tuple) -> None:
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
    elif shape == "square":
        h = 0.84 * r  # a little smaller than the circle so both look the same size
        draw.rectangle((x - h, y - h, x + h, y + h), fill=rgb)
    elif shape == "triangle":
        # Equilateral, pointing up, centroid at the centre.
        draw.polygon([_polar(x, y, r, angle) for angle in (-90, 30, 150)], fill=rgb)
    elif shape == "star":
        points = [_polar(x, y, r if i % 2 == 0 else 0.45 * r, -90 + 36 * i) for i in range(10)]
        draw.polygon(points, fill=rgb)
    elif shape == "cross":
        w = 0.34 * r  # half-width of each arm
        draw.rectangle((x - r, y - w, x + r, y + w), fill=rgb)
        draw.rectangle((x - w, y - r, x + w, y + r), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {list(SHAPES)}")


def _polar(x: float, y: float, r: float, degrees: float) -> tuple[float, float]:
    angle = math.radians(degrees)
    return (x + r * math.cos(angle), y + r * math.sin(angle))
