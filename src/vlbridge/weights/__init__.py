"""Pretrained weights: packaged models converted once and cached, or any local Hugging Face folder."""

from vlbridge.weights.backbone import ImagePreprocessing, VisionBackbone
from vlbridge.weights.cache import cache_dir
from vlbridge.weights.language import LANGUAGE_MODELS, load_language_model
from vlbridge.weights.minilm import load_minilm
from vlbridge.weights.vision import VISION_BACKBONES, load_vision_backbone

__all__ = [
    "LANGUAGE_MODELS",
    "VISION_BACKBONES",
    "ImagePreprocessing",
    "VisionBackbone",
    "cache_dir",
    "load_language_model",
    "load_minilm",
    "load_vision_backbone",
]
