"""Which bridges the report compares and how each is trained: recipe settings per preset and per connector ->
injection pair.

A report entry is a name: a preset of :data:`vlbridge.bridges.registry.PRESETS` (``llava``) or a pair
``CONNECTOR->INJECTION`` of the registries (``perceiver->cross_attention``). Its settings are recipe overrides
giving the bridge, its options and its learning rate, the ones its paper or shipped recipe uses; everything else
(data, steps, batch, seed) is the same for every entry, so the bridges are compared at equal steps on the same
batches.
"""

from __future__ import annotations

from vlbridge.errors import ConfigError

# The registries (vlbridge.bridges.registry) are imported where they are read, not here: the CLI reads this
# module's lists for its help text, and building the parser must not load every bridge.

# The demo's settings (vlbridge demo), so a report row of llava or memvp is the demo's bridge: a one-line system
# prompt keeps prompts short (cost grows with every token on a CPU); 2x2 pooling gives LLaVA 64 visual tokens.
COMMON_SETTINGS = ["model.system_prompt=You are a helpful assistant.", "train.warmup_steps=5"]
PRESET_SETTINGS: dict[str, list[str]] = {
    "llava": ["model.bridge_options={pool: 2}", "train.lr=1e-3"],
    "memvp": ["train.lr=3e-3"],  # 256 grid features in 320 memory slots
    "blip2": ["train.lr=1e-4"],  # BLIP-2's stage-2 peak lr (recipes/blip2/stage2.yaml); no stage 1 here
}


def _pair(connector: str, injection: str, *settings: str) -> list[str]:
    return ["model.bridge=null", f"model.connector={connector}", f"model.injection={injection}", *settings]


# Notable pairs no preset names, each with the options and lr of the recipe its connector comes from. A pair built
# on a preset's connector starts from the preset and replaces its injection, so it keeps the preset's pooling.
PERCEIVER = ["model.connector_options={depth: 6, num_latents: 64, heads: 8, head_dim: 64}",
             "train.lr=2e-4"]  # PaLM2-VAdapter's baseline resampler (recipes/vadapter/perceiver_baseline.yaml)
PAIR_SETTINGS: dict[str, list[str]] = {
    "perceiver->input_space": _pair("perceiver", "input_space", *PERCEIVER),
    # Flamingo's pair: the resampler into gated cross-attention blocks (gates start at 0)
    "perceiver->cross_attention": _pair("perceiver", "cross_attention", *PERCEIVER),
    # LLaVA's projector on 64 pooled vectors as Flamingo's keys and values
    "mlp->cross_attention": ["model.bridge=llava", *PRESET_SETTINGS["llava"], "model.injection=cross_attention"],
    # BLIP-2's 32 Q-Former queries as MemVP memory slots
    "qformer->memory_space": ["model.bridge=blip2", *PRESET_SETTINGS["blip2"], "model.injection=memory_space"],
    # PaLM2-VAdapter's adapter (recipes/vadapter/stage2.yaml) without its stage 1: SmolLM2's first 4 layers
    "tiny_lm->input_space": _pair("tiny_lm", "input_space", "model.connector_options={layers: 4, num_latents: 64, "
                                  "resampler_depth: 1, heads: 8, head_dim: 64, attention: causal}", "train.lr=2e-4"),
    # EVE's patch embedding layer from pixels (recipes/eve/stage1.yaml's lr), no encoder and, like every other
    # row, only the bridge trains: no teacher encoder, no PAL
    "eve_patch->input_space": _pair("eve_patch", "input_space", "train.lr=4e-4"),
}

DEFAULT_PAIRS = ["perceiver->input_space", "perceiver->cross_attention", "mlp->cross_attention",
                 "qformer->memory_space", "tiny_lm->input_space", "eve_patch->input_space"]
"""The pairs a report runs by default besides every preset. ``mlp->memory_space`` is left out: it is the
``memvp`` preset's pair (with MemVP's own projector)."""


def all_presets() -> tuple[str, ...]:
    """Every registered preset: the report's default."""
    from vlbridge.bridges.registry import PRESETS

    return tuple(PRESETS)


def split_pair(name: str) -> tuple[str, str]:
    """``"perceiver->cross_attention"`` -> ``("perceiver", "cross_attention")``, both checked against the
    registries (an unknown name is refused with the valid ones listed)."""
    from vlbridge.bridges.registry import CONNECTORS, INJECTIONS, PRESETS

    connector, arrow, injection = name.partition("->")
    if not arrow:
        raise ConfigError(f"bridge {name!r} is neither a preset {sorted(PRESETS)} nor a pair CONNECTOR->INJECTION")
    if connector not in CONNECTORS:
        raise ConfigError(f"unknown connector {connector!r} in {name!r}; valid: {sorted(CONNECTORS)}")
    if injection not in INJECTIONS:
        raise ConfigError(f"unknown injection {injection!r} in {name!r}; valid: {sorted(INJECTIONS)}")
    return connector, injection


def check_names(presets: list[str], pairs: list[str]) -> list[str]:
    """The report's entries in order (presets, then pairs), each checked, none twice."""
    from vlbridge.bridges.registry import PRESETS

    for name in presets:
        if name not in PRESETS:
            raise ConfigError(f"unknown bridge preset {name!r}; valid: {sorted(PRESETS)}")
    for name in pairs:
        split_pair(name)
    names = [*presets, *pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"bridge(s) named twice: {repeated}")
    if not names:
        raise ConfigError("no bridge to report: name at least one preset or pair")
    return names


def connector_of(name: str) -> str:
    """The connector an entry trains (a preset's is its paper's default)."""
    from vlbridge.bridges.registry import PRESETS

    if name in PRESETS:
        options_type, expand = PRESETS[name]
        return expand(options_type()).connector
    return split_pair(name)[0]


def reads_pixels(name: str) -> bool:
    """Whether the entry's connector reads pixels itself (then the model has no vision encoder)."""
    from vlbridge.bridges.registry import CONNECTORS

    return CONNECTORS[connector_of(name)].consumes == "pixels"


def bridge_settings(name: str) -> list[str]:
    """Recipe overrides naming the entry's bridge, its options and learning rate (a pair without settings of its
    own gets its registry defaults and the recipe's default lr)."""
    from vlbridge.bridges.registry import PRESETS

    if name in PRESETS:
        return [f"model.bridge={name}", *PRESET_SETTINGS.get(name, [])]
    return PAIR_SETTINGS.get(name) or _pair(*split_pair(name))


def file_name(name: str) -> str:
    """A file-system name for an entry: ``perceiver->input_space`` -> ``perceiver-to-input_space``."""
    return name.replace("->", "-to-")
