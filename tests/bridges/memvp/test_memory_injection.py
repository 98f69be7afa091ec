"""The memory-space injection does METHODS.md section 1's maths, keeps the LM intact and trains only the
bridge."""

from __future__ import annotations

import pytest
import torch
from tiny_memvp import GRID, HAS_IMAGE, PROMPTS, VISION_DIM, make_batch, memvp_model, randomise_memory
from torch.nn import functional as F

from vlbridge.bridges.injections.dropout import keep_mask
from vlbridge.bridges.injections.memory_space import MemorySpaceInjection
from vlbridge.models.language_model import positions_from_mask


def lm_logits(model, batch, *, bare: bool = False):
    """Full-vocabulary logits (B, L', V) of the LM on the batch's text, with or without the memory."""
    lm = model.language_model
    visual = model.visual_vectors(batch)
    with model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image,
                                       None, batch.padding_side) as inputs:
        if not bare:
            return lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                            position_ids=positions_from_mask(inputs.attention_mask)).logits
    # outside inject() the hooks are no-ops: the bare LM on the same (placeholder-free) inputs
    return lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                    position_ids=positions_from_mask(inputs.attention_mask)).logits


def test_pretrained_parameter_names_are_unchanged(llama):
    before = list(llama.model.state_dict())
    model = memvp_model(llama)
    assert list(llama.model.state_dict()) == before
    lm_keys = [k for k in model.state_dict() if k.startswith("language_model.")]
    assert lm_keys == [f"language_model.model.{k}" for k in before]
    extra = sorted(k for k in model.state_dict() if not k.startswith("language_model."))
    assert extra == ["bridge.connector.net.0.bias", "bridge.connector.net.0.weight", "bridge.connector.net.2.bias",
                     "bridge.connector.net.2.weight", "bridge.injection.p_k", "bridge.injection.p_v"]


def test_defaults_follow_the_released_code(llama):
    model = memvp_model(llama, num_slots=320)
    injection = model.bridge.injection
    assert (injection.lam, injection.scale, injection.dropout, injection.num_slots) == (0.01, 0.1, 0.1, 320)
    assert injection.layers == (0, 1)  # every layer
    assert torch.count_nonzero(injection.p_v) == 0
    assert 0.015 < injection.p_k.std().item() < 0.025  # N(0, 0.02^2)
    linear0, linear2 = model.bridge.connector.net[0], model.bridge.connector.net[2]
    assert (linear0.in_features, linear0.out_features, linear2.out_features) == (VISION_DIM, 128, 32)
    assert torch.count_nonzero(linear0.bias) == 0 and torch.count_nonzero(linear2.bias) == 0
    assert injection.visual_sequence_length(256) == 0


def test_no_op_at_initialisation(llama):
    """p_v = 0 and text-only rows (f(z) = 0): V = 0 exactly, so the LM is unchanged."""
    model = memvp_model(llama)
    batch = make_batch(PROMPTS, [False, False, False])
    assert torch.equal(lm_logits(model, batch), lm_logits(model, batch, bare=True))


@pytest.mark.parametrize("option", ["lam", "scale"])
def test_zero_lambda_or_scale_with_zero_p_v_is_the_bare_lm(llama, option):
    model = memvp_model(llama, **{option: 0.0})
    randomise_memory(model)
    with torch.no_grad():
        model.bridge.injection.p_v.zero_()
    batch = make_batch(PROMPTS, HAS_IMAGE)
    assert torch.equal(lm_logits(model, batch), lm_logits(model, batch, bare=True))
    # and the memory does matter once lambda and s are back
    model.bridge.injection.lam = model.bridge.injection.scale = 1.0
    assert not torch.allclose(lm_logits(model, batch), lm_logits(model, batch, bare=True))


def test_hook_matches_hand_written_reference_on_a_llama_ffn(llama):
    model = memvp_model(llama, lam=0.5)
    randomise_memory(model)
    injection, lm = model.bridge.injection, model.language_model
    batch = make_batch(PROMPTS, HAS_IMAGE)
    visual = model.visual_vectors(batch)  # (B, n, d)
    x = torch.randn(3, 5, 32)
    ffn = lm.ffn(1)

    # reference: METHODS.md section 1, written out
    f_z = torch.zeros(3, 12, 32)
    f_z[:, :GRID] = visual * batch.has_image[:, None, None]
    keys = 0.5 * f_z + injection.p_k
    values = 0.5 * f_z + injection.p_v
    plain = ffn.down_proj(F.silu(ffn.gate_proj(x)) * ffn.up_proj(x))
    expected = plain + 0.1 * (F.silu(x @ keys.transpose(1, 2)) @ values)

    with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
        got = ffn(x)
        model.train()  # dropout 0.1 on phi(x K^T), same random stream as the reference
        torch.manual_seed(3)
        got_train = ffn(x)
    torch.manual_seed(3)
    keep = keep_mask((3, 5, 12), 0.1)  # the same random stream as the hook's dropout
    expected_train = plain + 0.1 * ((F.silu(x @ keys.transpose(1, 2)) * keep / (1 - 6554 / 2**16)) @ values)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_train, expected_train)
    assert not torch.allclose(got_train, got)
    assert torch.equal(ffn(x), plain)  # memory cleared after the context


