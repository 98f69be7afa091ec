"""Flamingo-style gated cross-attention: exact no-op at initialisation, Flamingo's masking, generation with
and without a KV cache, visual keys/values computed once per context, FLOPs equal to torch's count."""

from __future__ import annotations

import pytest
import torch
from greedy import greedy_without_cache

from vlbridge.bridges.injections.cross_attention import (
    CrossAttentionOptions,
    GatedCrossAttentionInjection,
    build_cross_attention,
    image_positions,
)
from vlbridge.bridges.injections.splice import splice_visual_tokens
from vlbridge.cost import lm_forward_flops, saved_activation_bytes
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops, gated_cross_attention_flops
from vlbridge.models.language_model import LanguageModel, positions_from_mask
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID

VOCAB, WIDTH, LAYERS, N = 100, 64, 4, 5
IMG = IMAGE_TOKEN_ID
OPTIONS = CrossAttentionOptions(every=2, heads=2, head_dim=16, ff_mult=2)  # blocks before layers 0 and 2
PROMPTS = [  # left-padded in batches: rows of different lengths, text before the image, a text-only row
    [5, 6, 7, IMG, 8, 9],
    [10, 11, 12, 13, 14, 15, 16, 17],
    [IMG, 20, 21],
]
HAS_IMAGE = [True, False, True]
NEW_TOKENS = 5


def tiny_lm(kind: str) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=LAYERS,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=LAYERS, n_head=4, n_positions=128,
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = None  # always NEW_TOKENS steps
    return LanguageModel(model.eval())


@pytest.fixture(params=["llama", "gpt2"])
def kind(request):
    return request.param


def attached(kind: str, options: CrossAttentionOptions = OPTIONS, gates: float | None = None):
    torch.manual_seed(0)
    lm = tiny_lm(kind)
    injection = build_cross_attention(lm, options).eval()
    injection.attach(lm)
    if gates is not None:
        open_gates(injection, gates)
    return lm, injection


def open_gates(injection: GatedCrossAttentionInjection, value: float = 1.0) -> None:
    with torch.no_grad():
        for block in injection.blocks:
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)


def batch(prompts, side: str = "left", answers=None):
    """(ids, mask, labels) padded on ``side``; with ``answers`` they are appended and supervised."""
    rows = [p + (answers[k] if answers else []) for k, p in enumerate(prompts)]
    width = max(map(len, rows))

    def pad(seq, value):
        fill = [value] * (width - len(seq))
        return fill + seq if side == "left" else seq + fill

    ids = torch.tensor([pad(r, 0) for r in rows])
    mask = torch.tensor([pad([1] * len(r), 0) for r in rows])
    labels = None
    if answers:
        labels = torch.tensor([pad([IGNORE] * len(p) + answers[k], IGNORE) for k, p in enumerate(prompts)])
    return ids, mask, labels


def visual_for(rows: int, seed: int = 0, n: int = N) -> torch.Tensor:
    return torch.randn(rows, n, WIDTH, generator=torch.Generator().manual_seed(seed))


def logits(lm, injection, ids, mask, visual, has_image, side="left", visual_lengths=None):
    """(B, W, V) logits of the spliced (placeholder-free) sequence, through the injection."""
    with injection.inject(lm, ids, mask, visual, torch.tensor(has_image), None, side,
                          visual_lengths=visual_lengths) as inputs:
        out = lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                       position_ids=positions_from_mask(inputs.attention_mask), use_cache=False)
    return out.logits, inputs.attention_mask


def bare_logits(lm, ids, mask, side="left"):
    """The LM alone on the same text with the placeholder removed."""
    spliced = splice_visual_tokens(lm.embed, ids, mask, torch.zeros(ids.shape[0], 0, WIDTH), None, side)
    out = lm.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                   position_ids=positions_from_mask(spliced.attention_mask), use_cache=False)
    return out.logits


