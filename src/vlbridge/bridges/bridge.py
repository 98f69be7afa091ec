"""A bridge is a connector and an injection; each paper is one preset of the two (registry.py)."""

from __future__ import annotations

from torch import Tensor, nn

from vlbridge.bridges.injections.base import Injection

FEATURE_KINDS = ("grid", "pooled")


class Bridge(nn.Module):
    """Vision features -> visual vectors (connector) -> into the LM (injection).

    ``features="pooled"`` feeds the connector one global vector per image instead of the grid: the
    MemVP paper's "local -> global" ablation (a large drop: local features matter).
    """

    def __init__(self, connector: nn.Module, injection: Injection, features: str = "grid"):
        super().__init__()
        if features not in FEATURE_KINDS:
            raise ValueError(f"unknown features {features!r}; valid: {list(FEATURE_KINDS)}")
        self.connector = connector
        self.injection = injection
        self.features = features

    def forward(self, grid: Tensor, pooled: Tensor | None = None) -> Tensor:
        """grid (B, n, d_v), pooled (B, d_v) -> visual vectors (B, n', d)."""
        if self.features == "pooled":
            if pooled is None:
                raise ValueError("this bridge uses pooled features but the encoder gave none")
            return self.connector(pooled[:, None, :])
        return self.connector(grid)
