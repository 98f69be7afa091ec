"""Encoder registry: names, and errors that list them."""

from __future__ import annotations

import pytest

from vlbridge.encoders import VISION_ENCODERS, build_vision_encoder
from vlbridge.errors import ConfigError
from vlbridge.weights import VISION_BACKBONES


def test_unknown_encoder_lists_valid_names_and_folder_option():
    with pytest.raises(ConfigError) as error:
        build_vision_encoder("clip-vit-large")
    message = str(error.value)
    assert all(name in message for name in VISION_ENCODERS) and "local Hugging Face folder" in message


def test_every_preset_names_a_backbone():
    assert all(preset.backbone in VISION_BACKBONES for preset in VISION_ENCODERS.values())


def test_unsupported_model_type_in_a_folder_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "resnet"}')
    with pytest.raises(ConfigError, match="'model_type' = 'resnet'.*clip"):
        build_vision_encoder(str(tmp_path))
