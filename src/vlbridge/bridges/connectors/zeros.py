"""A connector that gives zero vectors: MemVP's "w/o visual prompts" ablation (only the memory's position
embeddings p_k / p_v remain to learn, so f(z) = 0; Table 4 of the MemVP paper)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vlbridge.bridges.connectors.base import Connector


@dataclass(frozen=True)
class ZerosOptions:
    """No options: the vectors are zeros of the injection's width, one per input feature."""


class ZeroVectors(Connector):
    """(B, n, d_v) -> (B, n, d) zeros, with no parameters to count or train."""

    def __init__(self, input_width: int, output_width: int):
        super().__init__()
        self.input_width, self.output_width = input_width, output_width

    def forward(self, features: Tensor) -> Tensor:
        return features.new_zeros(*features.shape[:-1], self.output_width)

    def flops(self, num_inputs: int) -> int:
        return 0


def build_zeros(input_width: int, output_width: int, options: ZerosOptions) -> ZeroVectors:
    return ZeroVectors(input_width, output_width)
