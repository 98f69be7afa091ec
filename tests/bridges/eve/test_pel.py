"""EVE's patch embedding layer (METHODS.md 4.1-4.2): token layout and counts at any aspect ratio, locality of
the local attention, no leaks between images or from the padding, the centred preprocessing, blank images,
gradients, its cost equal to what torch counts, and options checked by name."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.eve.pel import EVEPatchEmbedding, EVEPatchOptions, ResidualAttention, build_eve_patch
from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.registry import CONNECTORS
from vlbridge.errors import ConfigError, DataError
from vlbridge.flops import count_flops
from vlbridge.text.tokenize import IMAGE_TOKEN_ID

S, P, R, C, D = 112, 14, 2, 32, 16  # canvas, patch, pool, PEL width, LM width: 8 x 8 patches, 4 x 4 tokens
CELL = P * R

# (width, height) -> resized (width, height) -> pooled grid (h, w):
# landscape 100 x 40 -> 112 x 56 (44.8 px rounds up to 2 cells): 2 x 4 -> 1 + 2 * 5 = 11 tokens
# portrait 30 x 90 -> 28 x 112 (37.3 px rounds down to 1 cell): 4 x 1 -> 1 + 4 * 2 = 9
# square 50 x 50 -> 112 x 112: 4 x 4 -> 21
IMAGES = {"landscape": ((100, 40), (2, 4)), "portrait": ((30, 90), (4, 1)), "square": ((50, 50), (4, 4))}


def noise_image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def build(**options):
    torch.manual_seed(0)
    return build_eve_patch(3, D, EVEPatchOptions(**{"image_size": S, "patch": P, "pool": R, "width": C, **options}))


@pytest.fixture
def connector():
    return build()


@pytest.fixture
def batch(connector):
    return connector.preprocess([noise_image(*size, seed) for seed, (size, _) in enumerate(IMAGES.values())])


def reference_tokens(connector, canvas):
    """One canvas (4, S, S) -> its (1 + h(w+1), C) tokens before the MLP, METHODS.md 4.2 the obvious way: the
    convolution over the whole image, cropped to the valid pixels' box, avg_pool2d, one token at a time."""
    ys, xs = canvas[3].nonzero(as_tuple=True)
    whole = connector.patch_embed(canvas[None, :3])[0]  # (C, S/p, S/p)
    fine = whole[:, ys.min() // P:ys.max() // P + 1, xs.min() // P:xs.max() // P + 1]  # (C, r h, r w)
    pooled = F.avg_pool2d(fine[None], R)[0]  # (C, h, w)
    _, h, w = pooled.shape
    local = torch.stack([torch.stack([
        connector.local_attention(pooled[:, i, j][None, None],
                                  fine[:, R * i:R * i + R, R * j:R * j + R].reshape(C, R * R).T[None])[0, 0]
        for j in range(w)]) for i in range(h)])  # (h, w, C)
    cls = connector.global_attention(connector.cls_token[None, None], local.reshape(1, h * w, C))[0, 0]
    rows = [torch.cat([local[i], connector.split_token[None]]) for i in range(h)]
    return torch.cat([cls[None], *rows])


def per_image(sequence, lengths):
    return list(torch.split(sequence, lengths.tolist()))


def test_is_a_registered_pixel_connector(connector):
    assert CONNECTORS["eve_patch"].consumes == "pixels" and CONNECTORS["eve_patch"].build is build_eve_patch
    assert isinstance(connector, Connector) and isinstance(connector, EVEPatchEmbedding)
    assert (connector.consumes, connector.input_width, connector.output_width) == ("pixels", 3, D)
    assert connector.max_inputs == 64 and connector.num_output_tokens(64) == 1 + 4 * 5
    assert build_eve_patch(3, D, EVEPatchOptions()).num_output_tokens(16 * 16) == 73  # the defaults: 224 px, p 14
    # the paper's sizes (METHODS.md 4.2): 672 px -> 24 x 24 -> 601; 1344 px -> 2353
    for size, tokens in [(672, 601), (1344, 2353)]:
        paper = build(image_size=size)
        assert paper.num_output_tokens(paper.max_inputs) == tokens


def test_token_counts_square_and_non_square(connector, batch):
    vectors, lengths = connector(batch)
    grids = [grid for _, grid in IMAGES.values()]
    expected = [1 + h * (w + 1) for h, w in grids]
    assert lengths.dtype == torch.long and lengths.tolist() == expected == [11, 9, 21]
    assert vectors.shape == (3, 21, D)
    assert connector.grid_shapes(batch).tolist() == [list(grid) for grid in grids]
    assert [connector.num_tokens(*size) for size, _ in IMAGES.values()] == expected
    assert connector.resized_size(300, 1) == (112, 28) and connector.num_tokens(1, 300) == 9  # a sliver: one cell


def test_layout_is_cls_then_rows_each_closed_by_split(connector, batch):
    """The tokens equal the reference built the obvious way, CLS first, the SPLIT vector after every row and
    nowhere else; the MLP receives exactly that sequence (seen by a hook) and the rows are its output."""
    seen = []
    connector.projection.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    vectors, lengths = connector(batch)
    sequence, token_lengths = connector.tokens(batch)
    assert torch.equal(token_lengths, lengths) and torch.equal(seen[0], sequence)
    with torch.no_grad():
        for b, (tokens, (h, w)) in enumerate(zip(per_image(sequence, lengths), connector.grid_shapes(batch).tolist())):
            torch.testing.assert_close(tokens, reference_tokens(connector, batch[b]))
            is_split = (tokens == connector.split_token).all(1)
            assert is_split.nonzero().squeeze(1).tolist() == [1 + i * (w + 1) + w for i in range(h)]
            grid = tokens[1:].reshape(h, w + 1, C)[:, :w]  # what the Patch Aligning Layer reads back
            cls = connector.global_attention(connector.cls_token[None, None], grid.reshape(1, h * w, C))[0, 0]
            torch.testing.assert_close(tokens[0], cls)
            torch.testing.assert_close(vectors[b, :lengths[b]], connector.projection(tokens))


def test_residual_attention_equals_multi_head_attention():
    """q, k, v per head through torch's scaled_dot_product_attention; masked keys count as absent."""
    torch.manual_seed(0)
    attention = ResidualAttention(C, 8)
    queries, keys = torch.randn(3, 2, C), torch.randn(3, 5, C)
    q = attention.query(attention.query_norm(queries)).reshape(3, 2, 8, 4).transpose(1, 2)
    k, v = attention.key_value(attention.key_norm(keys)).split(C, -1)
    k, v = (x.reshape(3, 5, 8, 4).transpose(1, 2) for x in (k, v))
    heads = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 2, C)
    with torch.no_grad():
        torch.testing.assert_close(attention(queries, keys), queries + attention.proj(heads))
        mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False, True, True, True, False]])
        masked = attention(queries, keys, mask)
        for n in range(3):
            alone = attention(queries[n:n + 1], keys[n:n + 1, mask[n]])
            torch.testing.assert_close(masked[n:n + 1], alone)


