"""The vectorised splice puts each row's visual tokens exactly where its placeholder was."""

from __future__ import annotations

import pytest
import torch

from vlbridge.bridges.injections.splice import splice_visual_tokens
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID


def embed(ids):
    return ids.float()[..., None].expand(*ids.shape, 3).clone()  # (B, L, 3): value = token id


def reference(ids, mask, visual, side):
    """One row at a time, the obvious way."""
    rows = []
    for b in range(ids.shape[0]):
        real = [(t, m) for t, m in zip(ids[b].tolist(), mask[b].tolist()) if m]
        seq = []
        for t, _ in real:
            seq += [("v", j) for j in range(visual.shape[1])] if t == IMAGE_TOKEN_ID else [("t", t)]
        rows.append(seq)
    width = max(len(r) for r in rows)
    return [([None] * (width - len(r)) + r) if side == "left" else (r + [None] * (width - len(r))) for r in rows]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("n", [0, 1, 4])
def test_splice_matches_row_by_row_reference(side, n):
    rows = [[5, IMAGE_TOKEN_ID, 7, 8], [9, 10], [IMAGE_TOKEN_ID, 11, 12], [13, 14, 15, IMAGE_TOKEN_ID]]
    width = max(map(len, rows))
    pad = lambda r, v: ([v] * (width - len(r)) + r) if side == "left" else (r + [v] * (width - len(r)))  # noqa: E731
    ids = torch.tensor([pad(r, 0) for r in rows])
    mask = torch.tensor([pad([1] * len(r), 0) for r in rows])
    labels = ids.clone().masked_fill(ids == IMAGE_TOKEN_ID, IGNORE)
    visual = -torch.arange(1, n + 1).float()[None, :, None].expand(4, n, 3) * 100 - torch.arange(4)[:, None, None]
    out = splice_visual_tokens(embed, ids, mask, visual, labels, side)
    expected = reference(ids, mask, visual, side)
    assert out.inputs_embeds.shape[1] == len(expected[0])
    for b, row in enumerate(expected):
        for pos, item in enumerate(row):
            value = out.inputs_embeds[b, pos, 0].item()
            if item is None:
                assert out.attention_mask[b, pos] == 0 and out.labels[b, pos] == IGNORE
            elif item[0] == "t":
                assert value == item[1] and out.attention_mask[b, pos] == 1 and out.labels[b, pos] == item[1]
            else:
                assert value == visual[b, item[1], 0].item() and out.visual_positions[b, pos]
                assert out.labels[b, pos] == IGNORE


def test_gradients_flow_into_visual_tokens():
    ids = torch.tensor([[1, IMAGE_TOKEN_ID, 2]])
    visual = torch.randn(1, 3, 3, requires_grad=True)
    out = splice_visual_tokens(embed, ids, torch.ones_like(ids), visual)
    out.inputs_embeds.sum().backward()
    assert torch.equal(visual.grad, torch.ones_like(visual))


def test_two_placeholders_in_a_row_are_rejected():
    ids = torch.tensor([[IMAGE_TOKEN_ID, 1, IMAGE_TOKEN_ID]])
    with pytest.raises(ValueError, match="at most one image placeholder"):
        splice_visual_tokens(embed, ids, torch.ones_like(ids), torch.zeros(1, 2, 3))
