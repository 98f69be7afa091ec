"""The packaged vision encoders end to end on a real photograph (scikit-image's cat, "chelsea")."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def cat_photo():
    from skimage import data

    return Image.fromarray(data.chelsea())  # 451 x 300 RGB


def test_dinov2_small_grid(cat_photo):
    from vlbridge.encoders import build_vision_encoder

    encoder = build_vision_encoder("dinov2-small")
    with torch.no_grad():
        features = encoder(encoder.preprocess([cat_photo]))
    assert encoder.num_tokens == 256 and encoder.feature_dim == 384
    assert features.grid.shape == (1, 256, 384) and features.pooled.shape == (1, 384)
    assert torch.isfinite(features.grid).all()


def test_efficientnet_lite0_grid_and_imagenet_class(cat_photo):
    from vlbridge.encoders import build_vision_encoder

    encoder = build_vision_encoder("efficientnet-lite0")
    with torch.no_grad():
        features = encoder(encoder.preprocess([cat_photo]))
        logits = encoder.backbone.classifier(features.pooled)  # (1, 1000)
    assert features.grid.shape == (1, 49, 1280)
    assert logits.argmax(-1).item() in IMAGENET_CATS
