"""The MemVP preset: an MLP projector feeding a memory-space injection (METHODS.md section 1).

Defaults follow the released LLaMA code (JieShibo/MemVP): ``Linear(d_v, 128) -> SiLU -> Linear(128, d)``
with xavier weights and zero biases, lam = 0.01, 320 slots, s = 0.1, dropout 0.1, every layer. On a
non-gated FFN (GPT-2, T5 ``relu``, BART) the defaults become the paper's literal concatenation instead:
phi = the FFN's own activation, s = 1, no dropout (:func:`vlbridge.bridges.injections.memory_space.build_memory_space`
reads the LM's layout). On an encoder-decoder LM (T5, BART) ``memory_in`` picks the stacks with memory: the
paper's BART/T5 code is not released, so which it used is unknown and ``both`` is our default. The remaining
fields are the paper's ablations.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlbridge.bridges.spec import BridgeSpec
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


def memvp_spec(options: MemVPOptions) -> BridgeSpec:
    if options.keys_only and options.values_only:
        raise ConfigError("bridge 'memvp': keys_only and values_only exclude each other")
    # "w/o visual prompts": f(z) = 0, so no projector at all (only p_k and p_v remain to learn)
    connector = ("mlp", {"hidden": options.hidden, "activation": "silu", "layers": options.projector_layers,
                         "init": "xavier"}) if options.visual_prompts else ("zeros", {})
    memory = {"num_slots": options.num_slots, "lam": options.lam, "scale": options.scale, "dropout": options.dropout,
              "activation": options.activation, "layers": options.layers, "memory_in": options.memory_in,
              "visual_prompts": options.visual_prompts, "position": options.position,
              "position_dim": options.position_dim, "visual_in_keys": not options.values_only,
              "visual_in_values": not options.keys_only}
    return BridgeSpec(*connector, "memory_space", memory, features=options.features)
