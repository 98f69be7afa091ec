"""EVE's patch aligning layer: its levels, its fusion, its loss on the image's grid cells against the teacher's
grid (pooled to the coarser of the two), zero for text-only batches, and its weight in the total loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlbridge.bridges.eve.pal import PALOptions, PatchAligningLayer, level_indices
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops

D, C, LAYERS = 16, 8, 6


def test_levels_count_down_from_the_last_layer_in_steps_of_every():
    assert level_indices(32, 4) == [32, 28, 24, 20, 16, 12, 8, 4, 0]  # LLaMA-7B: 9 levels, the embeddings last
    assert level_indices(30, 4) == [30, 26, 22, 18, 14, 10, 6, 2]  # SmolLM2-135M: the embeddings are not a level
    assert level_indices(6, 4) == [6, 2]


def pal(**options) -> PatchAligningLayer:
    torch.manual_seed(0)
    return PatchAligningLayer(D, C, LAYERS, PALOptions(**{"heads": 2, **options}))


def test_forward_is_the_last_level_plus_attention_over_the_others():
    layer = pal()
    levels = torch.randn(5, 2, D)  # (cells, K, d), K = 2: the fusion attends to the one other level
    keys = [norm(levels[:, k]) for k, norm in enumerate(layer.level_norms)]
    # one key to attend to: the softmax is 1 whatever the scores, so the fusion is that level's key
    expected = layer.input_layer(levels[:, 0]) + layer.output_layer(keys[1])
    torch.testing.assert_close(layer(levels), expected)


def test_the_fusion_weights_levels_by_the_last_levels_key_per_head():
    layer = PatchAligningLayer(D, C, 8, PALOptions(heads=2))  # levels 8, 4, 0
    levels = torch.randn(3, 3, D)
    keys = torch.stack([norm(levels[:, k]) for k, norm in enumerate(layer.level_norms)], 1)  # (3, 3, C)
    heads = keys.reshape(3, 3, 2, C // 2)
    scores = torch.einsum("nhc,nkhc->nhk", heads[:, 0], heads[:, 1:]) / math.sqrt(C)  # EVE: the full width's scale
    fused = torch.einsum("nhk,nkhc->nhc", scores.softmax(-1), heads[:, 1:]).reshape(3, C)
    torch.testing.assert_close(layer(levels), layer.input_layer(levels[:, 0]) + layer.output_layer(fused))


def hidden(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, length, D, generator=g, requires_grad=True) for _ in range(LAYERS + 1))


def test_loss_reads_the_grid_cells_of_each_image_and_pools_the_finer_grid():
    layer = pal()
    states = hidden(3, 12)
    # row 0: text only; row 1: an image of 1 + 2 x (2 + 1) = 7 vectors (CLS, a 2 x 2 grid, SPLITs) at 2..8;
    # row 2: a 1 x 3 grid (1 + 4 = 5 vectors) at 5..9
    positions = torch.zeros(3, 12, dtype=torch.bool)
    positions[1, 2:9] = True
    positions[2, 5:10] = True
    cells = torch.tensor([[0, 1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    shapes = torch.tensor([[2, 2], [1, 3]])
    teacher = torch.randn(2, 16, C)  # a 4 x 4 teacher grid: pooled to 2 x 2 and to 1 x 3
    loss = layer.loss(states, positions, torch.tensor([1, 2]), cells, shapes, teacher)

    def image_loss(row, index, h, w):
        vectors = torch.stack([states[i][row, index] for i in layer.levels], 1)  # (h*w, K, d)
        prediction = layer(vectors)
        truth = F.adaptive_avg_pool2d(teacher[row - 1].reshape(4, 4, C).permute(2, 0, 1)[None], (h, w))
        return 1 - F.cosine_similarity(prediction, truth[0].flatten(1).T, dim=-1).mean()

    expected = (image_loss(1, [3, 4, 6, 7], 2, 2) + image_loss(2, [6, 7, 8], 1, 3)) / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert states[layer.levels[0]].grad[1, 3].abs().sum() > 0  # a grid cell's hidden state learns
    assert not states[layer.levels[0]].grad[1, 2].any() and not states[layer.levels[0]].grad[1, 5].any()  # CLS, SPLIT
    assert not states[layer.levels[0]].grad[0].any()  # the text-only row


def test_an_eve_grid_finer_than_the_teachers_is_pooled_to_it():
    layer = pal()
    states = hidden(1, 17)
    positions = torch.ones(1, 17, dtype=torch.bool)
    cells = torch.ones(1, 17, dtype=torch.bool)
    cells[0, 0] = False  # CLS; no SPLITs here: a connector without them
    teacher = torch.randn(1, 4, C)  # 2 x 2
    loss = layer.loss(states, positions, torch.tensor([0]), cells, torch.tensor([[4, 4]]), teacher)
    vectors = torch.stack([states[i][0, 1:] for i in layer.levels], 1).reshape(4, 4, -1)  # (4, 4, K*d)
    pooled = F.avg_pool2d(vectors.permute(2, 0, 1)[None], 2)[0].flatten(1).T.reshape(4, len(layer.levels), D)
    expected = 1 - F.cosine_similarity(layer(pooled), teacher[0], dim=-1).mean()
    torch.testing.assert_close(loss, expected)


def test_a_perfect_prediction_has_zero_loss():
    layer = pal()
    states = hidden(1, 4)
    positions, cells = torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        prediction = layer(torch.stack([states[i][0] for i in layer.levels], 1))
    loss = layer.loss(states, positions, torch.tensor([0]), cells, torch.tensor([[2, 2]]), 3 * prediction[None])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # cosine: the teacher's scale does not matter


def test_a_text_only_batch_gives_zero_and_a_gradient_to_every_parameter():
    layer = pal()
    loss = layer.loss(hidden(2, 5), torch.zeros(2, 5, dtype=torch.bool), torch.tensor([], dtype=torch.long), None, None,
                      None)
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_a_grid_that_does_not_match_its_cells_is_an_error():
    layer = pal()
    positions, cells = torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="5 grid cells in the sequence, expected 2 x 2"):
        layer.loss(hidden(1, 5), positions, torch.tensor([0]), cells, torch.tensor([[2, 2]]), torch.randn(1, 4, C))


@pytest.mark.parametrize("field, value, message", [
    ("every", 0, "every=0: must be a positive integer"),
    ("heads", 3, "heads=3: the teacher's width 8 must be a multiple of it"),
    ("weight", -1.0, "weight=-1.0: must be a finite number >= 0"),
    ("every", 7, "every=7: a 6-layer LM then gives 1 level"),
])
def test_bad_options_name_the_option(field, value, message):
    with pytest.raises(ConfigError, match=f"model.aligner_options.{message}"):
        PatchAligningLayer(D, C, LAYERS, PALOptions(**{"heads": 2, field: value}))


@pytest.mark.parametrize("lm_width, teacher_width, layers, every, heads", [(D, C, LAYERS, 1, 2), (576, 384, 30, 4, 8)])
def test_flops_closed_form_equals_torch_count(lm_width, teacher_width, layers, every, heads):
    layer = PatchAligningLayer(lm_width, teacher_width, layers, PALOptions(every=every, heads=heads))
    K = len(layer.levels)
    levels = torch.randn(64, K, lm_width)  # an 8 x 8 grid
    with torch.no_grad():
        measured = count_flops(lambda: layer(levels))
    d, c = lm_width, teacher_width
    assert layer.flops(64) == measured == 2 * 64 * (K * d * c + 2 * (K - 1) * c + d * c + c * c)
