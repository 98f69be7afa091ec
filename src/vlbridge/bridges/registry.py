"""The bridge registries: plain dicts from name to (options dataclass, builder).

- :data:`CONNECTORS`: (options, ``builder(input_width, output_width, options) -> Connector``, what it consumes:
  ``features`` of a vision encoder or ``pixels``; input width: the encoder's feature width, or 3 for pixels;
  output width: what the injection reads);
- :data:`INJECTIONS`: ``builder(language_model, options) -> Injection``;
- :data:`PRESETS`: a paper's named default pair, ``expand(options) -> BridgeSpec``.

Adding a connector or an injection is one file with its options dataclass and builder, and one line here;
every registered pair is then buildable by recipe (``model.connector``, ``model.injection``) and covered by
the grid test (tests/bridges/test_grid.py).
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Callable, NamedTuple

from vlbridge.bridges.bridge import Bridge
from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.connectors.mlp import MLPOptions, build_mlp
from vlbridge.bridges.connectors.patch import PatchOptions, build_patch_connector
from vlbridge.bridges.connectors.perceiver import PerceiverOptions, build_perceiver
from vlbridge.bridges.connectors.tiny_lm import TinyLMOptions, build_tiny_lm
from vlbridge.bridges.connectors.zeros import ZerosOptions, build_zeros
from vlbridge.bridges.eve.pal import PALOptions, build_pal
from vlbridge.bridges.eve.pel import EVEPatchOptions, build_eve_patch
from vlbridge.bridges.injections.cross_attention import CrossAttentionOptions, build_cross_attention
from vlbridge.bridges.injections.input_space import InputSpaceOptions, build_input_space
from vlbridge.bridges.injections.memory_space import MemorySpaceOptions, build_memory_space
from vlbridge.bridges.llava import LlavaOptions, llava_spec
from vlbridge.bridges.memvp import MemVPOptions, memvp_spec
from vlbridge.bridges.qformer.bridge import Blip2Options, QFormerOptions, blip2_spec, build_qformer_bridge_connector
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.errors import ConfigError

class ConnectorEntry(NamedTuple):
    options: type  # the options dataclass
    build: Callable[..., Any]  # (input_width, output_width, options) -> Connector
    consumes: str  # features (a vision encoder's) | pixels (no encoder)


CONNECTORS: dict[str, ConnectorEntry] = {
    "mlp": ConnectorEntry(MLPOptions, build_mlp, "features"),  # LLaVA / MemVP projector: one vector per feature
    "qformer": ConnectorEntry(QFormerOptions, build_qformer_bridge_connector, "features"),  # BLIP-2: 32 queries
    "perceiver": ConnectorEntry(PerceiverOptions, build_perceiver, "features"),  # Flamingo resampler: 64 latents
    "tiny_lm": ConnectorEntry(TinyLMOptions, build_tiny_lm, "features"),  # PaLM2-VAdapter: resampler + tiny LM
    "zeros": ConnectorEntry(ZerosOptions, build_zeros, "features"),  # MemVP's "w/o visual prompts" ablation
    "patch": ConnectorEntry(PatchOptions, build_patch_connector, "pixels"),  # linear patch embedding (Fuyu)
    "eve_patch": ConnectorEntry(EVEPatchOptions, build_eve_patch, "pixels"),  # EVE's patch embedding layer
}

INJECTIONS: dict[str, tuple[type, Callable[..., Any]]] = {
    "input_space": (InputSpaceOptions, build_input_space),  # spliced into the token sequence
    "memory_space": (MemorySpaceOptions, build_memory_space),  # MemVP: extra key/value slots of every FFN
    "cross_attention": (CrossAttentionOptions, build_cross_attention),  # Flamingo: gated x-attn blocks
}

PRESETS: dict[str, tuple[type, Callable[..., BridgeSpec]]] = {
    "llava": (LlavaOptions, llava_spec),
    "memvp": (MemVPOptions, memvp_spec),
    "blip2": (Blip2Options, blip2_spec),
}

# what learns from a training-time teacher encoder (model.aligner): (options, builder(lm, teacher, options))
ALIGNERS: dict[str, tuple[type, Callable[..., Any]]] = {
    "pal": (PALOptions, build_pal),  # EVE's patch aligning layer: LM hidden states -> the teacher's patch features
}


def parse_options(options_type: type, options: dict[str, Any] | None, where: str):
    """Build a typed options dataclass from a dict, rejecting unknown keys with the valid ones listed."""
    options = dict(options or {})
    valid = {f.name for f in fields(options_type)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown {where} option(s) {unknown}; valid: {sorted(valid)}")
    return options_type(**options)


def _entry(registry: dict, name: str, what: str, key: str):
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r} ({key}); valid: {sorted(registry)}")
    return registry[name]


def _plain(value):
    """Options as JSON would give them back (tuples as lists), so a recorded spec compares equal."""
    return json.loads(json.dumps(value))


def resolve_spec(config) -> BridgeSpec:
    """A recipe's model section -> the bridge it names.

    ``model.bridge`` (a preset, or None) gives the defaults; ``model.connector`` / ``model.injection`` replace
    the preset's, and then start from their own defaults, since the preset's options were for its own;
    ``model.connector_options`` / ``model.injection_options`` are merged over what is left."""
    if config.bridge is not None:
        options_type, expand = _entry(PRESETS, config.bridge, "bridge preset", "model.bridge")
        base = expand(parse_options(options_type, config.bridge_options, f"bridge {config.bridge!r}"))
    else:
        if config.bridge_options:
            raise ConfigError("model.bridge_options are a preset's; with model.bridge: null use model.connector_options "
                              "and model.injection_options")
        if config.connector is None or config.injection is None:
            raise ConfigError("without a preset (model.bridge: null) name both model.connector and model.injection; "
                              f"connectors: {sorted(CONNECTORS)}, injections: {sorted(INJECTIONS)}")
        base = BridgeSpec(config.connector, {}, config.injection, {})
    connector = config.connector or base.connector
    injection = config.injection or base.injection
    connector_options = (base.connector_options if connector == base.connector else {}) | config.connector_options
    injection_options = (base.injection_options if injection == base.injection else {}) | config.injection_options
    spec = BridgeSpec(connector, _plain(connector_options), injection, _plain(injection_options), base.features,
                      base.pool)
    _entry(CONNECTORS, spec.connector, "connector", "model.connector")
    _entry(INJECTIONS, spec.injection, "injection", "model.injection")
    return spec


def build_bridge(spec: BridgeSpec, language_model, vision_width: int | None = None,
                 vision_tokens: int | None = None) -> Bridge:
    """Build ``spec`` for ``language_model`` behind a vision encoder giving ``vision_tokens`` grid vectors of width
    ``vision_width`` (None: no encoder, the connector reads pixels), checking the handshake: the front end gives
    what the connector consumes, the connector's vectors are as wide as the injection reads, and there are no
    more of them than the injection has room for."""
    entry = _entry(CONNECTORS, spec.connector, "connector", "model.connector")
    injection_type, injection_builder = _entry(INJECTIONS, spec.injection, "injection", "model.injection")
    pair = f"connector {spec.connector!r} -> injection {spec.injection!r}"
    if entry.consumes == "pixels" and vision_width is not None:
        raise ConfigError(f"{pair}: the connector reads pixels, so there is no vision encoder to run; set "
                          "model.vision_encoder: none")
    if entry.consumes == "features" and vision_width is None:
        raise ConfigError(f"{pair}: the connector reads vision features, but model.vision_encoder is none; name an "
                          "encoder, or choose a connector that reads pixels")
    injection = injection_builder(language_model, parse_options(injection_type, spec.injection_options,
                                                                f"injection {spec.injection!r}"))
    width = injection.input_width(language_model)
    connector = entry.build(vision_width if vision_width is not None else 3, width,
                            parse_options(entry.options, spec.connector_options, f"connector {spec.connector!r}"))
    if connector.consumes != entry.consumes:
        raise ConfigError(f"connector {spec.connector!r} is registered as reading {entry.consumes}, its module reads "
                          f"{connector.consumes}")
    if connector.output_width != width:
        raise ConfigError(f"{pair}: the connector gives {connector.output_width}-wide vectors, the injection reads "
                          f"{width}-wide ones")
    bridge = Bridge(connector, injection, spec.features, spec.pool)
    inputs = vision_tokens if connector.consumes == "features" else connector.max_inputs
    room = injection.max_visual_tokens
    if inputs is not None and room is not None and bridge.num_visual_tokens(inputs) > room:
        raise ConfigError(f"{pair}: the connector gives {bridge.num_visual_tokens(inputs)} vectors per image, the "
                          f"injection has room for {room} (e.g. raise injection_options.num_slots)")
    return bridge


def build_preset(name: str, vision_width: int | None, language_model, options: dict[str, Any] | None = None,
                 vision_tokens: int | None = None) -> Bridge:
    """A preset's bridge with ``options`` (its dataclass's fields), for code that builds bridges directly."""
    options_type, expand = _entry(PRESETS, name, "bridge preset", "model.bridge")
    spec = expand(parse_options(options_type, options, f"bridge {name!r}"))
    return build_bridge(BridgeSpec(spec.connector, _plain(spec.connector_options), spec.injection,
                                   _plain(spec.injection_options), spec.features, spec.pool),
                        language_model, vision_width, vision_tokens)


def build_aligner(config, language_model, teacher, bridge: Bridge | None = None):
    """The recipe's aligner (``model.aligner``) learning from ``teacher`` (a frozen encoder; None when the model is
    built for inference, and then no aligner either) at the grid cells of ``bridge``'s connector. A teacher and an
    aligner come together: one without the other would run for nothing or have nothing to learn from."""
    if (config.aligner is None) != (config.teacher_encoder is None):
        raise ConfigError("model.teacher_encoder and model.aligner go together (the aligner learns from the teacher); "
                          f"got teacher_encoder={config.teacher_encoder!r}, aligner={config.aligner!r}; aligners: "
                          f"{sorted(ALIGNERS)}")
    if config.aligner is None:
        if config.aligner_options:
            raise ConfigError("model.aligner_options are set but model.aligner is null")
        return None
    options_type, build = _entry(ALIGNERS, config.aligner, "aligner", "model.aligner")
    options = parse_options(options_type, config.aligner_options, f"aligner {config.aligner!r}")
    if bridge is not None and type(bridge.connector).grid_cells is Connector.grid_cells:
        raise ConfigError(f"model.aligner={config.aligner!r} reads the image's grid cells in the LM, and connector "
                          f"{resolve_spec(config).connector!r} gives no grid; use one that does: eve_patch, patch")
    if bridge is not None and bridge.injection.visual_sequence_length(1) == 0:  # memory space, cross-attention
        raise ConfigError(f"model.aligner={config.aligner!r} reads the LM's hidden states at the image's vectors in its "
                          f"sequence, and injection {resolve_spec(config).injection!r} puts none there: use "
                          "model.injection=input_space")
    return None if teacher is None else build(language_model, teacher, options)
