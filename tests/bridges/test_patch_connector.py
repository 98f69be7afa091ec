"""The linear patch embedding (Fuyu-8B style): mixed aspect ratios in one batch, no leaks between rows or
from the padding, and its cost equal to what torch counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.connectors.patch import PatchEmbedding, PatchOptions, build_patch_connector
from vlbridge.errors import ConfigError, DataError
from vlbridge.flops import count_flops

S, P, D = 64, 16, 8  # canvas side, patch side, LM width: a 4 x 4 grid of patches


def noise_image(width, height, seed, mode="RGB"):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


# landscape 100 x 40 -> 64 x 32 (25.6 px rounds up to 2 patches): 4 wide, 2 high = 8
# portrait 30 x 90 -> 16 x 64 (21.3 px rounds down to 1 patch): 1 wide, 4 high = 4
# square 50 x 50 -> 64 x 64: 16
IMAGES = {"landscape": (100, 40, 4, 2), "portrait": (30, 90, 1, 4), "square": (50, 50, 4, 4)}


@pytest.fixture
def connector():
    torch.manual_seed(0)
    return build_patch_connector(3, D, PatchOptions(image_size=S, patch=P))


@pytest.fixture
def images():
    return [noise_image(w, h, seed) for seed, (w, h, _, _) in enumerate(IMAGES.values())]


def own_patches(canvas, grid_w, grid_h):
    """One preprocessed canvas (4, S, S) -> its valid patches, cut out one by one in raster order and
    flattened (row, column, channel) as Fuyu's processor does: (grid_h * grid_w, 3 * P * P)."""
    return torch.stack([canvas[:3, r * P:(r + 1) * P, c * P:(c + 1) * P].permute(1, 2, 0).reshape(-1)
                        for r in range(grid_h) for c in range(grid_w)])


def test_is_a_pixel_connector(connector):
    assert isinstance(connector, Connector) and isinstance(connector, PatchEmbedding)
    assert (connector.consumes, connector.input_width, connector.output_width) == ("pixels", 3, D)
    assert connector.max_inputs == 16 and connector.num_output_tokens(16) == 16


def test_mixed_aspect_batch_shapes_and_lengths(connector, images):
    vectors, lengths = connector(connector.preprocess(images))
    expected = [gw * gh for _, _, gw, gh in IMAGES.values()]
    assert lengths.dtype == torch.long and lengths.tolist() == expected == [8, 4, 16]
    assert vectors.shape == (3, 16, D)
    assert [connector.num_patches(w, h) for w, h, _, _ in IMAGES.values()] == expected
    # a sliver still gives one patch on its short side
    assert connector.resized_size(200, 1) == (64, 16) and connector.num_patches(1, 200) == 4


def test_each_row_is_its_own_patches_projected(connector, images):
    """A row's vectors equal the projection of that image's own patches, cut out by hand, and equal the
    same image run alone: neither the other rows nor the padding change them."""
    batch = connector.preprocess(images)
    vectors, lengths = connector(batch)
    with torch.no_grad():
        for b, (image, (_, _, gw, gh)) in enumerate(zip(images, IMAGES.values())):
            expected = connector.projection(own_patches(batch[b], gw, gh))
            torch.testing.assert_close(vectors[b, :lengths[b]], expected)
            alone, alone_lengths = connector(connector.preprocess([image]))
            assert alone_lengths.tolist() == [gw * gh] and alone.shape == (1, gw * gh, D)
            torch.testing.assert_close(vectors[b, :lengths[b]], alone[0])


def test_pixels_outside_the_valid_region_do_not_leak(connector, images):
    batch = connector.preprocess(images)
    scribbled = batch.clone()
    outside = (batch[:, 3:] == 0).expand(-1, 3, -1, -1)
    scribbled[:, :3][outside] = torch.randn(int(outside.sum())) * 100
    before, _ = connector(batch)
    after, _ = connector(scribbled)
    assert torch.equal(before, after)


def test_rows_are_zero_after_their_lengths(connector, images):
    vectors, lengths = connector(connector.preprocess(images))
    for b in range(len(images)):
        assert torch.count_nonzero(vectors[b, lengths[b]:]) == 0
        assert torch.all(vectors[b, :lengths[b]].abs().sum(-1) > 0)  # real vectors are not zero


def test_three_channel_input_is_all_valid(connector):
    pixels = torch.randn(2, 3, S, S)
    vectors, lengths = connector(pixels)
    assert lengths.tolist() == [16, 16] and vectors.shape == (2, 16, D)
    with_mask, _ = connector(torch.cat([pixels, torch.ones(2, 1, S, S)], 1))
    torch.testing.assert_close(vectors, with_mask)


