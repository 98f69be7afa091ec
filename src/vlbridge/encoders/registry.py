"""Named vision encoders and the builder that turns a name or folder into a :class:`VisionEncoder`."""

from __future__ import annotations

from dataclasses import dataclass

from vlbridge.encoders.vision_encoder import VisionEncoder
from vlbridge.errors import ConfigError
from vlbridge.weights.vision import VISION_BACKBONES, load_vision_backbone


@dataclass(frozen=True)
class EncoderPreset:
    """A packaged backbone and the layer its grid features come from by default."""

    backbone: str  # a name in vlbridge.weights.VISION_BACKBONES
    layer: int | None  # ViT hidden-states index (-2: penultimate, as LLaVA/MemVP); None: a CNN's final map
    description: str  # one line for listings


VISION_ENCODERS: dict[str, EncoderPreset] = {
    "dinov2-small": EncoderPreset(
        "dinov2-small", -2, "DINOv2 ViT-S/14, 224 px, penultimate layer: 256 x 384 grid (~110 ms/image on CPU)"
    ),
    "efficientnet-lite0": EncoderPreset(
        "efficientnet-lite0", None, "EfficientNet-Lite0 ImageNet CNN, 224 px, final map: 49 x 1280 grid (~20 ms/image)"
    ),
}


def build_vision_encoder(
    source: str,
    layer: int | None = None,
    adapter_dim: int | None = None,
    frozen: bool = True,
    compute_pooled: bool = True,
) -> VisionEncoder:
    """A frozen vision encoder from a registry name or a local CLIP / SigLIP / DINOv2 folder.

    ``layer=None`` takes the preset's layer (ViT: -2, the penultimate; CNN: the final map).
    """
    preset = VISION_ENCODERS.get(source)
    if preset is None and source in VISION_BACKBONES:
        raise ConfigError(f"backbone {source!r} has no encoder preset; valid: {sorted(VISION_ENCODERS)}")
    try:
        backbone = load_vision_backbone(preset.backbone if preset else source)
    except ConfigError as error:
        raise ConfigError(
            f"unknown vision encoder {source!r}; valid names: {sorted(VISION_ENCODERS)}, "
            f"or the path of a local Hugging Face folder holding a CLIP, SigLIP or DINOv2 vision model "
            f"({error})"
        ) from error
    if layer is None and preset is not None:
        layer = preset.layer
    return VisionEncoder(backbone, layer=layer, adapter_dim=adapter_dim, frozen=frozen, compute_pooled=compute_pooled)
