"""The bridge registry: a plain dict from preset name to a builder.

A builder takes the vision feature width, the :class:`LanguageModel` and the preset's options (a dict
from the recipe, checked against the preset's typed config) and returns a :class:`Bridge`. Adding a
bridge is one file with its config and builder, and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from vlbridge.bridges.bridge import Bridge
from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.memvp import MemVPOptions, build_memvp
from vlbridge.bridges.qformer.bridge import Blip2Options, build_blip2
from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class LlavaOptions:
    """LLaVA-1.5 projector between the vision grid and the LM's input embeddings."""

    hidden: int | None = None  # projector hidden width; None = the LM width (LLaVA-1.5)
    activation: str = "gelu"  # gelu (LLaVA) | silu | relu
    layers: int = 2  # 2 = Linear-act-Linear (LLaVA-1.5); 1 = one Linear (LLaVA-1)
    features: str = "grid"  # grid (local patch features) | pooled (one global vector)
    pool: int = 1  # k x k average pooling of the grid before the projector (k=2: 256 -> 64 tokens)


def build_llava(vision_dim: int, language_model, options: LlavaOptions) -> Bridge:
    connector = MLPProjector(vision_dim, language_model.hidden_size, options.hidden, options.activation, options.layers)
    return Bridge(connector, InputSpaceInjection(), options.features, options.pool)


# name -> (options dataclass, builder)
BRIDGES: dict[str, tuple[type, Callable[..., Bridge]]] = {
    "llava": (LlavaOptions, build_llava),
    "blip2": (Blip2Options, build_blip2),
    "memvp": (MemVPOptions, build_memvp),
}


def parse_options(options_type: type, options: dict[str, Any] | None, where: str):
    """Build a typed options dataclass from a dict, rejecting unknown keys with the valid ones listed."""
    options = dict(options or {})
    valid = {f.name for f in fields(options_type)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown {where} option(s) {unknown}; valid: {sorted(valid)}")
    return options_type(**options)


def build_bridge(name: str, vision_dim: int, language_model, options: dict[str, Any] | None = None) -> Bridge:
    if name not in BRIDGES:
        raise ConfigError(f"unknown bridge {name!r}; valid: {sorted(BRIDGES)}")
    options_type, builder = BRIDGES[name]
    return builder(vision_dim, language_model, parse_options(options_type, options, f"bridge {name!r}"))
