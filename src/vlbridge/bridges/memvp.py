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

from dataclasses import dataclass, fields

from vlbridge.bridges.injections.memory_space import MemoryOptions
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class MemVPOptions(MemoryOptions):
    """Memory-space visual prompting; each field is one knob of the paper's method or its ablations (the memory's
    own: :class:`MemoryOptions`)."""

    hidden: int = 128  # projector hidden width (code)
    projector_layers: int = 2  # 2 = Linear-SiLU-Linear (LLaMA code); 1 = one Linear (paper, BART/T5)
    features: str = "grid"  # grid (local patches) | pooled (ablation "local -> global")
    keys_only: bool = False  # lam f(z) enters the keys only (ablation)
    values_only: bool = False  # lam f(z) enters the values only (ablation)


def memvp_spec(options: MemVPOptions) -> BridgeSpec:
    if options.keys_only and options.values_only:
        raise ConfigError("bridge 'memvp': keys_only and values_only exclude each other")
    # "w/o visual prompts": f(z) = 0, so no projector at all (only p_k and p_v remain to learn)
    connector = ("mlp", {"hidden": options.hidden, "activation": "silu", "layers": options.projector_layers,
                         "init": "xavier"}) if options.visual_prompts else ("zeros", {})
    memory = {f.name: getattr(options, f.name) for f in fields(MemoryOptions)}
    memory.update(visual_in_keys=not options.values_only, visual_in_values=not options.keys_only)
    return BridgeSpec(*connector, "memory_space", memory, features=options.features)
