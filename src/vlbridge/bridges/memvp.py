"""The MemVP preset: an MLP projector feeding a memory-space injection (METHODS.md section 1).

Defaults follow the released LLaMA code (JieShibo/MemVP): ``Linear(d_v, 128) -> SiLU -> Linear(128, d)``
with xavier weights and zero biases, lam = 0.01, 320 slots, s = 0.1, dropout 0.1, every layer. On a
non-gated FFN (GPT-2, T5 ``relu``, BART) the defaults become the paper's literal concatenation instead:
phi = the FFN's own activation, s = 1, no dropout. A gated FFN (LLaMA's SwiGLU, flan-T5's ``gated-gelu``)
keeps the code's parallel branch with its values. On an encoder-decoder LM (T5, BART) ``memory_in`` picks
the stacks with memory: the paper's BART/T5 code is not released, so which it used is unknown and ``both``
is our default. The remaining fields are the paper's ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vlbridge.bridges.bridge import Bridge
from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.bridges.injections.memory_space import MemorySpaceInjection
from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class MemVPOptions:
    """Memory-space visual prompting; each field is one knob of the paper's method or its ablations."""

    num_slots: int = 320  # M >= n memory slots; code: 320 for 256 patches (7B), 400 (13B)
    hidden: int = 128  # projector hidden width (code)
    projector_layers: int = 2  # 2 = Linear-SiLU-Linear (LLaMA code); 1 = one Linear (paper, BART/T5)
    lam: float = 0.01  # lambda, scale of f(z) in keys and values (code)
    scale: float | None = None  # s; None = 0.1 on gated FFNs (released scripts), 1.0 on non-gated (literal concat)
    dropout: float | None = None  # on phi(x K^T); None = 0.1 on gated FFNs (code), 0.0 on non-gated
    activation: str | None = None  # phi; None = silu on gated FFNs (code), the FFN's own activation on non-gated
    layers: tuple[int, ...] | None = None  # layers with memory, indexed within each stack; None = every layer (code)
    memory_in: str = "both"  # encoder-decoder LMs: encoder | decoder | both (ours; unpublished); decoder-only: both
    features: str = "grid"  # grid (local patches) | pooled (ablation "local -> global")
    visual_prompts: bool = True  # False = position embeddings only, f(z) = 0 (ablation "w/o visual prompts")
    position: str = "add"  # add (code) | concat: p_k / p_v on their own feature range (ablation, layout ours)
    position_dim: int | None = None  # concat only: width of p_k / p_v; None = d // 2 (ours)
    keys_only: bool = False  # lam f(z) enters the keys only (ablation)
    values_only: bool = False  # lam f(z) enters the values only (ablation)


class NoVisualPrompts(nn.Module):
    """The "w/o visual prompts" ablation's connector: f(z) = 0, with no parameters to count or train."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, features: Tensor) -> Tensor:  # (B, n, d_v) -> (B, n, d) zeros
        return features.new_zeros(*features.shape[:-1], self.width)


MEMORY_IN = {"both": None, "encoder": ("encoder",), "decoder": ("decoder",)}  # option -> the injection's stacks


def build_memvp(vision_dim: int, language_model, options: MemVPOptions) -> Bridge:
    d = language_model.hidden_size
    gated = language_model.layout.gated
    if options.keys_only and options.values_only:
        raise ConfigError("bridge 'memvp': keys_only and values_only exclude each other")
    if options.memory_in not in MEMORY_IN:
        raise ConfigError(f"bridge 'memvp': unknown memory_in {options.memory_in!r}; valid: {list(MEMORY_IN)}")
    position_dim = None
    if options.position == "concat":
        position_dim = options.position_dim if options.position_dim is not None else d // 2
        if not 0 < position_dim < d:
            raise ConfigError(f"bridge 'memvp': position_dim must be in 1..{d - 1}, got {position_dim}")
    content_dim = d - position_dim if position_dim else d
    projector = MLPProjector(vision_dim, content_dim, options.hidden, "silu", options.projector_layers, init="xavier")
    # concat: the projector fills the content features only; zero-padding gives visual vectors of width d
    connector = projector if content_dim == d else nn.Sequential(projector, nn.ConstantPad1d((0, d - content_dim), 0.0))
    if not options.visual_prompts:
        connector = NoVisualPrompts(d)  # only p_k and p_v remain to learn
    injection = MemorySpaceInjection(
        d,
        num_slots=options.num_slots,
        lam=options.lam,
        scale=options.scale if options.scale is not None else (0.1 if gated else 1.0),
        dropout=options.dropout if options.dropout is not None else (0.1 if gated else 0.0),
        activation=options.activation if options.activation is not None else ("silu" if gated else None),
        layers=None if options.layers is None else tuple(options.layers),
        stacks=MEMORY_IN[options.memory_in],
        visual_prompts=options.visual_prompts,
        position=options.position,
        position_dim=position_dim,
        visual_in_keys=not options.values_only,
        visual_in_values=not options.keys_only,
    )
    return Bridge(connector, injection, options.features)
