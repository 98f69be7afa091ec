"""The MLP projector: LLaVA-1.5's ``Linear -> GELU -> Linear`` (and MemVP's ``Linear -> SiLU -> Linear``)."""

from __future__ import annotations

from torch import Tensor, nn

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}


class MLPProjector(nn.Module):
    """(B, n, d_in) -> (B, n, d_out), applied to each visual feature independently.

    ``hidden`` defaults to ``d_out`` (LLaVA-1.5 mlp2x_gelu); MemVP uses 128 with SiLU, xavier weights
    and zero biases (its released code). ``layers=1`` is a single Linear (LLaVA-1, MemVP's BART/T5 setting).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, activation: str = "gelu",
                 layers: int = 2, init: str = "default"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
        if layers == 1:
            self.net = nn.Sequential(nn.Linear(d_in, d_out))
        elif layers == 2:
            hidden = hidden or d_out
            self.net = nn.Sequential(nn.Linear(d_in, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, d_out))
        else:
            raise ValueError(f"layers must be 1 or 2, got {layers}")
        if init == "xavier":
            for module in self.net:
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}; valid: ['default', 'xavier']")

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
