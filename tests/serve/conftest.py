"""Tiny random runs for the browser demo: a LLaVA-style run and a MemVP run, saved as `vlbridge train` saves them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session")
def untied_llama_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer LLaMA whose LM head is not tied to its embeddings: the tied tiny LM echoes the prompt's last
    token ("\\n"), so its answers through input-space bridges strip to "" and two runs could not be told apart."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=smol_tokenizer.eos_token_id, pad_token_id=smol_tokenizer.pad_token_id,
                         bos_token_id=smol_tokenizer.bos_token_id, tie_word_embeddings=False)
    folder = tmp_path_factory.mktemp("untied_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, untied_llama_dir, tiny_dinov2_dir):
    """``{"llava": folder, "memvp": folder}``: run folders whose bridges are random (p_v no longer zero, so the
    MemVP memory is read), between the tiny DINOv2 and the untied tiny LLaMA."""
    from vlbridge.build import build_model
    from vlbridge.recipe import ModelConfig, Recipe
    from vlbridge.train.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("serve_runs")
    folders = {}
    for bridge, options in (("llava", {}), ("memvp", {"num_slots": 20, "lam": 1.0})):
        recipe = Recipe(model=ModelConfig(language_model=str(untied_llama_dir), vision_encoder=str(tiny_dinov2_dir),
                                          vision_layer=-1, bridge=bridge, bridge_options=options))
        torch.manual_seed(0)
        built = build_model(recipe.model)
        with torch.no_grad():
            for p in built.model.bridge.parameters():
                p.normal_(0, 0.5)
        folders[bridge] = root / bridge
        save_checkpoint(built.model, recipe, folders[bridge])
    return folders


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.png"
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    image.paste((30, 30, 200), (40, 0, 80, 30))  # a blue corner, so the heat map has something to find
    image.save(path)
    return path
