"""Pixel connectors' preprocessing: any aspect ratio on a square canvas with a valid-pixel channel.

EVE's scheme (METHODS.md 4.1), shared by the linear patch embedding (``connectors/patch.py``) and EVE's patch
embedding layer (``bridges/eve/pel.py``):

- :func:`fit_long_side`: the long side is resized to the canvas side S, the short side to the nearest multiple
  of a *cell* (the patch, or EVE's patch x pool), at least one cell, so the image covers whole cells;
- :func:`paste_on_canvas`: the resized image, normalised, is pasted on an S x S canvas of the mean colour (0
  after normalisation) with a 4th "valid pixel" channel, 1 inside the image; at the top-left, or centred with
  an offset rounded *down* to a whole number of cells so the valid region stays aligned to the cell grid;
- :func:`valid_cell_box`: after patchify, the grid is cropped to the bounding box of the cells holding any
  valid pixel (all False for a blank, text-only canvas).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlbridge.data.images import to_rgb
from vlbridge.errors import DataError


def fit_long_side(width: int, height: int, side: int, cell: int) -> tuple[int, int]:
    """(width, height) in pixels: the long side -> ``side``, the short side -> the nearest multiple of
    ``cell`` (half up, not Python's round-half-even), at least one cell."""
    long, short = max(width, height), min(width, height)
    short_out = cell * max(1, math.floor(short * side / (long * cell) + 0.5))
    return (side, short_out) if width >= height else (short_out, side)


def centred_offset(slack: int, cell: int | None) -> int:
    """Where an image with ``slack`` pixels to spare along one axis starts: 0 when ``cell`` is None (top-left),
    else half the slack rounded down to a multiple of ``cell`` (exactly centred when the slack is an even
    number of cells; otherwise half a cell nearer the top or left)."""
    return 0 if cell is None else cell * (slack // (2 * cell))


def paste_on_canvas(images: Sequence[Image.Image], side: int, mean: Sequence[float], std: Sequence[float],
                    resized_size: Callable[[int, int], tuple[int, int]], centre_cell: int | None = None) -> Tensor:
    """PIL images (any mode and size) -> (B, 4, side, side) float32: RGB scaled to 0..1 and normalised by
    ``mean``/``std``, resized to ``resized_size(width, height)`` and pasted on a canvas of the mean colour
    (0 after normalisation), plus the valid-pixel channel (1 inside the pasted image, 0 outside).

    ``centre_cell`` None pastes at the top-left; an int pastes centred, each offset rounded down to a
    multiple of it (:func:`centred_offset`), so with sizes and ``side`` multiples of it the valid region
    covers whole cells. Any mode is converted by the rules images read from files follow
    (:func:`vlbridge.data.images.to_rgb`: alpha and transparent colours on white, 16-bit grey scaled, not
    clipped), so an image passed in memory gives the same pixels as its file. Any size works: a side of 1 px
    still covers one cell, an image smaller than a cell is enlarged like any other. Bad records raise
    :class:`DataError` naming their index."""
    if len(images) == 0:
        raise DataError("no images to preprocess")
    mean_rgb = np.asarray(mean, dtype=np.float32)
    std_rgb = np.asarray(std, dtype=np.float32)
    canvas = torch.zeros(len(images), 4, side, side)
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise DataError(f"expected a PIL image, got {type(image).__name__}", record=i)
        if image.width == 0 or image.height == 0:
            raise DataError(f"image has size {image.size}", record=i)
        rgb = to_rgb(image)
        width, height = resized_size(*rgb.size)
        if (width, height) != rgb.size:
            rgb = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
        pixels = (np.asarray(rgb, dtype=np.float32) / 255.0 - mean_rgb) / std_rgb  # (h, w, 3)
        top, left = centred_offset(side - height, centre_cell), centred_offset(side - width, centre_cell)
        canvas[i, :3, top:top + height, left:left + width] = torch.from_numpy(pixels).permute(2, 0, 1)
        canvas[i, 3, top:top + height, left:left + width] = 1.0
    return canvas


def valid_cell_box(valid: Tensor, cell: int) -> Tensor:
    """(B, H, W) valid-pixel channel, H and W multiples of ``cell`` -> (B, H / cell, W / cell) bool: the
    cells inside the bounding box of the cells holding any valid pixel (EVE's crop); all False for a blank
    (text-only) canvas. In raster order the True cells of a row form its h x w grid."""
    B, H, W = valid.shape
    gh, gw = H // cell, W // cell
    holds = valid.reshape(B, gh, cell, gw, cell).amax(dim=(2, 4)) > 0.5  # (B, gh, gw)
    rows, cols = holds.any(dim=2), holds.any(dim=1)  # (B, gh), (B, gw)

    def span(x: Tensor) -> Tensor:  # True from the first to the last True of each row
        return (x.cumsum(1) > 0) & (x.flip(1).cumsum(1).flip(1) > 0)

    return span(rows)[:, :, None] & span(cols)[:, None, :]


def grid_shape(kept: Tensor) -> Tensor:
    """(B, Gh, Gw) bool from :func:`valid_cell_box` -> (B, 2) long: each image's cropped grid (h, w), (0, 0) when
    blank."""
    return torch.stack([kept.any(2).sum(1), kept.any(1).sum(1)], 1)
