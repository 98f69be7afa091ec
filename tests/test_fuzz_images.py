"""Fuzzing load_image with image files of many formats, modes and sizes, whole or damaged, and with random bytes:
the result is an 8-bit RGB image (of the file's own size when the file is whole) or a DataError naming the file and
the record, never another exception, and never an image larger than max_pixels."""

from __future__ import annotations

import io
import warnings

import numpy as np
from fuzz_profiles import FUZZ
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image
from png_bytes import png_claiming

from vlbridge.data.images import load_image
from vlbridge.errors import DataError

# the modes each format writes and reads back with this Pillow (ICO, EPS and PDF write none of them here)
FORMATS = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["1", "L", "RGB", "CMYK", "YCbCr"],
    "BMP": ["1", "L", "RGB", "RGBA"],
    "GIF": ["1", "L", "LA", "P", "RGB", "RGBA"],
    "TIFF": ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "LAB", "I;16", "I", "F"],
    "WEBP": ["L", "LA", "RGB", "RGBA"],
    "PPM": ["1", "L", "RGB", "I;16", "I", "F"],
    "TGA": ["1", "L", "LA", "P", "RGB", "RGBA"],
    "PCX": ["1", "L", "P", "RGB"],
    "SGI": ["L", "RGB", "RGBA"],
    "IM": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"],
    "QOI": ["RGB", "RGBA"],
}
DAMAGE = ["none"] * 4 + ["truncate", "flip bytes", "garbage tail", "header only", "junk after", "empty", "random",
                         "claims huge", "claims zero"]


def picture(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """Random pixels in ``mode``, including a transparent colour for P, L and RGB now and then."""
    size = len(Image.new(mode, (width, height)).tobytes())
    image = Image.frombytes(mode, (width, height), np.random.default_rng(seed).bytes(size))
    if mode == "F":  # random bytes make NaN and inf too: keep some, as a real float TIFF may hold them
        values = np.asarray(image).copy()
        values[np.abs(values) > 1e30] = 0.5
        image = Image.fromarray(values.astype(np.float32), "F")
    if mode in ("P", "L", "RGB") and seed % 3 == 0:
        image.info["transparency"] = 0 if mode != "RGB" else (0, 0, 0)
    return image


@st.composite
def image_files(draw):
    """(bytes, damage, the picture's size or None, format)."""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[fmt]))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    image = picture(mode, width, height, draw(st.integers(0, 2**16)))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. Pillow's deprecation of some mode/format pairs
        extra = {"transparency": image.info["transparency"]} if "transparency" in image.info and fmt == "PNG" else {}
        image.save(buffer, fmt, **extra)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(DAMAGE))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip bytes":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= draw(st.integers(1, 255))
        data = bytes(data)
    elif damage == "garbage tail":
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(min_size=1, max_size=64))
    elif damage == "header only":
        data = data[: draw(st.integers(1, min(len(data), 64)))]
    elif damage == "junk after":
        data = data + draw(st.binary(min_size=1, max_size=64))
    elif damage == "empty":
        data = b""
    elif damage == "random":
        data = draw(st.binary(min_size=1, max_size=300))
    elif damage == "claims huge":
        data = png_claiming(draw(st.integers(20_000, 2**31 - 1)), draw(st.integers(20_000, 2**31 - 1)))
    elif damage == "claims zero":
        data = png_claiming(*draw(st.sampled_from([(0, 5), (5, 0), (0, 0)])))
    return data, damage, (width, height), fmt, mode


def pillow_reads(data: bytes) -> bool:
    """Whether Pillow itself decodes the bytes (its writers make a few files its readers refuse, e.g. some
    1-pixel-wide PCX files: refusing those is right)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - any failure means Pillow cannot read it
        return False
    return True


@FUZZ
@given(image_files(), st.one_of(st.none(), st.none(), st.none(), st.integers(1, 3000)))
def test_an_image_file_loads_as_rgb_or_fails_naming_file_and_record(tmp_path, case, max_pixels):
    data, damage, size, fmt, mode = case
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    event(f"format {fmt}")
    event(f"damage: {damage}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = load_image(path, record="rec-7", source="train.json", **limit)
    except DataError as error:
        event("outcome: DataError")
        assert str(path) in str(error) and "record 'rec-7'" in str(error) and "train.json" in str(error)
        if damage in ("none", "junk after") and max_pixels is None and pillow_reads(data):
            raise AssertionError(f"a whole {fmt} file ({mode}, {size}) that Pillow reads was refused: {error}")
        return
    event("outcome: loaded")
    assert loaded.mode == "RGB" and loaded.width > 0 and loaded.height > 0
    assert loaded.width * loaded.height <= (max_pixels or 89_478_485)
    assert damage not in ("empty", "claims huge", "claims zero"), f"{damage} image was accepted"
    if damage in ("none", "junk after"):
        assert loaded.size == size
