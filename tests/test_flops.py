"""Analytic FLOPs equal torch's flop counter on tiny models, and reproduce METHODS.md's LLaMA-7B example."""

from __future__ import annotations

import inspect

import pytest
import torch

from vlbridge.batch import Batch, ImageInputs
from vlbridge.bridges.registry import build_preset
from vlbridge.flops import (LMShape, count_flops, input_space_flops, layer_flops, memory_space_flops,
                            paper_layer_flops, projector_flops, text_only_flops)
from vlbridge.models.language_model import LanguageModel
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID
from vlbridge.vlm import VisionLanguageModel

VISION_DIM, N_VISUAL, TEXT, ANSWER = 24, 9, 12, 3


def tiny_lm(kind: str) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":  # grouped-query attention, SwiGLU, untied head
        config = LlamaConfig(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                             num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False)
        return LanguageModel(LlamaForCausalLM(config).eval())
    config = GPT2Config(vocab_size=101, n_embd=48, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0)
    return LanguageModel(GPT2LMHeadModel(config).eval())


def one_sample(image: bool) -> Batch:
    """TEXT text tokens (the last ANSWER supervised), plus an image placeholder when ``image``."""
    text = list(range(3, 3 + TEXT))
    ids = text[:2] + [IMAGE_TOKEN_ID] + text[2:] if image else text
    labels = [IGNORE] * (len(ids) - ANSWER) + ids[-ANSWER:]
    grid = torch.randn(1, N_VISUAL, VISION_DIM) if image else None
    return Batch(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([labels]),
                 torch.tensor([image]), ImageInputs(grid=grid))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_analytic_equals_measured(kind):
    lm = tiny_lm(kind)
    shape = LMShape.of(lm)
    logits = ANSWER  # the supervised positions (the target of position t is token t + 1)
    d = lm.hidden_size

    text = VisionLanguageModel(lm, build_preset("llava", VISION_DIM, lm))
    assert count_flops(lambda: text(one_sample(image=False))) == text_only_flops(shape, TEXT, logits)

    measured = count_flops(lambda: text(one_sample(image=True)))
    projector = projector_flops(VISION_DIM, d, N_VISUAL, hidden=d)
    assert measured == input_space_flops(shape, TEXT, N_VISUAL, logits) + projector

    lm = tiny_lm(kind)  # a fresh LM for the memory hooks
    memvp = VisionLanguageModel(lm, build_preset("memvp", VISION_DIM, lm, {"num_slots": 16})).eval()
    measured = count_flops(lambda: memvp(one_sample(image=True)))
    projector = projector_flops(VISION_DIM, d, N_VISUAL, hidden=128)
    assert measured == memory_space_flops(shape, TEXT, 16, logits) + projector

    lm = tiny_lm(kind)
    memvp = VisionLanguageModel(lm, build_preset("memvp", VISION_DIM, lm, {"num_slots": 16, "layers": [1]})).eval()
    measured = count_flops(lambda: memvp(one_sample(image=True)))
    assert measured == memory_space_flops(shape, TEXT, 16, logits, memory_layers=1) + projector


def test_cached_decoding_step():
    """One new token attending to a cached prefix of P tokens: T = 1, S = P + 1."""
    lm = tiny_lm("llama")
    shape = LMShape.of(lm)
    ids = torch.arange(3, 3 + TEXT)[None]
    # the KV cache's argument and output field: `cache` in recent transformers, `past_key_values` before
    key = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"
    with torch.no_grad():
        cache = getattr(lm.model(input_ids=ids, use_cache=True), key)
        step = torch.tensor([[7]])
        measured = count_flops(lambda: lm.model(input_ids=step, use_cache=True, **{key: cache}))
    analytic = shape.layers * layer_flops(shape, 1, context=TEXT + 1) + 2 * shape.width * shape.vocab
    assert measured == analytic


def test_paper_formula_is_the_general_one_for_mha_with_a_4d_ffn():
    d, L, n = 256, 64, 49
    shape = LMShape(layers=1, width=d, ffn_width=4 * d, heads=4, kv_heads=4, head_dim=d // 4, vocab=1, gated=False)
    paper = paper_layer_flops(d, L, n)
    assert layer_flops(shape, L) == paper["text"]
    assert layer_flops(shape, L + n) - layer_flops(shape, L) == paper["input_space_added"]
    assert layer_flops(shape, L, memory_slots=n) - layer_flops(shape, L) == paper["memory_space_added"]


def test_llama_7b_example_from_methods():
    """LLaMA-7B dims, L = 64 text tokens, n = 256 visual tokens: input space +405 %, MemVP +1 % per layer."""
    paper = paper_layer_flops(4096, 64, 256)
    assert round(100 * paper["input_space_added"] / paper["text"]) == 405
    assert round(100 * paper["memory_space_added"] / paper["text"]) == 1
    assert 100 * paper["memory_space_added"] / paper["text"] == pytest.approx(1.039, abs=1e-3)


def test_shape_from_configs():
    from transformers import GPT2Config, LlamaConfig

    llama = LMShape.from_config(LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                            num_attention_heads=9, num_key_value_heads=3, vocab_size=49152), True)
    assert llama == LMShape(30, 576, 1536, 9, 3, 64, 49152, True)  # SmolLM2-135M
    gpt2 = LMShape.from_config(GPT2Config(), False)
    assert gpt2 == LMShape(12, 768, 3072, 12, 12, 64, 50257, False)
