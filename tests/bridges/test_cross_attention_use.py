"""Flamingo-style gated cross-attention, its use: FLOPs equal to torch's count, the activation estimate,
gradients, generation with and without a KV cache, visual keys/values computed once per context, option and
model checks."""

from __future__ import annotations

import pytest
import torch
from greedy import greedy_without_cache
from tiny_cross_attention import (HAS_IMAGE, IGNORE, IMG, N, NEW_TOKENS, OPTIONS, PROMPTS, VOCAB, WIDTH, attached,
                                  batch, open_gates, tiny_lm, visual_for)

from vlbridge.bridges.injections.cross_attention import (
    CrossAttentionOptions,
    GatedCrossAttentionInjection,
    build_cross_attention,
)
from vlbridge.cost import lm_forward_flops, saved_activation_bytes
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops, gated_cross_attention_flops
from vlbridge.models.language_model import positions_from_mask


@pytest.fixture(params=["llama", "gpt2"])
def kind(request):
    return request.param


# --- 3. FLOPs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_image", [True, False])
def test_flop_counter_equals_lm_flops(kind, with_image):
    lm, injection = attached(kind)
    prompt = [3, 4, IMG, 5, 6, 7] if with_image else [3, 4, 5, 6, 7]
    ids, mask, labels = batch([prompt], answers=[[8, 9, 10]])
    visual = visual_for(1)

    def forward():
        with injection.inject(lm, ids, mask, visual, torch.tensor([with_image]), labels) as inputs:
            lm(inputs.inputs_embeds, inputs.attention_mask, inputs.labels)

    text_tokens = ids.shape[1] - int(with_image)  # the placeholder takes no position
    supervised = int((labels[:, 1:] != IGNORE).sum())
    expected = injection.lm_flops(lm, text_tokens, N if with_image else 0, supervised)
    assert count_flops(forward) == expected
    blocks = gated_cross_attention_flops(WIDTH, text_tokens, N if with_image else 0, 2, 16, 2)
    assert blocks > 0 and expected == lm_forward_flops(lm, text_tokens, supervised) + 2 * blocks


def test_gated_cross_attention_flops_formula():
    d, T, n, H, h, m = 8, 3, 5, 2, 4, 4
    attention = 2 * T * d * H * h * 2 + 2 * n * d * 2 * H * h + 2 * 2 * T * n * H * h
    assert gated_cross_attention_flops(d, T, n, H, h, m) == attention + 2 * 2 * T * d * m * d
    assert gated_cross_attention_flops(d, T, 0, H, h, m) == 2 * 2 * T * d * m * d


def test_activation_estimate_is_close_to_what_autograd_keeps(kind):
    lm, injection = attached(kind, gates=0.5)
    injection.train()
    rows, text = 3, 6
    ids = torch.tensor([[3, 4, IMG, 5, 6, 7, 8]] * rows)
    visual = visual_for(rows, n=9).requires_grad_(True)

    def run(with_blocks: bool):
        if with_blocks:
            with injection.inject(lm, ids, torch.ones_like(ids), visual, torch.ones(rows, dtype=torch.bool)) as x:
                return lm(x.inputs_embeds, x.attention_mask)
        embeds = lm.embed(ids[:, :text].clamp(min=0)).requires_grad_(True)  # the bare LM, input needing grad
        return lm(embeds, torch.ones(rows, text, dtype=torch.long))

    both = torch.nn.ModuleList([lm, injection])
    measured = saved_activation_bytes(both, lambda: run(True)) - saved_activation_bytes(both, lambda: run(False))
    estimate = injection.activation_bytes(lm, rows * text, 9, rows)
    assert abs(estimate - measured) <= 0.05 * measured, (estimate, measured)


# --- 4. gradients --------------------------------------------------------------------------------
def test_gradients_reach_the_gates_then_the_blocks_and_the_visual_vectors(kind):
    lm, injection = attached(kind)
    injection.train()
    ids, mask, labels = batch(PROMPTS, "right", answers=[[30, 31], [32], [33, 34, 35]])

    def backward():
        injection.zero_grad(set_to_none=True)
        visual = visual_for(3).requires_grad_(True)
        with injection.inject(lm, ids, mask, visual, torch.tensor(HAS_IMAGE), labels, "right") as inputs:
            lm(inputs.inputs_embeds, inputs.attention_mask, inputs.labels).loss_sum.backward()
        return visual.grad

    grad = backward()
    for block in injection.blocks:
        assert block.attn_gate.grad.abs() > 0 and block.ff_gate.grad.abs() > 0
        assert block.to_q.weight.grad is None or not block.to_q.weight.grad.any()  # tanh(0) = 0 stops it
    assert grad is None or not grad.any()
    open_gates(injection, 0.5)
    grad = backward()
    for block in injection.blocks:
        for name in ("to_q", "to_kv", "to_out"):
            assert getattr(block, name).weight.grad.abs().sum() > 0, name
        assert all(p.grad.abs().sum() > 0 for p in block.ff.parameters())
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    assert not grad[1].any()  # the text-only row's vectors are not read
    assert all(p.grad is None for p in lm.parameters())