def test_local_attention_is_local(connector):
    """Changing one fine patch changes only its own pooled token and CLS: not its neighbours, not the SPLITs."""
    canvas = connector.preprocess([noise_image(50, 50, 0)])  # the whole 8 x 8 patch grid, 4 x 4 tokens
    changed = canvas.clone()
    py, px = 3, 4  # fine patch (3, 4) -> pooled token (1, 2) -> position 1 + 1 * 5 + 2 = 8
    changed[0, :3, py * P:(py + 1) * P, px * P:(px + 1) * P] += torch.randn(3, P, P)
    with torch.no_grad():
        before, _ = connector.tokens(canvas)
        after, _ = connector.tokens(changed)
    differs = (before - after).abs().amax(1) > 1e-6
    assert differs.nonzero().squeeze(1).tolist() == [0, 8]
    unchanged = ~differs
    torch.testing.assert_close(after[unchanged], before[unchanged], rtol=0, atol=1e-6)


def test_mixed_aspect_batch_equals_each_image_alone(connector, batch):
    vectors, lengths = connector(batch)
    for b in range(batch.shape[0]):
        alone, alone_lengths = connector(batch[b:b + 1])
        assert alone_lengths.tolist() == [lengths[b]] and alone.shape == (1, lengths[b], D)
        torch.testing.assert_close(vectors[b, :lengths[b]], alone[0])
        assert torch.count_nonzero(vectors[b, lengths[b]:]) == 0  # padding rows are zeros
    # nothing outside the valid region reaches the tokens
    scribbled = batch.clone()
    outside = (batch[:, 3:] == 0).expand(-1, 3, -1, -1)
    scribbled[:, :3][outside] = torch.randn(int(outside.sum())) * 100
    torch.testing.assert_close(connector(scribbled)[0], vectors, rtol=0, atol=0)