def test_non_gated_ffn_is_literal_concatenation(gpt2):
    """GPT-2: FFN(x) + act(x K^T) V == act(x [W1; K]^T + [b1; 0]) [W2; V] + b2 (eval mode)."""
    model = memvp_model(gpt2, lam=0.5)
    randomise_memory(model)
    injection, lm = model.bridge.injection, model.language_model
    assert (injection.scale, injection.dropout) == (1.0, 0.0)
    batch = make_batch(PROMPTS, HAS_IMAGE)
    visual = model.visual_vectors(batch)
    keys, values = injection.memory(visual, batch.has_image)  # (B, M, d)
    ffn = lm.ffn(0)
    x = torch.randn(3, 5, 32)
    expected = []
    for b in range(3):
        w1 = torch.cat([ffn.c_fc.weight.T, keys[b]])  # Conv1D stores (in, out): W1 = weight.T is (D, d)
        b1 = torch.cat([ffn.c_fc.bias, torch.zeros(12)])
        w2 = torch.cat([ffn.c_proj.weight, values[b]])  # (D + M, d)
        expected.append(ffn.act(x[b] @ w1.T + b1) @ w2 + ffn.c_proj.bias)
    with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
        got = ffn(x)
    torch.testing.assert_close(got, torch.stack(expected))


def test_extra_slots_and_text_only_rows():
    injection = MemorySpaceInjection(8, num_slots=5, lam=0.01)
    visual = torch.randn(2, 3, 8)
    has_image = torch.tensor([True, False])
    keys, values = injection.memory(visual, has_image)  # (2, 5, 8)
    assert keys.shape == values.shape == (2, 5, 8)
    torch.testing.assert_close(keys[0, :3], 0.01 * visual[0] + injection.p_k[:3])
    torch.testing.assert_close(values[0, :3], 0.01 * visual[0] + injection.p_v[:3])
    assert torch.equal(keys[0, 3:], injection.p_k[3:]) and torch.equal(values[0, 3:], injection.p_v[3:])
    # the row without an image keeps only the position embeddings, whatever its visual vectors hold
    assert torch.equal(keys[1], injection.p_k) and torch.equal(values[1], injection.p_v)
    # a text-only batch (n = 0) is all position embeddings
    keys, _ = injection.memory(torch.zeros(2, 0, 8), torch.tensor([False, False]))
    assert torch.equal(keys, injection.p_k.expand(2, -1, -1))
    with pytest.raises(ValueError, match="do not fit in 5 memory slots"):
        injection.memory(torch.randn(1, 6, 8), torch.tensor([True]))


def test_text_only_row_ignores_the_other_rows_images(llama):
    model = memvp_model(llama, lam=1.0)
    randomise_memory(model)
    a = lm_logits(model, make_batch(PROMPTS, HAS_IMAGE, seed=0))
    b = lm_logits(model, make_batch(PROMPTS, HAS_IMAGE, seed=1))  # other image features
    torch.testing.assert_close(a[1], b[1])  # row 1 has no image
    assert not torch.allclose(a[0], b[0])


def test_gradients_reach_only_the_projector_and_position_embeddings(llama):
    model = memvp_model(llama).train()
    batch = make_batch(PROMPTS, HAS_IMAGE, answers=[[30, 31], [32], [33, 34, 35]])
    out = model(batch)
    (out.loss_sum / out.num_tokens).backward()
    trainable = set(model.trainable_parameters())
    assert trainable == {"bridge.connector.net.0.weight", "bridge.connector.net.0.bias",
                         "bridge.connector.net.2.weight", "bridge.connector.net.2.bias",
                         "bridge.injection.p_k", "bridge.injection.p_v"}
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_sequence_stays_text_only(llama):
    model = memvp_model(llama)
    batch = make_batch(PROMPTS, HAS_IMAGE, side="left")
    visual = model.visual_vectors(batch)
    with model.bridge.injection.inject(model.language_model, batch.input_ids, batch.attention_mask, visual,
                                       batch.has_image, None, "left") as inputs:
        # the widest row loses its placeholder; the text-only row is the widest (8 tokens)
        assert inputs.inputs_embeds.shape[:2] == (3, 8)
        assert inputs.attention_mask.sum(1).tolist() == [5, 8, 2]
        assert not inputs.visual_positions.any()


def test_inject_state_lives_exactly_as_long_as_the_context(llama):
    model = memvp_model(llama)
    injection, lm = model.bridge.injection, model.language_model
    batch = make_batch(PROMPTS, HAS_IMAGE)
    visual = model.visual_vectors(batch)
    with pytest.raises(KeyError):
        with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
            with pytest.raises(RuntimeError, match="do not nest"):
                with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
                    pass
            raise KeyError("boom")
    assert injection._memory is None
    with pytest.raises(RuntimeError, match="already attached"):
        injection.attach(lm)
