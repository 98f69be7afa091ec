"""Images to pixel tensors with PIL and NumPy (torchvision cannot be installed beside our CPU torch).

Follows the Hugging Face "slow" image processors the backbones were released with: convert to RGB,
resize with PIL (short side, or to an exact size), centre-crop, scale to 0..1, normalise per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vlbridge.errors import DataError
from vlbridge.weights.backbone import ImagePreprocessing

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. Transparent pixels are composited over white (dropping alpha would expose
    whatever colour the transparent pixels happen to store, often black); 16/32-bit grey is rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        grey = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = 255.0 if values.max(initial=0) <= 255 else 65535.0  # 8-bit or 16-bit data in a wide container
        grey = (values * (255.0 / high)).round().clip(0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("HSV",):  # PIL has no direct HSV -> RGB converter
        return Image.fromarray(np.asarray(image), mode="HSV").convert("RGB")
    return image.convert("RGB")


def resize_and_crop(image: Image.Image, spec: ImagePreprocessing) -> Image.Image:
    """Resize (short side or exact size) then centre-crop, as ``spec`` says."""
    width, height = image.size
    if spec.shortest_edge is not None:
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(spec.shortest_edge * long / short)  # transformers get_resize_output_image_size
        size = (spec.shortest_edge, new_long) if width <= height else (new_long, spec.shortest_edge)
    else:
        size = (spec.resize_to[1], spec.resize_to[0])  # PIL wants (width, height)
    if size != image.size:
        image = image.resize(size, resample=_RESAMPLE[spec.resample])
    if spec.crop_size is not None:
        crop_h, crop_w = spec.crop_size
        width, height = image.size
        if crop_h > height or crop_w > width:
            raise ValueError(f"crop {spec.crop_size} larger than the resized image {(height, width)}")
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    return image


def preprocess_images(images: Sequence[Image.Image], spec: ImagePreprocessing) -> torch.Tensor:
    """PIL images (any mode, any size) -> normalised pixel tensor (B, 3, H, W), float32."""
    if len(images) == 0:
        raise DataError("no images to preprocess")
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    batch = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise DataError(f"expected a PIL image, got {type(image).__name__}", record=i)
        if image.width == 0 or image.height == 0:
            raise DataError(f"image has size {image.size}", record=i)
        pixels = np.asarray(resize_and_crop(to_rgb(image), spec), dtype=np.float32) / 255.0  # (H, W, 3)
        batch.append((pixels - mean) / std)
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
