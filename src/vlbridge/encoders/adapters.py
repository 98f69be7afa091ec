"""Bottleneck adapters inside a frozen ViT, as MemVP trains them (Jie et al. 2024, released code).

MemVP's ``forward_clip`` adds one adapter per transformer block, in parallel with the FFN and fed the
same normalised input: ``x = x + mlp(ln_2(x)) + s * adapter(ln_2(x))`` with
``adapter = fc2(dropout_0.1(gelu(fc1(.))))``, bias-free, hidden width 12 (ScienceQA scripts), s = 0.1,
and ``fc2`` zero-initialised so the encoder's output is unchanged at the start of training.
"""

from __future__ import annotations

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
    """``scale * up(dropout(gelu(down(x))))``; ``up`` starts at zero, so the adapter starts as a no-op."""

    def __init__(self, width: int, hidden: int, scale: float = 0.1, dropout: float = 0.1):
        super().__init__()
        self.down = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(hidden, width, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, width) -> (B, T, width)
        return self.scale * self.up(self.dropout(nn.functional.gelu(self.down(x))))
