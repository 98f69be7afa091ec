"""A tiny vision-language model for tests (the folders come from the fixtures in ``conftest.py``)."""

from __future__ import annotations

import torch


def build_tiny_vlm(lm_dir, dinov2_dir, bridge: str):
    """A tiny LM and DINOv2 joined by ``bridge``, its bridge weights moved off their initial values (MemVP's
    p_v starts at zero, which would make the memory a no-op), in evaluation mode."""
    from vlbridge.build import build_model
    from vlbridge.recipe import load_recipe

    torch.manual_seed(0)
    recipe = load_recipe(None, [f"model.language_model={lm_dir}", f"model.vision_encoder={dinov2_dir}",
                                "model.vision_layer=-1", f"model.bridge={bridge}"])
    built = build_model(recipe.model)
    with torch.no_grad():
        for p in built.model.bridge.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    built.model.eval()
    return built
