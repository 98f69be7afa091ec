"""Example images with a question each for the browser demo: scenes of the Shapes world (what the demo's runs
were trained on) and real photos that scikit-image ships inside its package (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlbridge.data.shapes import render_scene
from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes

SHAPES_SEED = 1
"""Not the demo's default training seed (0), so the example scenes are not its training images."""


def shapes_examples(folder: str | Path, count: int = 3) -> list[tuple[Path, str]]:
    """``count`` Shapes scenes written as PNG into ``folder``, each with one of its short-answer questions (a
    different question type from scene to scene)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # 10 scenes at least: every split needs one; the first scenes (the training split's, drawn first) are then
    # the same whatever the count
    config = ShapesConfig(n=max(count, 10), seed=SHAPES_SEED)
    examples = []
    for k, item in enumerate(generate_shapes(config).scenes[:count]):
        path = folder / f"{item.scene.id}.png"
        render_scene(item.scene, config.image_size).save(path)
        examples.append((path, item.short[k % len(item.short)].text))
    return examples


def photo_examples(folder: str | Path, questions: Sequence[tuple[str, str]]) -> list[tuple[Path, str]]:
    """scikit-image's photos named in ``questions`` (``(name, question)``, e.g. ``("chelsea", "What animal is
    this?")``) written as PNG into ``folder``; none when scikit-image is not installed (it comes with the
    ``test`` extra, which the README's commands install)."""
    try:
        import skimage.data
    except ImportError:
        return []
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = []
    for name, question in questions:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        examples.append((path, question))
    return examples
