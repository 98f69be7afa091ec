"""Tiny random ViTs (DINOv2, DINOv2 with registers, CLIP, SigLIP) saved as local Hugging Face folders."""

from __future__ import annotations

import pytest
import torch

VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=99,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)


def _save_tiny(kind: str, folder):
    from transformers import (CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, Dinov2Config, Dinov2Model,
                              Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipConfig, SiglipModel)

    torch.manual_seed(0)
    if kind == "dinov2":
        model = Dinov2Model(Dinov2Config(**VIT, layerscale_value=0.5))
    elif kind == "dinov2_registers":
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**VIT, num_register_tokens=2, layerscale_value=0.5))
    elif kind == "clip":  # a full CLIP checkpoint (text tower included), as on the Hub
        model = CLIPModel(CLIPConfig(vision_config=VIT, text_config=TEXT))
    elif kind == "clip_vision":
        model = CLIPVisionModel(CLIPVisionConfig(**VIT))
    elif kind == "siglip":
        model = SiglipModel(SiglipConfig(vision_config=VIT, text_config=TEXT))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit_dirs(tmp_path_factory):
    """model kind -> folder. Folder names deliberately say nothing about the architecture."""
    kinds = ["dinov2", "dinov2_registers", "clip", "clip_vision", "siglip"]
    return {kind: _save_tiny(kind, tmp_path_factory.mktemp(f"checkpoint{i}")) for i, kind in enumerate(kinds)}

