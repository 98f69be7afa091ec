"""The MLP projector: LLaVA-1.5's ``Linear -> GELU -> Linear`` (and MemVP's ``Linear -> SiLU -> Linear``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector
from vlbridge.errors import ConfigError
from vlbridge.flops import projector_flops

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU}
INITS = ("default", "xavier")


@dataclass(frozen=True)
class MLPOptions:
    """An MLP applied to each visual feature on its own (same count in and out)."""

    hidden: int | None = None  # hidden width; None = the output width (LLaVA-1.5 mlp2x_gelu); MemVP: 128
    activation: str = "gelu"  # gelu (LLaVA) | silu (MemVP) | relu
    layers: int = 2  # 2 = Linear-act-Linear (LLaVA-1.5, MemVP's LLaMA code); 1 = one Linear (LLaVA-1, MemVP's BART/T5)
    init: str = "default"  # default (PyTorch's) | xavier (xavier-uniform weights, zero biases: MemVP's code)


class MLPProjector(Connector):
    """(B, n, d_in) -> (B, n, d_out), applied to each visual feature independently.

    ``hidden`` defaults to ``d_out`` (LLaVA-1.5 mlp2x_gelu); MemVP uses 128 with SiLU, xavier weights
    and zero biases (its released code). ``layers=1`` is a single Linear (LLaVA-1, MemVP's BART/T5 setting).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, activation: str = "gelu",
                 layers: int = 2, init: str = "default"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; valid: {list(INITS)}")
        self.input_width, self.output_width = d_in, d_out
        if layers == 1:
            self.net = nn.Sequential(nn.Linear(d_in, d_out))
        elif layers == 2:
            hidden = hidden or d_out
            self.net = nn.Sequential(nn.Linear(d_in, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, d_out))
        else:
            raise ConfigError(f"layers must be 1 or 2, got {layers}")
        self.hidden = hidden if layers == 2 else None
        if init == "xavier":
            for module in self.net:
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)

    def flops(self, num_inputs: int) -> int:
        return projector_flops(self.input_width, self.output_width, num_inputs, self.hidden, len(self.net) // 2 + 1)


def build_mlp(input_width: int, output_width: int, options: MLPOptions) -> MLPProjector:
    return MLPProjector(input_width, output_width, options.hidden, options.activation, options.layers, options.init)
