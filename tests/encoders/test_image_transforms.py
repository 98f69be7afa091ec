"""Image preprocessing: every PIL mode becomes RGB; values match Hugging Face's PIL image processors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vlbridge.encoders.image_transforms import preprocess_images, resize_and_crop, to_rgb
from vlbridge.errors import ConfigError, DataError
from vlbridge.weights.backbone import HALF, IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocessing


def _photo(width=61, height=47, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_grayscale_palette_cmyk_become_rgb_with_same_content():
    grey = Image.new("L", (5, 4), 77)
    assert to_rgb(grey).mode == "RGB" and to_rgb(grey).getpixel((0, 0)) == (77, 77, 77)
    palette = _photo().convert("P")
    np.testing.assert_array_equal(np.asarray(to_rgb(palette)), np.asarray(palette.convert("RGB")))
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb(cmyk).getpixel((1, 1)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (3, 3), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_transparency_is_composited_over_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: shows the white background
    rgba.putpixel((0, 0), (200, 0, 0, 255))  # opaque red stays red
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black over white: mid grey
    rgb = to_rgb(rgba)
    assert rgb.getpixel((3, 3)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (200, 0, 0)
    assert all(abs(c - 127) <= 1 for c in rgb.getpixel((1, 0)))
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0, 9, 9, 9])
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    values = np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16)
    image = Image.fromarray(values)  # mode I;16
    assert image.mode.startswith("I;16")
    assert [to_rgb(image).getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 100, 255, 200]


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I", "F", "YCbCr", "HSV", "I;16"])
def test_every_mode_preprocesses_to_the_same_shape(mode):
    spec = ImagePreprocessing("bicubic", IMAGENET_MEAN, IMAGENET_STD, shortest_edge=16, crop_size=(16, 16))
    base = _photo()
    image = base.convert("L").convert(mode) if mode in ("I", "F", "I;16", "1") else base.convert(mode)
    pixels = preprocess_images([image], spec)
    assert pixels.shape == (1, 3, 16, 16) and torch.isfinite(pixels).all()


def test_shortest_edge_keeps_aspect_then_centre_crops():
    spec = ImagePreprocessing("bilinear", HALF, HALF, shortest_edge=20, crop_size=(20, 20))
    image = Image.new("RGB", (80, 40))
    image.paste((255, 0, 0), (0, 0, 20, 40))  # left quarter red: cropped away
    out = resize_and_crop(image, spec)
    assert out.size == (20, 20)
    assert out.getpixel((0, 10))[0] < 50  # the crop starts at column 10 of 40 (the red ends at 10)
    squash = ImagePreprocessing("bilinear", HALF, HALF, resize_to=(12, 30))
    assert resize_and_crop(image, squash).size == (30, 12)


def _hf(processor_class, images, **kwargs):
    import transformers

    cls = getattr(transformers, processor_class + "Pil", None) or getattr(transformers, processor_class)
    return cls(**kwargs)(images, return_tensors="pt")["pixel_values"]


@pytest.mark.parametrize(
    "spec, processor_class, kwargs",
    [
        (ImagePreprocessing("bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, shortest_edge=32, crop_size=(32, 32)),
         "CLIPImageProcessor", dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
        (ImagePreprocessing("bicubic", HALF, HALF, resize_to=(32, 32)),
         "SiglipImageProcessor", dict(size={"height": 32, "width": 32})),
        (ImagePreprocessing("bicubic", IMAGENET_MEAN, IMAGENET_STD, shortest_edge=40, crop_size=(28, 28)),
         "BitImageProcessor", dict(size={"shortest_edge": 40}, crop_size={"height": 28, "width": 28},
                                   image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))),
    ],
)
def test_matches_hugging_face_image_processors(spec, processor_class, kwargs):
    images = [_photo(61, 47, seed=1), _photo(40, 90, seed=2)]
    expected = torch.cat([_hf(processor_class, [im], **kwargs) for im in images])
    torch.testing.assert_close(preprocess_images(images, spec), expected, rtol=0, atol=1e-5)


def test_spec_read_from_preprocessor_config(tmp_path):
    config = {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
              "crop_size": 224, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD)}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    spec = ImagePreprocessing.from_hf_folder(tmp_path)
    assert spec == ImagePreprocessing("bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, shortest_edge=224, crop_size=(224, 224))
    config["size"] = {"longest_edge": 10}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="'size'"):
        ImagePreprocessing.from_hf_folder(tmp_path)
    assert ImagePreprocessing.from_hf_folder(tmp_path / "nowhere") is None


def test_bad_inputs_are_named():
    spec = ImagePreprocessing("bicubic", HALF, HALF, resize_to=(8, 8))
    with pytest.raises(DataError, match="record 1"):
        preprocess_images([Image.new("RGB", (4, 4)), "not an image"], spec)
    with pytest.raises(DataError):
        preprocess_images([], spec)
    with pytest.raises(ConfigError):
        ImagePreprocessing("bicubic", HALF, HALF)  # neither resize rule