def test_bounding_box_crop_and_blank_image(connector):
    """The crop is the bounding box of the patches holding valid pixels (a centred image too), raster
    order; a blank canvas (text-only sample) gives no vectors."""
    pixels = torch.randn(3, 4, S, S)
    pixels[:, 3] = 0
    pixels[0, 3, 8:40, 20:52] = 1  # touches patch rows 0..2 and columns 1..3
    pixels[2, 3, :P, :P] = pixels[2, 3, 3 * P:, 3 * P:] = 1  # two corners: the box is the whole 4 x 4 grid
    vectors, lengths = connector(pixels)
    assert lengths.tolist() == [9, 0, 16] and vectors.shape == (3, 16, D)
    assert torch.count_nonzero(vectors[1]) == 0
    cut = torch.stack([pixels[0, :3, r * P:(r + 1) * P, c * P:(c + 1) * P].permute(1, 2, 0).reshape(-1)
                       for r in range(3) for c in range(1, 4)])
    with torch.no_grad():
        torch.testing.assert_close(vectors[0, :9], connector.projection(cut))


@pytest.mark.parametrize("hidden", [None, 12])
def test_gradients_reach_the_projection(hidden, images):
    torch.manual_seed(0)
    connector = build_patch_connector(3, D, PatchOptions(image_size=S, patch=P, hidden=hidden))
    vectors, _ = connector(connector.preprocess(images))
    vectors.square().sum().backward()
    parameters = list(connector.parameters())
    assert len(parameters) == (2 if hidden is None else 4)
    for parameter in parameters:
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0


@pytest.mark.parametrize("hidden", [None, 12])
def test_flops_closed_form_equals_torch_count(hidden):
    connector = build_patch_connector(3, D, PatchOptions(image_size=S, patch=P, hidden=hidden))
    n = connector.max_inputs
    example = connector.example_input(n)
    assert example.shape == (1, 4, S, S) and torch.all(example[:, 3] == 1)
    vectors, lengths = connector(example)
    assert lengths.tolist() == [n] and vectors.shape == (1, n, D)
    with torch.no_grad():
        measured = count_flops(lambda: connector(example))
    patch_dim = 3 * P * P
    expected = 2 * n * patch_dim * D if hidden is None else 2 * n * (patch_dim * hidden + hidden * D)
    assert connector.flops(n) == measured == expected
    assert connector.flops(4) == count_flops(lambda: connector(connector.example_input(4)))
    assert connector.activation_bytes(n) > 0
    with pytest.raises(ValueError, match="square"):
        connector.example_input(5)


def test_preprocess_channels_and_valid_masks(connector):
    red = Image.new("RGB", (100, 40), (255, 0, 0))
    grey = Image.new("L", (30, 90), 128)  # converted to RGB
    out = connector.preprocess([red, grey])
    assert out.shape == (2, 4, S, S) and out.dtype == torch.float32
    for b, (w, h) in enumerate([(64, 32), (16, 64)]):
        mask = torch.zeros(S, S)
        mask[:h, :w] = 1
        assert torch.equal(out[b, 3], mask)  # top-left, exactly the resized image
        assert torch.count_nonzero(out[b, :3, h:, :]) == 0 and torch.count_nonzero(out[b, :3, :, w:]) == 0
    mean, std = torch.tensor(PatchOptions().mean), torch.tensor(PatchOptions().std)
    torch.testing.assert_close(out[0, :3, :32, :64], ((torch.tensor([1.0, 0, 0]) - mean) / std)[:, None, None]
                               .expand(3, 32, 64))
    torch.testing.assert_close(out[1, :3, :64, :16], ((128 / 255 - mean) / std)[:, None, None].expand(3, 64, 16))


def test_square_aspect_fills_the_canvas(images):
    connector = build_patch_connector(3, D, PatchOptions(image_size=S, patch=P, aspect="square"))
    batch = connector.preprocess(images)
    assert torch.all(batch[:, 3] == 1)
    _, lengths = connector(batch)
    assert lengths.tolist() == [16, 16, 16] and connector.num_patches(100, 40) == 16


def test_bad_inputs_raise():
    connector = build_patch_connector(3, D, PatchOptions(image_size=S, patch=P))
    with pytest.raises(DataError, match="record 1"):
        connector.preprocess([noise_image(8, 8, 0), "not an image"])
    with pytest.raises(DataError):
        connector.preprocess([])
    with pytest.raises(ValueError, match="multiple of patch"):
        connector(torch.zeros(1, 4, 40, 40))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        connector(torch.zeros(1, 5, S, S))


@pytest.mark.parametrize("field, options, widths", [
    ("image_size", dict(image_size=100), (3, D)),  # not a multiple of patch 16
    ("image_size", dict(image_size=-16), (3, D)),
    ("image_size", dict(image_size=0), (3, D)),
    ("patch", dict(patch=0), (3, D)),
    ("aspect", dict(aspect="pad"), (3, D)),
    ("hidden", dict(hidden=0), (3, D)),
    ("mean", dict(mean=(0.5,)), (3, D)),
    ("std", dict(std=(0.5, 0.0, 0.5)), (3, D)),
    ("input_width", {}, (768, D)),
    ("output_width", {}, (3, 0)),
])
def test_bad_options_raise_config_error_naming_the_field(field, options, widths):
    with pytest.raises(ConfigError, match=rf"\b{field}="):
        build_patch_connector(*widths, PatchOptions(**options))
