"""Heat maps of :func:`vlbridge.analysis.locate` drawn over the image (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from vlbridge.analysis.locate import grid_shape


def save_overlay(image, responses: Tensor, labels: list[str], path: str | Path, alpha: float = 0.5) -> Path:
    """One panel per chosen token (``responses`` (T, n), ``labels`` T names) plus their mean, each a heat
    map over the image grid stretched over the (PIL) image; saved as PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    if responses.ndim != 2 or responses.shape[0] != len(labels):
        raise ValueError(f"responses {tuple(responses.shape)} do not match {len(labels)} labels")
    rows, cols = grid_shape(responses.shape[1])
    maps = list(zip(labels, responses))
    if len(maps) > 1:
        maps.insert(0, ("mean", responses.mean(0)))
    picture = np.asarray(image.convert("RGB"))
    height, width = picture.shape[:2]
    figure, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for axis, (label, heat) in zip(axes[0], maps):
        axis.imshow(picture)
        # the grid's row-major order is the patches' raster order (ViT and CNN grids alike)
        axis.imshow(heat.reshape(rows, cols).cpu().numpy(), cmap="jet", alpha=alpha, interpolation="bilinear",
                    extent=(0, width, height, 0))
        axis.set_title(label, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
