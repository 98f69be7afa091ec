"""What a loaded vision backbone is: the network plus the facts the encoder needs about it.

Loaders (packaged weights, local Hugging Face folders) fill in a :class:`VisionBackbone`; the
:class:`~vlbridge.encoders.vision_encoder.VisionEncoder` reads only these fields, never the model's name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from vlbridge.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)

# PIL resampling filter numbers as stored in Hugging Face preprocessor_config.json ("resample": 3)
PIL_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class ImagePreprocessing:
    """How one backbone turns an RGB image into its input tensor (its own evaluation transform)."""

    resample: str  # PIL filter for resizing: "bicubic", "bilinear", "nearest", "lanczos", "box", "hamming"
    mean: tuple[float, float, float]  # per-channel mean, on pixels scaled to 0..1
    std: tuple[float, float, float]  # per-channel standard deviation, on pixels scaled to 0..1
    shortest_edge: int | None = None  # resize the short side to this, keeping the aspect ratio
    resize_to: tuple[int, int] | None = None  # or resize to exactly (height, width) (used if no shortest_edge)
    crop_size: tuple[int, int] | None = None  # then centre-crop (height, width); None: no crop

    def __post_init__(self) -> None:
        if (self.shortest_edge is None) == (self.resize_to is None):
            raise ConfigError("ImagePreprocessing needs exactly one of shortest_edge and resize_to")
        if self.resample not in PIL_RESAMPLE_NAMES.values():
            raise ConfigError(f"unknown resample {self.resample!r}; valid: {sorted(PIL_RESAMPLE_NAMES.values())}")
        if self.shortest_edge is not None and self.crop_size is None:
            raise ConfigError("a shortest-edge resize needs a crop_size to give every image one size")

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed image."""
        return self.crop_size if self.crop_size is not None else self.resize_to  # type: ignore[return-value]

    def describe(self) -> str:
        """A short stable text naming this transform (part of cache keys)."""
        resize = f"short{self.shortest_edge}" if self.shortest_edge is not None else f"resize{self.resize_to[0]}x{self.resize_to[1]}"
        crop = f"-crop{self.crop_size[0]}x{self.crop_size[1]}" if self.crop_size else ""
        stats = ",".join(f"{v:.4g}" for v in (*self.mean, *self.std))
        return f"{resize}{crop}-{self.resample}-norm({stats})"

    @classmethod
    def from_hf_folder(cls, folder: Path) -> "ImagePreprocessing | None":
        """Read a Hugging Face ``preprocessor_config.json`` (CLIP, SigLIP, BiT/DINOv2 processors), if present."""
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return None
        cfg = json.loads(path.read_text())
        if not cfg.get("do_resize", True):
            raise ConfigError(f"{path}: do_resize=false is not supported (every image must get one size)")
        size = cfg.get("size")
        if isinstance(size, int):
            size = {"shortest_edge": size}
        shortest, resize_to = None, None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, dict) and "height" in size and "width" in size:
            resize_to = (int(size["height"]), int(size["width"]))
        else:
            raise ConfigError(f"{path}: field 'size' = {size!r} is not supported (need shortest_edge or height/width)")
        crop = None
        if cfg.get("do_center_crop", False):
            c = cfg.get("crop_size")
            crop = (int(c), int(c)) if isinstance(c, int) else (int(c["height"]), int(c["width"]))
        if cfg.get("do_rescale", True) and abs(cfg.get("rescale_factor", 1 / 255) - 1 / 255) > 1e-9:
            raise ConfigError(f"{path}: field 'rescale_factor' must be 1/255, got {cfg['rescale_factor']}")
        normalize = cfg.get("do_normalize", True)
        return cls(
            resample=PIL_RESAMPLE_NAMES.get(int(cfg.get("resample", 3)), "bicubic"),
            mean=tuple(cfg.get("image_mean", IMAGENET_MEAN)) if normalize else (0.0, 0.0, 0.0),
            std=tuple(cfg.get("image_std", IMAGENET_STD)) if normalize else (1.0, 1.0, 1.0),
            shortest_edge=shortest,
            resize_to=resize_to,
            crop_size=crop,
        )


@dataclass
class VisionBackbone:
    """A pretrained image network, loaded, with what the vision encoder needs to use it.

    ``kind`` says how it is called: ``"vit"``: a Hugging Face vision transformer called as
    ``model(pixel_values=x)`` returning ``pooler_output``, whose transformer blocks are ``blocks``;
    ``"cnn"``: a module with ``extract_features(x) -> (B, C, h, w)``, the map before global pooling.
    """

    model: nn.Module
    kind: Literal["vit", "cnn"]
    weights_id: str  # stable name of the weights (cache keys): registry name + package, or folder + digest
    preprocessing: ImagePreprocessing
    feature_dim: int  # d_v: channels of the grid features
    stride: int  # ViT patch size or CNN total stride, pixels per grid cell
    num_prefix_tokens: int = 0  # ViT: CLS and register tokens in front of the patch tokens
    blocks: nn.ModuleList | None = None  # ViT: the transformer blocks in order
    classifier: nn.Module | None = None  # optional head on the pooled features (EfficientNet: ImageNet)

    @property
    def num_layers(self) -> int:
        return len(self.blocks) if self.blocks is not None else 0
