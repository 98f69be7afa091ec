"""The vision side: a frozen image encoder giving grid features, and a cache of them."""

from vlbridge.encoders.adapters import BottleneckAdapter
from vlbridge.encoders.feature_cache import FeatureCache
from vlbridge.encoders.image_transforms import preprocess_images, to_rgb
from vlbridge.encoders.registry import VISION_ENCODERS, EncoderPreset, build_vision_encoder
from vlbridge.encoders.vision_encoder import VisionEncoder, VisionFeatures

__all__ = [
    "VISION_ENCODERS",
    "BottleneckAdapter",
    "EncoderPreset",
    "FeatureCache",
    "VisionEncoder",
    "VisionFeatures",
    "build_vision_encoder",
    "preprocess_images",
    "to_rgb",
]