# --- 1. exactly the bare LM at initialisation -------------------------------------------------------
def test_initial_gates_leave_the_lm_exactly_unchanged(kind):
    torch.manual_seed(0)
    lm = tiny_lm(kind)
    names = [name for name, _ in lm.named_parameters()]
    ids, mask, labels = batch(PROMPTS, "right", answers=[[30, 31], [32], [33, 34, 35]])
    with torch.no_grad():
        spliced = splice_visual_tokens(lm.embed, ids, mask, torch.zeros(3, 0, WIDTH), labels, "right")
        bare = lm(spliced.inputs_embeds, spliced.attention_mask, spliced.labels).loss_sum
        bare_out = bare_logits(lm, ids, mask, "right")
    injection = build_cross_attention(lm, OPTIONS).eval()
    injection.attach(lm)
    assert [name for name, _ in lm.named_parameters()] == names
    assert all(name.startswith("blocks.") for name, _ in injection.named_parameters())
    with torch.no_grad():
        with injection.inject(lm, ids, mask, visual_for(3), torch.tensor(HAS_IMAGE), labels, "right") as inputs:
            loss = lm(inputs.inputs_embeds, inputs.attention_mask, inputs.labels).loss_sum
        out, _ = logits(lm, injection, ids, mask, visual_for(3), HAS_IMAGE, "right")
    assert torch.equal(loss, bare)
    assert torch.equal(out, bare_out)
    open_gates(injection)  # the comparison is sharp: open gates do change the output
    with torch.no_grad():
        assert not torch.allclose(logits(lm, injection, ids, mask, visual_for(3), HAS_IMAGE, "right")[0], bare_out)


def test_blocks_sit_before_layers_0_every_2every():
    lm = tiny_lm("llama")
    assert build_cross_attention(lm, CrossAttentionOptions(every=2)).layer_indices == (0, 2)
    assert build_cross_attention(lm, CrossAttentionOptions(every=3)).layer_indices == (0, 3)
    assert build_cross_attention(lm, CrossAttentionOptions(every=1)).layer_indices == (0, 1, 2, 3)
    assert build_cross_attention(lm, CrossAttentionOptions(every=2, layers=(-1, 1))).layer_indices == (1, 3)


def test_blocks_run_before_their_layer():
    lm, injection = attached("llama", gates=1.0)
    ids, mask, _ = batch(PROMPTS[:1])
    seen = {}
    hooks = [lm.layers[i].register_forward_pre_hook(
        lambda m, a, k, i=i: seen.__setitem__(i, (a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
        for i in range(LAYERS)]
    outputs = {}
    hooks += [lm.layers[i].register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(
        i, (out[0] if isinstance(out, tuple) else out).clone())) for i in range(LAYERS)]
    with torch.no_grad():
        logits(lm, injection, ids, mask, visual_for(1), [True])
    for h in hooks:
        h.remove()
    # a layer without a block gets exactly the previous layer's output; one with a block does not
    assert torch.equal(seen[1], outputs[0]) and torch.equal(seen[3], outputs[2])
    assert not torch.allclose(seen[2], outputs[1])


def test_hidden_states_by_keyword_or_position_get_the_block():
    lm, injection = attached("gpt2", gates=1.0)
    ids, mask, _ = batch(PROMPTS[:1])
    x = torch.randn(1, 5, WIDTH)
    layer = lm.layers[0]
    with torch.no_grad():
        bare = layer(x)
        bare = bare[0] if isinstance(bare, tuple) else bare
        results = []
        for call in (lambda: layer(x), lambda: layer(hidden_states=x)):
            # a layer called outside a base-model call: positions are counted per block from 0
            with injection.inject(lm, ids, mask, visual_for(1), torch.tensor([True])):
                out = call()
            results.append(out[0] if isinstance(out, tuple) else out)
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], bare)


# --- 2. Flamingo's masking ----------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_image_reaches_only_tokens_from_its_position_in_image_rows(kind, side):
    lm, injection = attached(kind, gates=1.0)
    ids, mask, _ = batch(PROMPTS, side)
    with torch.no_grad():
        a, out_mask = logits(lm, injection, ids, mask, visual_for(3, seed=0), HAS_IMAGE, side)
        b, _ = logits(lm, injection, ids, mask, visual_for(3, seed=1), HAS_IMAGE, side)
    assert torch.isfinite(a).all()
    starts = image_positions(ids, mask, side)
    real = out_mask.bool()
    for row, has_image in enumerate(HAS_IMAGE):
        changed = ~torch.isclose(a[row], b[row], atol=1e-6, rtol=0).all(-1)  # (W,) the image changed it
        if not has_image:
            assert not changed.any()
            continue
        positions = torch.arange(a.shape[1])
        assert not changed[positions < starts[row]].any()  # text before the placeholder
        assert changed[(positions >= starts[row]) & real[row]].all()  # text at and after it
    assert (starts[0], starts[2]) == ((6, 6) if side == "left" else (3, 0))


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_attention_gives_zero_before_the_image_on_padding_and_on_rows_without_one(side):
    lm, injection = attached("llama", gates=1.0)
    ids, mask, _ = batch(PROMPTS, side)
    read = []  # each block's attention output, (B, W, H·h), as W_o reads it
    hooks = [block.to_out.register_forward_hook(lambda m, a, o: read.append(a[0])) for block in injection.blocks]
    with torch.no_grad():
        _, out_mask = logits(lm, injection, ids, mask, visual_for(3), HAS_IMAGE, side)
    for h in hooks:
        h.remove()
    positions = torch.arange(out_mask.shape[1])
    sees = torch.tensor(HAS_IMAGE)[:, None] & (positions >= image_positions(ids, mask, side)[:, None]) & out_mask.bool()
    assert len(read) == len(injection.blocks)
    for attended in read:
        assert torch.isfinite(attended).all()
        assert not attended[~sees].any()  # exactly zero
        assert attended[sees].abs().sum(-1).gt(0).all()


