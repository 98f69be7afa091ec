"""The Perceiver resampler against the MIT reference package ``flamingo-pytorch`` 0.1.2 (lucidrains), with the same
weights: one image, several media per sample, video frames, and the registered connector around it.

flamingo-pytorch always adds a learned ``media_pos_emb`` (num_media_embeds, 1, D) to the media; it is exactly our
optional media-time embedding (``max_num_media``), so the tests either copy it there or set it to zero and compare
with our default, which has none. It has no frame embeddings: the frames test adds ours to the reference's input by
hand, which is what OpenFlamingo's resampler (the semantics we follow) does before flattening the frames.

With ``VLBRIDGE_REQUIRE_PARITY=1`` (scripts/test.sh, CI) a missing package fails these tests instead of skipping them.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from vlbridge.bridges.connectors.perceiver import PerceiverOptions, PerceiverResampler, build_perceiver

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("flamingo_pytorch") is None and not os.environ.get("VLBRIDGE_REQUIRE_PARITY"),
    reason="needs flamingo-pytorch (pip install --no-deps flamingo-pytorch==0.1.2 einops einops-exts; "
           "scripts/setup.sh installs it)")

D, DEPTH, HEADS, DIM_HEAD, LATENTS, FF_MULT = 32, 3, 4, 8, 6, 2


def reference(num_media_embeds: int, zero_media_pos_emb: bool = False):
    """flamingo-pytorch's resampler with random weights everywhere, LayerNorms included (their default 1 / 0 would
    hide a swapped norm)."""
    from flamingo_pytorch import PerceiverResampler as FlamingoPerceiverResampler

    torch.manual_seed(0)
    model = FlamingoPerceiverResampler(dim=D, depth=DEPTH, dim_head=DIM_HEAD, heads=HEADS, num_latents=LATENTS,
                                       num_media_embeds=num_media_embeds, ff_mult=FF_MULT)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn_like(module.weight))
                module.bias.copy_(0.2 * torch.randn_like(module.bias))
        if zero_media_pos_emb:
            model.media_pos_emb.zero_()
    return model.eval()


def converted(ref, max_num_media: int | None, max_num_frames: int | None = None) -> PerceiverResampler:
    """Ours with ``ref``'s weights: the same names, with ``media_pos_emb`` as ``media_time_embs`` (or dropped, when
    ours has none: then it must be zero)."""
    ours = PerceiverResampler(D, DEPTH, HEADS, DIM_HEAD, LATENTS, FF_MULT, max_num_frames, max_num_media)
    state = dict(ref.state_dict())
    media_pos_emb = state.pop("media_pos_emb")
    if max_num_media is not None:
        state["media_time_embs"] = media_pos_emb
    else:
        assert not media_pos_emb.any(), "dropping a non-zero media_pos_emb would change the outputs"
    if max_num_frames is not None:
        state["frame_embs"] = ours.frame_embs.detach()  # ours only (the reference has none)
    missing, unexpected = ours.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return ours.eval()


def test_one_image_with_our_default_no_media_embedding():
    ref = reference(num_media_embeds=1, zero_media_pos_emb=True)
    ours = converted(ref, max_num_media=None)
    x = torch.randn(2, 10, D)  # (b, n, D)
    with torch.no_grad():
        expected = ref(x)  # (b, 1, N, D)
        got = ours(x[:, None, None])  # (b, T=1, F=1, n, D)
    assert got.shape == expected.shape == (2, 1, LATENTS, D)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_several_media_with_media_time_embeddings():
    ref = reference(num_media_embeds=4)
    ours = converted(ref, max_num_media=4)
    x = torch.randn(2, 3, 9, D)  # (b, T=3, n, D): fewer media than embeddings
    with torch.no_grad():
        expected = ref(x)
        got = ours(x[:, :, None])  # (b, T, F=1, n, D)
    assert got.shape == (2, 3, LATENTS, D)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the embedding matters: without it the outputs differ
    without = converted(reference(num_media_embeds=4, zero_media_pos_emb=True), max_num_media=None)
    with torch.no_grad():
        assert (without(x[:, :, None]) - got).abs().max() > 1e-3


def test_frames_equal_the_reference_on_frame_embedded_flattened_tokens():
    ref = reference(num_media_embeds=1, zero_media_pos_emb=True)
    torch.manual_seed(1)
    ours = converted(ref, max_num_media=None, max_num_frames=4)
    b, frames, v = 2, 3, 5
    x = torch.randn(b, frames, v, D)  # (b, F, v, D): one video per sample
    with torch.no_grad():
        flattened = (x + ours.frame_embs[:frames, None]).reshape(b, frames * v, D)  # OpenFlamingo's order
        expected = ref(flattened)
        got = ours(x[:, None])  # (b, T=1, F, v, D)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_connector_is_the_resampler_then_its_output_projection():
    """The registered connector at the vision width (no input Linear) with the reference's weights."""
    ref = reference(num_media_embeds=1, zero_media_pos_emb=True)
    connector = build_perceiver(D, 48, PerceiverOptions(depth=DEPTH, num_latents=LATENTS, heads=HEADS,
                                                        head_dim=DIM_HEAD, ff_mult=FF_MULT))
    assert connector.input_projection is None
    state = {k: v for k, v in ref.state_dict().items() if k != "media_pos_emb"}
    connector.resampler.load_state_dict(state, strict=True)
    features = torch.randn(3, 16, D)  # (B, n, d_v)
    with torch.no_grad():
        expected = connector.output_projection(ref(features)[:, 0])
        got = connector(features)
    assert got.shape == (3, LATENTS, 48)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