# --- 5. generation ---------------------------------------------------------------------------------
def generate(lm, injection, prompts, has_image, visual, **kwargs):
    ids, mask, _ = batch(prompts, "left")
    kwargs = {"output_logits": True, "return_dict_in_generate": True, **kwargs}
    with injection.inject(lm, ids, mask, visual, torch.tensor(has_image), None, "left") as inputs:
        return lm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 position_ids=positions_from_mask(inputs.attention_mask), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=0, **kwargs)


def test_batched_greedy_generation_equals_one_by_one(kind):
    lm, injection = attached(kind, gates=1.0)
    visual = visual_for(3)
    with torch.no_grad():
        batched = generate(lm, injection, PROMPTS, HAS_IMAGE, visual)
        for row, prompt in enumerate(PROMPTS):
            one = generate(lm, injection, [prompt], [HAS_IMAGE[row]], visual[row:row + 1])
            assert torch.equal(one.sequences[0], batched.sequences[row])
            for step in range(NEW_TOKENS):
                torch.testing.assert_close(one.logits[step][0], batched.logits[step][row], atol=1e-4, rtol=1e-4)
        other = generate(lm, injection, PROMPTS, HAS_IMAGE, visual_for(3, seed=1))
    assert not torch.allclose(other.logits[-1][0], batched.logits[-1][0], atol=1e-4)  # the image matters


def test_cached_generation_equals_generation_without_cache(kind):
    lm, injection = attached(kind, gates=1.0)
    visual = visual_for(3)
    with torch.no_grad():
        cached = generate(lm, injection, PROMPTS, HAS_IMAGE, visual)
        uncached = generate(lm, injection, PROMPTS, HAS_IMAGE, visual, use_cache=False)
        # and a hand-made loop that re-runs the whole sequence for every new token
        ids, mask, _ = batch(PROMPTS, "left")
        with injection.inject(lm, ids, mask, visual, torch.tensor(HAS_IMAGE), None, "left") as inputs:
            tokens, steps = greedy_without_cache(lm, inputs.inputs_embeds, inputs.attention_mask, NEW_TOKENS)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.equal(cached.sequences, tokens)
    for step in range(NEW_TOKENS):
        torch.testing.assert_close(cached.logits[step], uncached.logits[step], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cached.logits[step], steps[step], atol=1e-4, rtol=1e-4)


def test_beam_search_is_refused():
    lm, injection = attached("llama", gates=1.0)
    with pytest.raises(RuntimeError, match="beam search"):
        generate(lm, injection, PROMPTS, HAS_IMAGE, visual_for(3), num_beams=2)
    assert injection._context is None  # cleared on the way out


# --- 6. visual keys and values once per context -----------------------------------------------------
def test_visual_keys_and_values_are_computed_once_per_context(kind):
    lm, injection = attached(kind, gates=1.0)
    calls = []
    hooks = [block.to_kv.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
             for i, block in enumerate(injection.blocks)]
    with torch.no_grad():
        out = generate(lm, injection, PROMPTS, HAS_IMAGE, visual_for(3))
    assert out.sequences.shape[1] == NEW_TOKENS
    assert sorted(calls) == list(range(len(injection.blocks)))
    calls.clear()
    with torch.no_grad():
        generate(lm, injection, PROMPTS, HAS_IMAGE, visual_for(3))
    assert sorted(calls) == list(range(len(injection.blocks)))  # a new context computes them again, once
    for h in hooks:
        h.remove()


# --- 7. configuration errors -----------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("every", 0), ("heads", 0), ("head_dim", -1), ("ff_mult", 0),
                                          ("every", 1.5), ("layers", (4,)), ("layers", (-5,)), ("layers", ()),
                                          ("layers", (1, -3))])
def test_bad_options_name_the_option(field, value):
    lm = tiny_lm("llama")
    with pytest.raises(ConfigError, match=f"'{field}'"):
        build_cross_attention(lm, CrossAttentionOptions(**{field: value}))


def test_encoder_decoder_lm_is_refused():
    from transformers import T5Config, T5ForConditionalGeneration

    from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel

    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0)
    lm = Seq2SeqLanguageModel(T5ForConditionalGeneration(config))
    with pytest.raises(ConfigError, match="encoder-decoder"):
        build_cross_attention(lm, OPTIONS)
    with pytest.raises(ConfigError, match="encoder-decoder"):
        GatedCrossAttentionInjection(32, (0,)).attach(lm)


def test_attach_checks_layers_and_width():
    lm = tiny_lm("gpt2")
    with pytest.raises(ConfigError, match="layer 7"):
        GatedCrossAttentionInjection(WIDTH, (0, 7)).attach(lm)
    with pytest.raises(ConfigError, match="wide"):
        GatedCrossAttentionInjection(WIDTH * 2, (0,)).attach(lm)
    injection = GatedCrossAttentionInjection(WIDTH, (0,), heads=2, head_dim=8)
    injection.attach(lm)
    with pytest.raises(RuntimeError, match="already attached"):
        injection.attach(lm)
