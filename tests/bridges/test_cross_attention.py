"""Flamingo-style gated cross-attention, its maths: an exact no-op at initialisation, the blocks before their
layers, Flamingo's masking of the image to the tokens after it, rows of different visual lengths."""

from __future__ import annotations

import pytest
import torch
from tiny_cross_attention import (HAS_IMAGE, IMG, LAYERS, N, OPTIONS, PROMPTS, WIDTH, attached, bare_logits, batch,
                                  logits, open_gates, tiny_lm, visual_for)

from vlbridge.bridges.injections.cross_attention import CrossAttentionOptions, build_cross_attention, image_positions
from vlbridge.bridges.injections.splice import splice_visual_tokens


@pytest.fixture(params=["llama", "gpt2"])
def kind(request):
    return request.param


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
