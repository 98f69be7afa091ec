"""Load any image file a dataset points to as an 8-bit RGB :class:`PIL.Image.Image`, or fail clearly.

Every reader goes through :func:`load_image`, so a broken file in a dataset of millions is reported with
the image path and the record that referenced it instead of as a PIL traceback deep in a data loader.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vlbridge.errors import DataError

DEFAULT_MAX_PIXELS = 89_478_485
"""Largest width x height accepted by default (Pillow's own decompression-bomb limit, ~1 GiB as RGBA).
A crafted PNG of a few KiB can otherwise claim gigapixels and exhaust memory when decoded."""

BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited on white (what image viewers and browsers show)."""

# Integer modes wider than 8 bits: Pillow's convert("RGB") clips them at 255 instead of scaling.
_WIDE_INT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def load_image(
    path: str | Path,
    *,
    record: object = None,
    source: object = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    field: str = "image",
) -> Image.Image:
    """Read ``path`` fully and return it as RGB (mode ``"RGB"``, 8 bits per channel).

    ``record`` (the id of the sample that uses the image), ``source`` (the annotation file that
    referenced it) and ``field`` (where in the record: ``image``, or ``image[2]`` for a clip's third frame)
    only make error messages precise. The whole image is decoded here, so a truncated
    or corrupt file fails now, not later inside a batch. EXIF orientation is applied, as Hugging Face
    ``transformers.image_utils.load_image`` does, so pixels are the way a viewer shows them.

    Conversions: L/1 (grey) -> RGB; LA, RGBA, PA, and P, L or RGB with a transparent colour ->
    composited on white; CMYK, YCbCr, LAB, HSV -> RGB via Pillow; 16-bit grey (I;16, I) -> scaled
    by 255/65535; 32-bit float (F) -> values in [0, 1] are scaled by 255, others clipped to [0, 255].

    Raises :class:`DataError` for a missing, empty, unreadable, corrupt, truncated, zero-sized or
    larger than ``max_pixels`` image.
    """
    path = Path(path)

    def fail(message: str) -> DataError:
        # The image path always appears; the annotation file is the primary "where" when known.
        if source is not None:
            return DataError(f"image {path}: {message}", file=source, record=record, field=field)
        return DataError(message, file=path, record=record)

    if not path.exists():
        raise fail("image file not found")
    if not path.is_file():
        raise fail("image path is not a file")
    if path.stat().st_size == 0:
        raise fail("image file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning at its global limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width <= 0 or height <= 0:
                    raise fail(f"image has zero size ({width}x{height})")
                if width * height > max_pixels:
                    raise fail(
                        f"image is {width}x{height} = {width * height} pixels, more than max_pixels="
                        f"{max_pixels} (possible decompression bomb; raise max_pixels if it is genuine)"
                    )
                opened.load()  # decode everything now: truncation and corruption surface here
                image = ImageOps.exif_transpose(opened)
    except DataError:
        raise
    except Image.DecompressionBombError as error:
        raise fail(f"image is too large to decode safely: {error}") from error
    except Exception as error:  # noqa: BLE001 - any failure to decode these bytes means the same: unreadable
        # UnidentifiedImageError is an OSError; truncated data raises OSError; malformed headers raise SyntaxError
        # or ValueError, and some plugins raise whatever their parsing hits (fuzzing found IndexError in the QOI
        # decoder on a truncated file). Only Pillow runs in this block, so nothing of ours is hidden.
        raise fail(f"cannot read image ({type(error).__name__}: {error})") from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB (see :func:`load_image` for the rules)."""
    mode = image.mode
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        # a palette (one index or alpha per index), grey or RGB image may mark a colour transparent (PNG tRNS)
        return _on_white(image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(image.convert("RGBA"))
    if mode in _WIDE_INT_MODES:
        values = np.asarray(image, dtype=np.float64)
        if mode == "I" and values.max(initial=0) <= 255:
            grey = values  # an "I" image that only holds 8-bit values
        else:
            grey = values * (255.0 / 65535.0)
        return _grey_array_to_rgb(grey)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        scale = 255.0 if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 else 1.0
        return _grey_array_to_rgb(np.nan_to_num(values) * scale)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _grey_array_to_rgb(grey: np.ndarray) -> Image.Image:
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey8] * 3, axis=-1))