def test_a_row_without_an_image_is_the_bare_lm_when_only_the_attention_is_open(kind):
    lm, injection = attached(kind)
    with torch.no_grad():
        for block in injection.blocks:
            block.attn_gate.fill_(1.0)
    ids, mask, _ = batch(PROMPTS)
    with torch.no_grad():
        out, _ = logits(lm, injection, ids, mask, visual_for(3), HAS_IMAGE)
        bare = bare_logits(lm, ids, mask)
    assert torch.equal(out[1], bare[1])  # has_image False: zero from the attention, not NaN
    assert not torch.allclose(out[0], bare[0])
    # has_image True on a row without a placeholder: no image position, so nothing either
    with torch.no_grad():
        out, _ = logits(lm, injection, ids, mask, visual_for(3), [True, True, True])
    assert torch.equal(out[1], bare[1])


def test_image_positions_follow_the_splice():
    rows = [[5, IMG, 7, 8], [9, 10], [IMG, 11, 12], [13, 14, 15, IMG], [16, 17, 18, 19, 20]]
    for side in ("left", "right"):
        ids, mask, _ = batch(rows, side)
        embed = lambda x: x.float()[..., None]  # noqa: E731  value = token id
        spliced = splice_visual_tokens(embed, ids, mask, torch.zeros(len(rows), 0, 1), None, side)
        starts = image_positions(ids, mask, side)
        for row, tokens in enumerate(rows):
            if IMG not in tokens:
                continue
            values = spliced.inputs_embeds[row, :, 0].tolist()
            after = tokens.index(IMG) + 1
            if after < len(tokens):  # where the token after the placeholder went
                expected = [k for k, (v, m) in enumerate(zip(values, spliced.attention_mask[row].tolist()))
                            if m and v == tokens[after]][0]
            else:  # the placeholder ends the row: the next (generated) position
                expected = len(values) if side == "left" else len(tokens) - 1
            assert starts[row] == expected, (side, row)


def test_visual_vectors_past_a_rows_length_are_not_keys(kind):
    lm, injection = attached(kind, gates=1.0)
    ids, mask, _ = batch(PROMPTS)
    lengths = torch.tensor([3, N, 2])
    visual = visual_for(3)
    past = visual.clone()
    past[0, 3:] = 100.0
    past[2, 2:] = -50.0
    within = visual.clone()
    within[0, :3] += 1.0
    with torch.no_grad():
        base, _ = logits(lm, injection, ids, mask, visual, HAS_IMAGE, visual_lengths=lengths)
        padded, _ = logits(lm, injection, ids, mask, past, HAS_IMAGE, visual_lengths=lengths)
        moved, _ = logits(lm, injection, ids, mask, within, HAS_IMAGE, visual_lengths=lengths)
        unmasked, _ = logits(lm, injection, ids, mask, past, HAS_IMAGE)
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(moved[0], base[0], atol=1e-4)
    assert not torch.allclose(unmasked[0], base[0], atol=1e-4)
    # a length of 0 is no image at all
    with torch.no_grad():
        none, _ = logits(lm, injection, ids, mask, visual, HAS_IMAGE, visual_lengths=torch.tensor([0, N, 2]))
        other, _ = logits(lm, injection, ids, mask, visual_for(3, seed=3), HAS_IMAGE,
                          visual_lengths=torch.tensor([0, N, 2]))
    assert torch.isfinite(none).all() and torch.equal(none[0], other[0])


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
