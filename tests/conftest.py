"""Shared fixtures: the real SmolLM2 tokenizer, and tiny random models saved as local HF folders.

Tiny models go through the same loading code as real checkpoints (a local folder path), so most tests
exercise the real paths in a fraction of a second.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)
# `auto` precision resolves by the hardware; the suite pins it so that results do not depend on the machine (tests of
# bf16 ask for it explicitly). VLBRIDGE_AUTO_PRECISION=bf16 runs the suite with auto = bf16.
os.environ.setdefault("VLBRIDGE_AUTO_PRECISION", "fp32")


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    from vlbridge.weights.smollm2 import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder(), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer LLaMA with SmolLM2's tokenizer and chat template (grouped-query attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         eos_token_id=smol_tokenizer.eos_token_id, pad_token_id=smol_tokenizer.pad_token_id,
                         bos_token_id=smol_tokenizer.bos_token_id, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer GPT-2 whose tokenizer has no chat template (the plain format)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_gpt2")
    smol_tokenizer.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory):
    """A 2-layer DINOv2 (patch 14, 32 wide) that gives a 4x4 grid at 56 px."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=14, image_size=56)
    folder = tmp_path_factory.mktemp("tiny_dinov2")
    Dinov2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_seq2seq_dirs(tmp_path_factory):
    """``kind -> folder`` of tiny random encoder-decoder LMs with their tokenizers (``tiny_seq2seq.py``):
    ``t5`` (relu FFN), ``flan-t5`` (gated-gelu FFN) and ``bart``; each saved on first use."""
    from tiny_seq2seq import save_tiny_seq2seq

    class Folders(dict):
        def __missing__(self, kind):
            self[kind] = save_tiny_seq2seq(kind, tmp_path_factory.mktemp(f"tiny_{kind}"))
            return self[kind]

    return Folders()


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """20 Shapes scenes at 56 px (LLaVA JSON and images), shared by the tests that train or evaluate."""
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes

    folder = tmp_path_factory.mktemp("shapes")
    export_shapes(generate_shapes(ShapesConfig(n=20, seed=1, image_size=56)), folder, ["llava"])
    return folder


@pytest.fixture
def make_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    """``make_recipe(*overrides)`` -> a fast recipe (tiny LLaMA, tiny DINOv2, pixels, 56 px) writing to
    ``tmp_path / "run"`` unless overridden; ``make_recipe.write(recipe, path)`` saves it as YAML."""

    from vlbridge.recipe import load_recipe

    def make(*extra):
        return load_recipe(None, [
            f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
            "model.vision_layer=-1", f"data.train={shapes_dir / 'train_short.json'}",
            f"data.val={shapes_dir / 'val_short.json'}", f"data.image_root={shapes_dir}", "data.cache_features=false",
            "train.steps=4", "train.batch_size=4", "train.lr=5e-3", "train.warmup_steps=1", "train.eval_every=0",
            "train.eval_samples=2", f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=2", *extra,
        ])

    def write(recipe, path):
        import yaml

        path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return path

    make.write = write
    return make
