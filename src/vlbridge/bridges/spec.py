"""What a bridge is made of, by name: a connector and an injection with their options.

A recipe names a preset (``model.bridge``: ``llava``, ``memvp``, ``blip2``), which expands to a
:class:`BridgeSpec`; ``model.connector`` / ``model.injection`` and their ``*_options`` then override it, and the
result is what :func:`vlbridge.bridges.registry.build_bridge` builds and what a checkpoint records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FEATURE_KINDS = ("grid", "pooled")


@dataclass(frozen=True)
class BridgeSpec:
    connector: str  # a name in vlbridge.bridges.registry.CONNECTORS
    connector_options: dict[str, Any] = field(default_factory=dict)  # that connector's options (its dataclass)
    injection: str = "input_space"  # a name in vlbridge.bridges.registry.INJECTIONS
    injection_options: dict[str, Any] = field(default_factory=dict)  # that injection's options (its dataclass)
    features: str = "grid"  # what a feature connector reads: grid (local patch features) | pooled (one global vector)
    pool: int = 1  # k x k average pooling of the grid before the connector (k=2: 256 -> 64 vectors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def pair(self) -> str:
        """``mlp -> memory_space``."""
        return f"{self.connector} -> {self.injection}"

    def describe(self) -> str:
        """The pair with the options the recipe or preset gave."""
        parts = [self.pair]
        for label, options in (("connector", self.connector_options), ("injection", self.injection_options)):
            if options:
                parts.append(f"{label} {options}")
        if self.features != "grid" or self.pool != 1:
            parts.append(f"features {self.features}, pool {self.pool}")
        return "; ".join(parts)
