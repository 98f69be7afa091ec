"""The LLaVA preset: an MLP projector (LLaVA-1.5's Linear-GELU-Linear) feeding input-space injection."""

from __future__ import annotations

from dataclasses import dataclass

from vlbridge.bridges.spec import BridgeSpec


@dataclass(frozen=True)
class LlavaOptions:
    """LLaVA-1.5 projector between the vision grid and the LM's input embeddings."""

    hidden: int | None = None  # projector hidden width; None = the LM width (LLaVA-1.5)
    activation: str = "gelu"  # gelu (LLaVA) | silu | relu
    layers: int = 2  # 2 = Linear-act-Linear (LLaVA-1.5); 1 = one Linear (LLaVA-1)
    features: str = "grid"  # grid (local patch features) | pooled (one global vector)
    pool: int = 1  # k x k average pooling of the grid before the projector (k=2: 256 -> 64 tokens)


def llava_spec(options: LlavaOptions) -> BridgeSpec:
    mlp = {"hidden": options.hidden, "activation": options.activation, "layers": options.layers}
    return BridgeSpec("mlp", mlp, "input_space", {}, features=options.features, pool=options.pool)
