"""A bridge is a connector and an injection, chosen independently (registry.py); each paper is a preset."""

from __future__ import annotations

import math

from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.injections.base import Injection
from vlbridge.bridges.spec import FEATURE_KINDS
from vlbridge.precision import module_dtype


class Bridge(nn.Module):
    """Vision features or pixels -> visual vectors (connector) -> into the LM (injection).

    ``features="pooled"`` feeds a feature connector one global vector per image instead of the grid: the
    MemVP paper's "local -> global" ablation (a large drop: local features matter). ``pool=k`` averages
    k x k grid cells first.
    """

    def __init__(self, connector: Connector, injection: Injection, features: str = "grid", pool: int = 1):
        super().__init__()
        if features not in FEATURE_KINDS:
            raise ValueError(f"unknown features {features!r}; valid: {list(FEATURE_KINDS)}")
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.connector = connector
        self.injection = injection
        self.features = features
        self.pool = pool

    @property
    def consumes(self) -> str:
        """``features`` (a vision encoder's) or ``pixels`` (no encoder)."""
        return self.connector.consumes

    def num_visual_inputs(self, grid_tokens: int) -> int:
        """How many vectors reach the connector for an encoder grid of ``grid_tokens`` (pixel connectors:
        their patches, unchanged)."""
        if self.consumes == "pixels":
            return grid_tokens
        return 1 if self.features == "pooled" else grid_tokens // (self.pool * self.pool)

    def num_visual_tokens(self, grid_tokens: int) -> int:
        """Visual vectors the connector emits per image (resamplers emit a fixed number)."""
        return self.connector.num_output_tokens(self.num_visual_inputs(grid_tokens))

    def pool_grid(self, grid: Tensor) -> Tensor:
        """(B, h*w, d_v) square grid -> (B, (h/k)*(w/k), d_v) by k x k average pooling (fewer visual
        tokens: the usual way to cut input-space cost, e.g. LLaVA-OneVision's 2x2 pooling); clips' frames
        (B, F, h*w, d_v) each alone."""
        if self.pool == 1:
            return grid
        *lead, n, d = grid.shape
        side = math.isqrt(n)
        if side * side != n or side % self.pool:
            raise ValueError(f"pool={self.pool} needs a square grid whose side it divides, got {n} tokens")
        image = grid.reshape(-1, n, d).transpose(1, 2).reshape(-1, d, side, side)
        pooled = nn.functional.avg_pool2d(image, self.pool).flatten(2).transpose(1, 2)
        return pooled.reshape(*lead, pooled.shape[1], d)

    def forward(self, grid: Tensor | None = None, pooled: Tensor | None = None, pixels: Tensor | None = None,
                prompt: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """grid (B, n, d_v) and pooled (B, d_v) features, or pixels (B, C, H, W) -> visual vectors (B, n', d)
        and each row's count of valid vectors (B,), or None when every image gives n'. Clips (a connector that
        takes them): grid (B, F, v, d_v) and pooled (B, F, d_v), one vector per frame when pooled. ``prompt``:
        (B, T) token ids and mask, left-padded, for a connector that reads the prompt (``reads_prompt``)."""
        # a frozen encoder stored in bf16 gives bf16 features; the trained connector reads its own dtype (fp32)
        dtype = module_dtype(self.connector)
        grid = grid.to(dtype) if grid is not None else None
        pooled = pooled.to(dtype) if pooled is not None else None
        text = {}
        if self.connector.reads_prompt:
            if prompt is None:
                raise ValueError("this bridge's connector reads the text prompt, none was given")
            text = {"prompt_ids": prompt[0], "prompt_mask": prompt[1]}
        if self.consumes == "pixels":
            if pixels is None:
                raise ValueError("this bridge's connector reads pixels, the batch has none")
            out = self.connector(pixels, **text)
        elif self.features == "pooled":
            if pooled is None:
                raise ValueError("this bridge uses pooled features but the encoder gave none")
            out = self.connector(pooled.unsqueeze(-2), **text)  # (B, 1, d_v), or (B, F, 1, d_v) for clips
        else:
            if grid is None:
                raise ValueError("this bridge's connector reads vision features, the batch has none")
            out = self.connector(self.pool_grid(grid), **text)
        return out if isinstance(out, tuple) else (out, None)
