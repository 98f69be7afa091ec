"""Fixtures of the export tests: tiny runs saved as run folders, and an LM whose greedy answers vary.

The conftest's tiny LLaMA is initialised with std 0.02, so its logits are nearly flat and greedy decoding repeats
one token; `varied_llama_dir` has larger weights, so answers differ from prompt to prompt and image to image, and a
wrong image feature or prompt token shows in the generated text.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image


@pytest.fixture(scope="session")
def varied_llama_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer LLaMA with SmolLM2's tokenizer and chat template, weights of std 0.5, tied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         initializer_range=0.5, eos_token_id=smol_tokenizer.eos_token_id,
                         pad_token_id=smol_tokenizer.pad_token_id, bos_token_id=smol_tokenizer.bos_token_id,
                         tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("varied_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Three small images of different sizes and colours (JPEG, PNG, RGBA PNG)."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    kinds = [((80, 60), (200, 30, 30), "red.jpg"), ((50, 90), (20, 160, 40), "tall.png"),
             ((64, 64), (20, 40, 220, 128), "blue.png")]
    for i, (size, colour, name) in enumerate(kinds):
        image = Image.new("RGBA" if len(colour) == 4 else "RGB", size, colour)
        for x in range(0, size[0], 7):  # some structure, so the encoder's features vary across the image
            for y in range(i, size[1], 5):
                image.putpixel((x, y), (255, 255, 0, 255) if len(colour) == 4 else (255, 255, 0))
        path = folder / name
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def make_run(tmp_path):
    """``make_run(lm_dir, encoder_dir, *overrides, name=...)`` -> (run folder, recipe): the recipe's model with its
    trainable tensors moved off their initial values (LoRA B starts at zero, MemVP's p_v too), saved as the run's
    final checkpoint, as `vlbridge train` leaves it."""
    from vlbridge.build import build_model
    from vlbridge.recipe import load_recipe
    from vlbridge.train.checkpoint import save_checkpoint
    from vlbridge.train.parameter_groups import apply_trainable

    def make(lm_dir, encoder_dir, *overrides, name="run", scale=0.5):
        recipe = load_recipe(None, [f"model.language_model={lm_dir}", f"model.vision_encoder={encoder_dir}",
                                    "model.vision_layer=-1", *overrides])
        torch.manual_seed(0)
        built = build_model(recipe.model)
        apply_trainable(built.model, recipe.train.trainable)
        with torch.no_grad():
            for parameter in built.model.trainable_parameters().values():
                parameter.add_(torch.randn_like(parameter) * scale)
        run = tmp_path / name
        save_checkpoint(built.model, recipe, run / "final", extra={"step": recipe.train.steps})
        return run, recipe

    return make