def test_three_channel_input_is_all_valid(connector):
    pixels = torch.randn(2, 3, S, S)
    vectors, lengths = connector(pixels)
    assert lengths.tolist() == [21, 21] and connector.grid_shapes(pixels).tolist() == [[4, 4], [4, 4]]
    torch.testing.assert_close(vectors, connector(torch.cat([pixels, torch.ones(2, 1, S, S)], 1))[0])


def test_preprocess_is_centred_on_whole_cells_with_the_mean_colour(connector):
    red = Image.new("RGB", (100, 40), (255, 0, 0))  # -> 112 x 56: 2 cells to spare vertically, 1 above
    grey = Image.new("L", (30, 90), 128)  # -> 28 x 112: 3 cells to spare, 1 on the left (rounded down)
    out = connector.preprocess([red, grey])
    assert out.shape == (2, 4, S, S) and out.dtype == torch.float32
    mean, std = torch.tensor(EVEPatchOptions().mean), torch.tensor(EVEPatchOptions().std)
    colours = [(torch.tensor([1.0, 0, 0]) - mean) / std, (128 / 255 - mean) / std]
    for b, (top, left, h, w) in enumerate([(28, 0, 56, 112), (0, 28, 112, 28)]):
        inside = torch.zeros(S, S, dtype=torch.bool)
        inside[top:top + h, left:left + w] = True
        assert torch.equal(out[b, 3], inside.float())
        assert torch.count_nonzero(out[b, :3][:, ~inside]) == 0  # the canvas is the mean colour: 0
        torch.testing.assert_close(out[b, :3][:, inside], colours[b][:, None].expand(3, h * w))
    # any size: the valid region is whole cells, centred to within half a cell
    rng = np.random.default_rng(0)
    for width, height in rng.integers(1, 400, (20, 2)).tolist():
        mask = connector.preprocess([Image.new("RGB", (width, height))])[0, 3]
        ys, xs = mask.nonzero(as_tuple=True)
        top, left = int(ys.min()), int(xs.min())
        h, w = int(ys.max()) + 1 - top, int(xs.max()) + 1 - left
        assert int(mask.sum()) == h * w and (w, h) == connector.resized_size(width, height)
        assert top % CELL == left % CELL == h % CELL == w % CELL == 0 and max(h, w) == S
        assert abs(top - (S - h) / 2) <= CELL / 2 and abs(left - (S - w) / 2) <= CELL / 2


def test_blank_image_gives_no_tokens_and_input_space_splices_none(connector, batch):
    pixels = torch.cat([torch.zeros(1, 4, S, S), batch[2:3]])  # a text-only sample's blank canvas, a square image
    vectors, lengths = connector(pixels)
    assert lengths.tolist() == [0, 21] and connector.grid_shapes(pixels).tolist() == [[0, 0], [4, 4]]
    assert torch.count_nonzero(vectors[0]) == 0
    only_blank, none = connector(torch.zeros(2, 4, S, S))
    assert only_blank.shape == (2, 0, D) and none.tolist() == [0, 0]

    def embed(ids):  # (B, L) -> (B, L, D): value = token id
        return ids.float()[..., None].expand(*ids.shape, D)

    ids = torch.tensor([[5, IMAGE_TOKEN_ID, 7], [8, IMAGE_TOKEN_ID, 9]])
    lm = SimpleNamespace(embed=embed)
    with InputSpaceInjection().inject(lm, ids, torch.ones_like(ids), vectors, torch.tensor([True, True]),
                                      visual_lengths=lengths) as spliced:
        assert spliced.inputs_embeds.shape == (2, 23, D)
        assert spliced.attention_mask[0].tolist() == [1, 1] + [0] * 21  # the blank image's row: text only
        assert spliced.inputs_embeds[0, :2, 0].tolist() == [5, 7] and not spliced.visual_positions[0].any()
        torch.testing.assert_close(spliced.inputs_embeds[1, 1:22], vectors[1])
        assert spliced.visual_positions[1].sum() == 21 and spliced.inputs_embeds[1, 22, 0] == 9


