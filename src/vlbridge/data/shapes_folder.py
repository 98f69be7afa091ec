"""A Shapes export made once per settings and reused: what the report, the demo-like benchmarks and tests need
when they train on the built-in data and may be run again into the same folder.

The folder is named after the settings (``shapes_n{n}_seed{seed}``, plus ``_px{size}`` off the default 224), so
exports with other settings sit beside it instead of replacing it. An export counts as made when its
``manifest.json`` (written last) names every requested format with the same config; otherwise it is written
again, which gives the same bytes for the same settings (:mod:`vlbridge.data.shapes_export`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DEFAULT_IMAGE_SIZE = 224


def shapes_folder(root: str | Path, n: int, seed: int, image_size: int = DEFAULT_IMAGE_SIZE,
                  formats: Sequence[str] = ("llava",), workers: int = 2) -> Path:
    """``root/shapes_n{n}_seed{seed}[_px{image_size}]`` holding the Shapes export of ``n`` scenes in ``formats``,
    generated unless an earlier call made it with the same settings."""
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes

    suffix = "" if image_size == DEFAULT_IMAGE_SIZE else f"_px{image_size}"
    folder = Path(root) / f"shapes_n{n}_seed{seed}{suffix}"
    config = ShapesConfig(n=n, seed=seed, image_size=image_size)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    made = (set(formats) <= set(manifest.get("formats", []))
            and manifest.get("config", {}).get("n") == n and manifest.get("seed") == seed
            and manifest.get("config", {}).get("image_size") == image_size
            and ("llava" not in formats or "train_mc-text" in manifest.get("files", {}).get("llava", {})))
    if not made:
        export_shapes(generate_shapes(config), folder, list(formats), workers=workers)
    return folder
