"""Shapes scenes: sampling rules, and rendered pixels that show exactly what the scene (and its
caption) says: colour at each centre, shape outline, size, cell, and muted backgrounds."""

from __future__ import annotations

import colorsys
import random
import re

import numpy as np
import pytest

from vlbridge.data.shapes import (BACKGROUND_KINDS, BACKGROUND_TONES, CELLS, COLORS, SHAPES, SIZES, Background,
                                  Scene, ShapeObject, object_center, render_background, render_scene, sample_scene)
from vlbridge.data.shapes_captions import caption


def scenes(count: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng, f"s{i}") for i in range(count)]


def test_sampling_rules_and_determinism():
    drawn = scenes(300)
    assert drawn == scenes(300)  # same seed, same scenes
    assert drawn != scenes(300, seed=1)
    counts = {len(s.objects) for s in drawn}
    assert counts == {1, 2, 3, 4}
    for scene in drawn:
        cells = [o.cell for o in scene.objects]
        assert len(set(cells)) == len(cells)  # at most one object per cell
        assert cells == sorted(cells, key=CELLS.index)  # reading order
        for obj in scene.objects:
            assert obj.shape in SHAPES and obj.color in COLORS and obj.size in SIZES
    assert {s.background.kind for s in drawn} == set(BACKGROUND_KINDS)
    # Repeated colours or shapes are common: that is what makes "where" questions necessary.
    repeats = sum(len({o.color for o in s.objects}) < len(s.objects) for s in drawn if len(s.objects) > 1)
    assert repeats > 0.2 * sum(len(s.objects) > 1 for s in drawn)


def test_global_random_state_is_not_used():
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    render_scene(scenes(1, seed=5)[0])
    sample_scene(random.Random(9), "x")
    assert (random.random(), np.random.random()) == before


def saturation(rgb) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[1]


def test_object_colours_are_far_apart_and_backgrounds_muted():
    names = list(COLORS)
    for i, a in enumerate(names):
        assert saturation(COLORS[a]) > 0.7
        for b in names[i + 1:]:
            assert np.linalg.norm(np.subtract(COLORS[a], COLORS[b])) > 90, (a, b)
    for kind in BACKGROUND_KINDS:
        for tone in BACKGROUND_TONES:
            pixels = render_background(Background(kind, tone, period=12, orientation="diagonal", noise_seed=3), 64)
            unique = np.unique(pixels.reshape(-1, 3), axis=0)
            assert max(saturation(p) for p in unique) < 0.15, (kind, tone)
            nearest = min(np.linalg.norm(unique.astype(float) - c, axis=1).min() for c in COLORS.values())
            assert nearest > 80, (kind, tone)


# An independent reading of the canonical caption, to check pixels against what the text says.
CAPTION_ITEM = re.compile(r"an? (small|large) (\w+) (\w+) (?:at the|in the|on the) ([a-z ]+?)(?=,| and an? |\.$)")


def parse_caption(text: str) -> list[tuple[str, str, str, str]]:
    return [m.groups() for m in CAPTION_ITEM.finditer(text.lower())]


def cell_slice(cell: str, size: int = 224) -> tuple[slice, slice]:
    row, col = CELLS.index(cell) // 3, CELLS.index(cell) % 3
    return (slice(round(row * size / 3), round((row + 1) * size / 3)),
            slice(round(col * size / 3), round((col + 1) * size / 3)))


def colour_masks(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per object colour, the pixels close to it (anti-aliased edges included)."""
    return {name: np.abs(image.astype(np.int16) - rgb).sum(-1) < 90 for name, rgb in COLORS.items()}


def classify(mask: np.ndarray) -> str:
    """Tell the five shapes apart from their filled-pixel layout alone."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    fill = box.mean()
    top, bottom = box[: box.shape[0] // 2].sum(), box[(box.shape[0] + 1) // 2:].sum()
    if fill > 0.93:
        return "square"
    if fill > 0.7:
        return "circle"
    if fill < 0.47:
        return "star"
    return "triangle" if top < 0.6 * bottom else "cross"


def test_pixels_show_what_the_caption_says():
    for scene in scenes(80, seed=7):
        image = np.asarray(render_scene(scene))
        assert image.shape == (224, 224, 3)
        said = parse_caption(caption(scene))
        assert said == [(o.size, o.color, o.shape, o.cell) for o in scene.objects], caption(scene)
        masks = colour_masks(image)
        areas = {}
        for (size, color, shape, cell), obj in zip(said, scene.objects):
            x, y = object_center(obj)
            assert tuple(image[int(y), int(x)]) == COLORS[color], (scene.id, cell)
            # Neighbouring objects never reach into a cell, so the cell holds this object only.
            mask = masks[color][cell_slice(cell)]
            assert classify(mask) == shape, (scene.id, cell, shape)
            areas.setdefault((shape, size), []).append(mask.sum())
        for (shape, size), values in areas.items():
            other = areas.get((shape, "small" if size == "large" else "large"))
            if other:
                assert (min(values) > 2.5 * max(other)) == (size == "large"), (scene.id, shape)
        anything = np.any(list(masks.values()), axis=0)
        for cell in set(CELLS) - {o.cell for o in scene.objects}:
            assert not anything[cell_slice(cell)].any(), (scene.id, cell)  # empty cells hold no object colour


def test_image_size_scales_the_drawing():
    scene = Scene("x", (ShapeObject("square", "blue", "large", "center"),), Background("plain", "beige"))
    small, big = np.asarray(render_scene(scene, 112)), np.asarray(render_scene(scene, 448))
    area = lambda im: (np.linalg.norm(im.astype(float) - COLORS["blue"], axis=-1) < 60).sum()
    assert area(big) == pytest.approx(16 * area(small), rel=0.1)  # pixel rounding at 112 px
    assert tuple(small[56, 56]) == COLORS["blue"]


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="valid"):
        render_scene(Scene("x", (ShapeObject("hexagon", "red", "small", "top"),), Background("plain", "beige")))
    with pytest.raises(ValueError, match="valid"):
        render_background(Background("zigzag", "beige"))
    with pytest.raises(ValueError):
        sample_scene(random.Random(0), "x", n_objects=10)
