"""load_image: every colour mode becomes 8-bit RGB; every broken file is a DataError naming it."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlbridge.data.images import load_image, to_rgb
from vlbridge.errors import DataError


def write_png(path, width, height, bit_depth, color_type, rows: bytes | None = None) -> None:
    """A minimal hand-made PNG (Pillow cannot write 16-bit RGB or invalid headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\x00")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_rgb_png_is_returned_unchanged(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(data).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.size == (7, 5)
    np.testing.assert_array_equal(pixels(image), data)


def test_grey_and_bilevel_become_equal_channels(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8)).save(tmp_path / "l.png")
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "l.png"))[0], [[0] * 3, [100] * 3, [255] * 3])
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "b.png"))[0], [[0] * 3, [255] * 3])


def test_la_is_composited_on_white(tmp_path):
    la = np.array([[[50, 0], [50, 255], [50, 128]]], dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    out = pixels(load_image(tmp_path / "la.png"))[0]
    np.testing.assert_array_equal(out[0], [255] * 3)  # fully transparent -> white
    np.testing.assert_array_equal(out[1], [50] * 3)  # opaque -> its grey
    assert abs(int(out[2][0]) - round(50 * 128 / 255 + 255 * 127 / 255)) <= 1


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = pixels(load_image(tmp_path / "rgba.png"))[0].astype(int)
    np.testing.assert_array_equal(out[0], [255, 255, 255])
    np.testing.assert_array_equal(out[1], [255, 0, 0])
    np.testing.assert_allclose(out[2], [127, 127, 255], atol=1)


def test_palette_with_transparency_and_without(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "opaque.png"))[0], [[10, 20, 30], [200, 100, 0]])
    image.save(tmp_path / "transparent.png", transparency=0)
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "transparent.png"))[0],
                                  [[255, 255, 255], [200, 100, 0]])
    image.save(tmp_path / "transparent.gif", transparency=0)
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "transparent.gif"))[0],
                                  [[255, 255, 255], [200, 100, 0]])


def test_cmyk(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [0, 255, 255, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "c.tif"))[0], [[255, 255, 255], [255, 0, 0], [0, 0, 0]])


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = pixels(load_image(tmp_path / "g16.png"))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 128, 255, round(1000 / 257)])


def test_16_bit_rgb_png(tmp_path):
    # Hand-made 16-bit RGB PNG (Pillow cannot write one): samples are big-endian 16-bit.
    row = b"\x00" + struct.pack(">6H", 65535, 0, 0, 0x8080, 0x8080, 0x8080)
    write_png(tmp_path / "rgb16.png", 2, 1, 16, 2, row)
    np.testing.assert_array_equal(pixels(load_image(tmp_path / "rgb16.png"))[0], [[255, 0, 0], [128, 128, 128]])


def test_32_bit_int_and_float_images():
    np.testing.assert_array_equal(pixels(to_rgb(Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))))[0, :, 0],
                                  [0, 7, 255])
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(pixels(to_rgb(floats))[0, :, 0], [0, 128, 255])


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


# --- broken files -------------------------------------------------------------------------------


def assert_names(error: pytest.ExceptionInfo, *parts: str) -> None:
    for part in parts:
        assert part in str(error.value), (part, str(error.value))


def test_missing_file_names_file_and_record(tmp_path):
    with pytest.raises(DataError) as error:
        load_image(tmp_path / "nope.png", record="rec-7")
    assert_names(error, "nope.png", "rec-7", "not found")


def test_annotation_source_is_named_with_the_image(tmp_path):
    with pytest.raises(DataError) as error:
        load_image(tmp_path / "nope.png", record="rec-7", source="train.json")
    assert_names(error, "train.json", "nope.png", "rec-7", "image")
    assert error.value.file == "train.json" and error.value.record == "rec-7"


def test_directory_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        load_image(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_not_an_image(tmp_path):
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    with pytest.raises(DataError, match="cannot read image") as error:
        load_image(tmp_path / "text.png", record=3)
    assert_names(error, "text.png", "3")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_fails_on_full_decode(tmp_path, fmt):
    data = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(data).save(path, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with Image.open(cut) as lazy:  # the header alone looks fine ...
        assert lazy.size == (64, 64)
    with pytest.raises(DataError, match="cannot read image") as error:  # ... decoding does not
        load_image(cut)
    assert_names(error, cut.name)


def test_corrupt_png_data(tmp_path):
    data = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(data).save(tmp_path / "ok.png")
    raw = bytearray((tmp_path / "ok.png").read_bytes())
    start = raw.index(b"IDAT") + 4
    raw[start + 10: start + 60] = bytes(50)  # zero out compressed data inside the IDAT chunk
    (tmp_path / "bad.png").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read image"):
        load_image(tmp_path / "bad.png")


def test_zero_size_png(tmp_path):
    write_png(tmp_path / "zero.png", 0, 5, 8, 2)
    with pytest.raises(DataError) as error:
        load_image(tmp_path / "zero.png", record="z")
    assert_names(error, "zero.png", "z")


def test_decompression_bomb_header(tmp_path):
    # A few hundred bytes claiming 100000 x 100000 pixels.
    write_png(tmp_path / "bomb.png", 100_000, 100_000, 8, 2)
    with pytest.raises(DataError) as error:
        load_image(tmp_path / "bomb.png", record="b")
    assert_names(error, "bomb.png", "b")
    assert "large" in str(error.value) or "max_pixels" in str(error.value)


def test_max_pixels_is_configurable(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "img.png")
    with pytest.raises(DataError, match="max_pixels=1000"):
        load_image(tmp_path / "img.png", max_pixels=1000)
    assert load_image(tmp_path / "img.png", max_pixels=64 * 64).size == (64, 64)
