"""The memory's dropout: each element dropped with probability p (rounded to 2^-16), the rest scaled to
keep the expectation, reproducible under a seed, identity outside training."""

from __future__ import annotations

import math

import pytest
import torch

from vlbridge.bridges.injections.dropout import drop_threshold, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_each_lane_drops_with_probability_p(p):
    torch.manual_seed(0)
    count = 400_000  # divisible by 4: row j of the view below holds lane j of every 64-bit draw
    kept = keep_mask((count,), p).view(-1, 4).float()
    q = drop_threshold(p) / 2**16
    assert abs(q - p) <= 2**-17
    tolerance = 5 * math.sqrt(q * (1 - q) / (count / 4))
    for lane in range(4):
        assert abs((1 - kept[:, lane].mean().item()) - q) < tolerance, lane
    # neighbouring lanes of a draw are independent: P(both dropped) = q^2
    both = ((1 - kept[:, 0]) * (1 - kept[:, 1])).mean().item()
    assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / (count / 4))


def test_kept_elements_are_scaled_to_keep_the_expectation():
    torch.manual_seed(1)
    x = torch.full((50, 63, 33), 2.0, requires_grad=True)  # an element count not divisible by 4
    y = dropout(x, 0.1, training=True)
    scale = 1 / (1 - drop_threshold(0.1) / 2**16)
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(2 * scale)
    assert y.mean().item() == pytest.approx(2.0, rel=0.01)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach() / 2)  # the gradient is the mask times the scale


def test_same_seed_same_mask_and_fresh_masks_otherwise():
    torch.manual_seed(3)
    first = keep_mask((8, 64, 320), 0.1)
    second = keep_mask((8, 64, 320), 0.1)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((8, 64, 320), 0.1), first)
    assert not torch.equal(first, second)


def test_identity_outside_training_and_at_p_zero():
    x = torch.randn(4, 5)
    assert dropout(x, 0.1, training=False) is x
    assert dropout(x, 0.0, training=True) is x
