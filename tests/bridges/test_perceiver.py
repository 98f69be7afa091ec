"""The Perceiver resampler connector (``perceiver``): shapes for images and video frames, invariants of the
resampler, gradients, option and input errors, and its closed-form cost equal to what torch counts. Parity with
flamingo-pytorch is in test_perceiver_parity.py; every injection takes it by recipe in test_grid.py."""

from __future__ import annotations

import pytest
import torch

from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.connectors.perceiver import (PerceiverConnector, PerceiverOptions, PerceiverResampler,
                                                   build_perceiver)
from vlbridge.bridges.registry import CONNECTORS, parse_options
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops

D_V, D_OUT = 24, 40
SMALL = PerceiverOptions(depth=2, num_latents=5, heads=2, head_dim=8)


def small(**changes) -> PerceiverConnector:
    torch.manual_seed(0)
    options = PerceiverOptions(**{**SMALL.__dict__, **changes})
    return build_perceiver(D_V, D_OUT, options)


def test_registered_with_flamingo_defaults():
    entry = CONNECTORS["perceiver"]
    assert entry.options is PerceiverOptions and entry.build is build_perceiver and entry.consumes == "features"
    connector = entry.build(D_V, D_OUT, parse_options(entry.options, {}, "connector 'perceiver'"))
    resampler = connector.resampler
    assert (len(resampler.layers), resampler.num_latents, resampler.heads, resampler.dim_head) == (6, 64, 8, 64)
    assert resampler.dim == D_V and connector.input_projection is None  # Flamingo: the vision width
    attention, ff = resampler.layers[0]
    assert attention.to_q.out_features == 8 * 64 and ff[1].out_features == 4 * D_V
    assert resampler.frame_embs is None and resampler.media_time_embs is None
    assert connector.num_output_tokens(256) == connector.num_output_tokens(3) == 64
    assert connector(torch.randn(2, 7, D_V)).shape == (2, 64, D_OUT)


