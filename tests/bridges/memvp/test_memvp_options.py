"""The MemVP preset's options: the paper's ablations, layer subsets and clear errors."""

from __future__ import annotations

import pytest
import torch
from tiny_memvp import GRID, HAS_IMAGE, PROMPTS, VISION_DIM, make_batch, memvp_model, randomise_memory

from vlbridge.bridges.registry import build_preset
from vlbridge.errors import ConfigError
from vlbridge.train.parameter_groups import apply_trainable


def memory_of(model, batch):
    visual = model.visual_vectors(batch)  # (B, n, d)
    return visual, *model.bridge.injection.memory(visual, batch.has_image)


def test_without_visual_prompts_only_position_embeddings_remain(llama):
    model = memvp_model(llama, visual_prompts=False)
    randomise_memory(model)
    _, keys, values = memory_of(model, make_batch(PROMPTS, HAS_IMAGE))
    injection = model.bridge.injection
    assert torch.equal(keys, injection.p_k.expand(3, -1, -1)) and torch.equal(values, injection.p_v.expand(3, -1, -1))
    # no projector is left to count or to train, even when a stage makes the whole bridge trainable
    assert set(model.trainable_parameters()) == {"bridge.injection.p_k", "bridge.injection.p_v"}
    apply_trainable(model, ["bridge"])
    assert set(model.trainable_parameters()) == {"bridge.injection.p_k", "bridge.injection.p_v"}


@pytest.mark.parametrize("which", ["keys_only", "values_only"])
def test_keys_only_and_values_only(llama, which):
    model = memvp_model(llama, lam=0.5, **{which: True})
    randomise_memory(model)
    visual, keys, values = memory_of(model, make_batch(PROMPTS, HAS_IMAGE))
    injection = model.bridge.injection
    f_part = torch.zeros_like(keys)
    f_part[:, :GRID] = 0.5 * visual * torch.tensor(HAS_IMAGE)[:, None, None]
    visual_side, plain_side, p_visual, p_plain = ((keys, values, injection.p_k, injection.p_v) if which == "keys_only"
                                                  else (values, keys, injection.p_v, injection.p_k))
    torch.testing.assert_close(visual_side, f_part + p_visual)
    assert torch.equal(plain_side, p_plain.expand(3, -1, -1))


def test_keys_only_and_values_only_exclude_each_other(llama):
    with pytest.raises(ConfigError, match="exclude each other"):
        memvp_model(llama, keys_only=True, values_only=True)


def test_concatenated_position_embeddings(llama):
    model = memvp_model(llama, lam=0.5, position="concat", position_dim=8)
    randomise_memory(model)
    injection = model.bridge.injection
    assert injection.p_k.shape == injection.p_v.shape == (12, 8)
    # the injection reads d - position_dim features, so the projector makes just those
    assert injection.input_width(llama) == 24 and model.bridge.connector.net[2].out_features == 24
    visual, keys, values = memory_of(model, make_batch(PROMPTS, HAS_IMAGE))
    assert visual.shape == (3, GRID, 24)
    assert torch.equal(keys[..., 24:], injection.p_k.expand(3, -1, -1))
    assert torch.equal(values[..., 24:], injection.p_v.expand(3, -1, -1))
    torch.testing.assert_close(keys[0, :GRID, :24], 0.5 * visual[0])
    assert torch.count_nonzero(keys[:, GRID:, :24]) == 0 and torch.count_nonzero(keys[1, :, :24]) == 0
    # it still runs end to end
    out = model(make_batch(PROMPTS, HAS_IMAGE, answers=[[3], [4], [5]]))
    assert torch.isfinite(out.loss_sum)


def test_concat_default_position_dim_is_half_the_width(llama):
    model = memvp_model(llama, position="concat")
    assert model.bridge.injection.p_k.shape == (12, 16)


def test_pooled_features_give_one_visual_vector(llama):
    model = memvp_model(llama, features="pooled")
    visual = model.visual_vectors(make_batch(PROMPTS, HAS_IMAGE))
    assert visual.shape == (3, 1, 32)


def test_layer_subset(llama):
    model = memvp_model(llama, layers=[-1])
    lm = model.language_model
    assert model.bridge.injection.layers == (1,)
    assert len(lm.ffn(0)._forward_hooks) == 0 and len(lm.ffn(1)._forward_hooks) == 1
    model.bridge.injection.detach()
    assert len(lm.ffn(1)._forward_hooks) == 0


@pytest.mark.parametrize("layers, message", [([2], "does not exist"), ([0, -2], "repeat")])
def test_bad_layers_are_rejected(llama, layers, message):
    with pytest.raises(ConfigError, match=message):
        memvp_model(llama, layers=layers)


def test_single_linear_projector_and_explicit_activation(gpt2):
    model = memvp_model(gpt2, projector_layers=1, activation="relu", scale=0.5, dropout=0.2)
    injection = model.bridge.injection
    assert len(model.bridge.connector.net) == 1 and model.bridge.connector.net[0].in_features == VISION_DIM
    assert (injection.scale, injection.dropout) == (0.5, 0.2)
    assert torch.equal(injection.phi(0)(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))


def test_gpt2_reuses_its_own_activation(gpt2):
    model = memvp_model(gpt2)
    assert model.bridge.injection.phi(0) is model.language_model.ffn(0).act


def test_unknown_options_list_the_valid_ones(llama):
    with pytest.raises(ConfigError, match="num_slots"):
        build_preset("memvp", VISION_DIM, llama, {"slots": 3})
    with pytest.raises(ConfigError, match="valid"):
        build_preset("memvp", VISION_DIM, llama, {"position": "prepend"})
    with pytest.raises(ConfigError, match="silu"):
        build_preset("memvp", VISION_DIM, llama, {"activation": "swoosh"})
