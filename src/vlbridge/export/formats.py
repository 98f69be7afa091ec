"""Which Hugging Face model class (if any) computes a bridge, and why not when none does.

Decided from the connector -> injection pair the run recorded (never from the preset's name): ``mlp -> input_space``
is LLaVA's (``LlavaForConditionalGeneration``, which may still refuse options it has no field for:
:func:`vlbridge.export.llava.llava_layout`); ``qformer -> input_space`` is BLIP-2's pair, but its Hugging Face class
fixes a vision model no vlbridge encoder is (:mod:`vlbridge.export.blip2`); the others have no class in transformers.
"""

from __future__ import annotations

from vlbridge.bridges.spec import BridgeSpec
from vlbridge.export.blip2 import why_not_blip2

LLAVA = "LlavaForConditionalGeneration"

# what each half is, for the message saying no class exists
CONNECTORS = {
    "mlp": "an MLP projector",
    "qformer": "a BLIP-2 Q-Former",
    "perceiver": "a Perceiver resampler",
    "tiny_lm": "PaLM2-VAdapter's tiny-LM adapter",
    "patch": "a linear patch embedding read from pixels (no encoder, no row-end tokens: not Fuyu's layout)",
    "eve_patch": "EVE's patch embedding layer read from pixels (encoder-free)",
    "zeros": "no visual vectors (MemVP's ablation)",
}
INJECTIONS = {
    "input_space": "input-space injection",
    "memory_space": "MemVP's memory-space injection (visual key/value slots in every FFN)",
    "cross_attention": "Flamingo's gated cross-attention blocks",
}


def hf_class(spec: BridgeSpec) -> str | None:
    """The transformers class that can hold this pair, or None."""
    return LLAVA if (spec.connector, spec.injection) == ("mlp", "input_space") else None


def why_no_hf_class(spec: BridgeSpec, encoder: str | None, layer: int | None) -> str:
    """Why a pair without :func:`hf_class` cannot be a Hugging Face model folder."""
    if (spec.connector, spec.injection) == ("qformer", "input_space"):
        return why_not_blip2(encoder, layer)
    what = f"{CONNECTORS.get(spec.connector, spec.connector)} and {INJECTIONS.get(spec.injection, spec.injection)}"
    return f"no Hugging Face model class exists for the {spec.pair} bridge: transformers has no model with {what}"