def test_no_bias_in_any_resampler_linear():
    resampler = small().resampler
    linears = [m for m in resampler.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 5  # to_q, to_kv, to_out and the FF's two, per layer
    assert all(m.bias is None for m in linears)


def test_images_and_frames_give_num_latents_vectors():
    connector = small(max_frames=4)
    assert connector(torch.randn(3, 16, D_V)).shape == (3, 5, D_OUT)  # (B, n, d_v)
    for frames in (1, 2, 4):
        assert connector(torch.randn(2, frames, 6, D_V)).shape == (2, 5, D_OUT)  # (B, F, v, d_v)


def test_one_frame_without_frame_embeddings_is_the_image_path():
    connector = small()
    features = torch.randn(2, 9, D_V)
    torch.testing.assert_close(connector(features[:, None]), connector(features), atol=0, rtol=0)


def test_frame_embeddings_make_frame_order_matter():
    """Without frame embeddings the resampler sees a set of tokens (no position embedding): reordering frames, or
    tokens, changes nothing. With them, swapping two frames changes the output."""
    frames = torch.randn(2, 3, 4, D_V)
    swapped = frames[:, [1, 0, 2]]
    plain = small()
    torch.testing.assert_close(plain(swapped), plain(frames), atol=1e-5, rtol=1e-5)
    tokens = frames.reshape(2, 12, D_V)
    torch.testing.assert_close(plain(tokens[:, torch.randperm(12)]), plain(tokens), atol=1e-5, rtol=1e-5)
    embedded = small(max_frames=3)
    assert (embedded(swapped) - embedded(frames)).abs().max() > 1e-3


def test_media_items_are_resampled_independently():
    """Each media item gets its own copy of the latents: resampling T items together equals one by one, except for
    their media-time embeddings, which are each item's own."""
    torch.manual_seed(0)
    resampler = PerceiverResampler(16, depth=2, heads=2, dim_head=4, num_latents=3, max_num_media=3).eval()
    media = torch.randn(2, 3, 1, 5, 16)  # (b, T, F, v, D)
    together = resampler(media)
    for t in range(3):
        alone = media[:, t:t + 1] + resampler.media_time_embs[t]  # the embedding item t gets when together
        with torch.no_grad():
            saved = resampler.media_time_embs.clone()
            resampler.media_time_embs.zero_()
            torch.testing.assert_close(resampler(alone)[:, 0], together[:, t], atol=1e-5, rtol=1e-5)
            resampler.media_time_embs.copy_(saved)


def test_batch_rows_are_independent():
    connector = small()
    features = torch.randn(3, 8, D_V)
    torch.testing.assert_close(connector(features)[1:2], connector(features[1:2]), atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter_of_the_resampler():
    torch.manual_seed(0)
    resampler = PerceiverResampler(16, depth=2, heads=2, dim_head=4, num_latents=3, max_num_frames=2, max_num_media=3)
    media = torch.randn(2, 3, 2, 4, 16)  # T = max_num_media, F = max_num_frames: every embedding row is read
    resampler(media).square().mean().backward()
    for name, parameter in resampler.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gradients_reach_every_parameter_of_the_connector_with_an_input_projection():
    connector = small(width=16, max_frames=2)
    assert connector.input_projection is not None and connector.resampler.dim == 16
    connector(torch.randn(2, 2, 5, D_V)).square().mean().backward()
    for name, parameter in connector.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_width_equal_to_the_vision_width_adds_no_input_projection():
    assert small(width=D_V).input_projection is None
    assert small(width=None).input_projection is None


def test_bf16_features_are_read_by_an_fp32_connector():
    connector = small()
    features = torch.randn(2, 6, D_V)
    out = connector(features.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, connector(features.to(torch.bfloat16).float()))


@pytest.mark.parametrize("field, value", [
    ("depth", 0), ("num_latents", -1), ("heads", 0), ("head_dim", 2.5), ("ff_mult", True), ("width", 0),
    ("max_frames", 0), ("max_media", "2"),
])
def test_bad_options_raise_naming_the_option(field, value):
    with pytest.raises(ConfigError, match=rf"perceiver connector option {field}="):
        build_perceiver(D_V, D_OUT, PerceiverOptions(**{field: value}))


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="num_queries.*valid: .*num_latents"):
        parse_options(PerceiverOptions, {"num_queries": 32}, "connector 'perceiver'")


def test_more_frames_than_max_frames_is_a_clear_error():
    connector = small(max_frames=2)
    with pytest.raises(ValueError, match=r"3 frames .*max_num_frames=2 \(connector option max_frames\)"):
        connector(torch.randn(1, 3, 4, D_V))


def test_more_media_than_max_media_is_a_clear_error():
    resampler = PerceiverResampler(16, depth=1, heads=2, dim_head=4, num_latents=3, max_num_media=2)
    with pytest.raises(ValueError, match=r"3 media .*max_num_media=2 \(connector option max_media\)"):
        resampler(torch.randn(1, 3, 1, 4, 16))


@pytest.mark.parametrize("shape", [(D_V,), (2, D_V), (1, 1, 2, 3, D_V), (2, 5, D_V + 1)])
def test_wrong_input_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="expected"):
        small()(torch.randn(*shape))


@pytest.mark.parametrize("changes, num_inputs", [
    ({}, 16),  # at the vision width
    ({"width": 16}, 49),  # with an input projection
    ({"num_latents": 64, "ff_mult": 3, "depth": 1}, 7),  # more latents than inputs
])
def test_flops_equal_what_torch_counts(changes, num_inputs):
    connector = small(**changes)
    assert connector.flops(num_inputs) == Connector.flops(connector, num_inputs)  # measured, no grad
    features = torch.randn(1, num_inputs, D_V)
    assert connector.flops(num_inputs) == count_flops(lambda: connector(features))  # with autograd on


def test_flops_of_a_video_count_all_its_frames_tokens():
    connector = small(max_frames=3)
    frames = torch.randn(1, 3, 5, D_V)
    with torch.no_grad():
        assert connector.flops(15) == count_flops(lambda: connector(frames))


def test_flops_formula_by_hand():
    """One layer at width 8, 1 head of 4, 2 latents, ff 2, 3 inputs, no projections: the terms written out."""
    resampler = PerceiverResampler(8, depth=1, heads=1, dim_head=4, num_latents=2, ff_mult=2)
    N, S, D, inner = 2, 5, 8, 4
    q, kv, scores, out, ff = 2 * N * D * inner, 2 * S * D * 2 * inner, 4 * N * S * inner, 2 * N * inner * D, \
        4 * N * D * 2 * D
    assert resampler.flops(3) == q + kv + scores + out + ff == 128 + 640 + 160 + 128 + 1024
