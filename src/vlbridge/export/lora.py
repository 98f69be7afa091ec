"""An LM's weights with its LoRA merged in, under the LM's own parameter names, the LM left untouched.

vlbridge injects LoRA in place with peft (``vlbridge.build.add_lora``): a wrapped layer keeps its pretrained weight
as ``<layer>.base_layer.weight`` beside ``<layer>.lora_A.<adapter>.weight`` and ``lora_B``. A Hugging Face folder
has no LoRA, so the export folds it in: ``W + scale * B @ A``, computed by peft's own ``get_delta_weight``.
"""

from __future__ import annotations

from torch import Tensor, nn


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` as the model would hold it with every active LoRA adapter merged and removed: the
    plain pretrained names (``q_proj.weight``), no ``base_layer`` and no ``lora_*`` entries. Tensors not touched by
    LoRA are the model's own (not copies)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        prefix = f"{name}." if name else ""
        base_prefix = f"{prefix}base_layer."
        for key in [k for k in state if k.startswith(prefix)]:
            tensor = state.pop(key)
            if key.startswith(base_prefix):  # the pretrained tensors, back under the layer's own name
                state[prefix + key[len(base_prefix):]] = tensor
            # everything else under a tuner layer is the adapter's own (lora_A, lora_B, ...): dropped
        weight = f"{prefix}weight"
        if getattr(module, "merged", False):  # peft already folded the delta into the base weight
            continue
        for adapter in module.active_adapters:
            if adapter in getattr(module, "lora_A", {}) or adapter in getattr(module, "lora_embedding_A", {}):
                state[weight] = state[weight] + module.get_delta_weight(adapter).to(state[weight].dtype)
    return state