def test_gradients_reach_every_parameter(connector, batch):
    pixels = torch.cat([batch, torch.zeros(1, 4, S, S)])  # a blank canvas in the batch must not give NaN
    vectors, _ = connector(pixels)
    vectors.square().sum().backward()
    parameters = dict(connector.named_parameters())
    assert len(parameters) == 1 + 2 * 10 + 2 + 4  # conv, two attentions, CLS and SPLIT, the MLP
    for name, parameter in parameters.items():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert torch.count_nonzero(parameter.grad) > 0, name


@pytest.mark.parametrize("size, width, heads", [(S, C, 8), (56, 16, 4), (672, 16, 8)])
def test_flops_closed_form_equals_torch_count(size, width, heads):
    connector = build(image_size=size, width=width, heads=heads)
    n = connector.max_inputs
    example = connector.example_input(n)
    assert example.shape == (1, 4, size, size) and torch.all(example[:, 3] == 1)
    vectors, lengths = connector(example)
    g = size // CELL
    tokens = 1 + g * (g + 1)
    assert lengths.tolist() == [tokens] and vectors.shape == (1, tokens, D)
    with torch.no_grad():
        measured = count_flops(lambda: connector(example))
    m, keys, w = g * g, R * R, width
    conv = 2 * n * 3 * P * P * w
    local = m * (2 * w * w + 2 * keys * w * 2 * w + 4 * keys * w + 2 * w * w)
    global_ = 2 * w * w + 2 * m * w * 2 * w + 4 * m * w + 2 * w * w
    mlp = 2 * tokens * (w * D + D * D)
    assert connector.flops(n) == measured == conv + local + global_ + mlp
    assert connector.flops(16) == count_flops(lambda: connector(connector.example_input(16)))
    assert connector.activation_bytes(16) > 0
    for bad in (15, 9):  # not a square; a square whose side pool 2 does not divide
        with pytest.raises(ValueError, match="num_inputs"):
            connector.example_input(bad)


def test_bad_inputs_raise(connector):
    with pytest.raises(DataError, match="record 1"):
        connector.preprocess([noise_image(8, 8, 0), "not an image"])
    with pytest.raises(DataError):
        connector.preprocess([])
    with pytest.raises(ValueError, match="multiple of patch \\* pool"):
        connector(torch.zeros(1, 4, 42, 42))  # whole patches, not whole cells
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        connector.grid_shapes(torch.zeros(1, 5, S, S))


@pytest.mark.parametrize("field, options, widths", [
    ("image_size", dict(image_size=126), (3, D)),  # a multiple of the patch 14, not of the cell 28
    ("image_size", dict(image_size=0), (3, D)),
    ("patch", dict(patch=-14), (3, D)),
    ("pool", dict(pool=0), (3, D)),
    ("pool", dict(pool=True), (3, D)),
    ("width", dict(width=0), (3, D)),
    ("heads", dict(heads=0), (3, D)),
    ("heads", dict(heads=5), (3, D)),  # does not divide width 32
    ("mean", dict(mean=(0.5,)), (3, D)),
    ("std", dict(std=(0.5, 0.0, 0.5)), (3, D)),
    ("input_width", {}, (768, D)),
    ("output_width", {}, (3, 0)),
])
def test_bad_options_raise_config_error_naming_the_option(field, options, widths):
    with pytest.raises(ConfigError, match=rf"\b{field}="):
        build_eve_patch(*widths, EVEPatchOptions(**{"image_size": S, "patch": P, "width": C, **options}))
