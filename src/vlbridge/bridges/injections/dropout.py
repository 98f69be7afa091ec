"""Dropout with a mask drawn 16 bits at a time.

torch's dropout draws its mask with ``bernoulli_``, one call of the CPU generator per element: forward and
backward take ~0.76 ms for MemVP's (8, 64, 320) memory activations on 2 threads, in each of 30 layers, about
2 % of a training step of the 135M LM. Here each 64-bit draw gives four uniform 16-bit integers, each
compared with round(p * 2^16): ~0.23 ms (``benchmarks/memory_branch_speedups.py``, BENCHMARKS.md). The drop
probability is p rounded to a multiple of 2^-16 (0.1 -> 0.100006), and kept elements are scaled by
1 / (1 - that probability), so the output's expectation is still the input, as with
``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LEVELS = 1 << 16  # values of one 16-bit lane


def drop_threshold(p: float) -> int:
    """How many of the 2^16 lane values drop an element: round(p * 2^16), at most 2^16 - 1."""
    return min(round(p * LEVELS), LEVELS - 1)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """A bool tensor of ``shape``, each element True with probability 1 - drop_threshold(p) / 2^16,
    independently (the generator's 64-bit draws are uniform, so their four 16-bit lanes are independent)."""
    count = math.prod(shape)
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    lanes = draws.view(torch.int16)[:count]  # uniform over -2^15 .. 2^15 - 1
    return (lanes >= drop_threshold(p) - (1 << 15)).view(shape)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``torch.nn.functional.dropout(x, p, training)`` with the mask from :func:`keep_mask`."""
    threshold = drop_threshold(p)
    if not training or threshold == 0:
        return x
    scale = LEVELS / (LEVELS - threshold)  # 1 / (1 - the drop probability)
    return x * (keep_mask(x.shape, p, x.device).to(x.dtype) * scale)
