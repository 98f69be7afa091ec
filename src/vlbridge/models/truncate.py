"""Keep only the first k decoder layers of a causal LM (PaLM2-VAdapter's tiny LM, METHODS.md 3.2).

The embeddings, the final norm and the (tied) head stay, so the truncated model is still a language model: its
first k layers feed the final norm directly. The config is updated (``num_hidden_layers``, and ``layer_types``
where the architecture lists one entry per layer), so checkpoint identities and FLOP counts see the truncated
model.
"""

from __future__ import annotations

from torch import nn

from vlbridge.errors import ConfigError
from vlbridge.models.language_model import layout_for


def keep_first_layers(model: nn.Module, layers: int, where: str = "model.language_model_layers") -> nn.Module:
    """Truncate ``model`` (a Hugging Face ``*ForCausalLM``) in place to its first ``layers`` decoder layers and
    return it. ``where`` names the option in errors."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"{where}: truncation keeps a decoder-only LM's first layers; {config.model_type} is an "
                          "encoder-decoder model")
    path = layout_for(config).layers.split(".")
    parent = getattr(model, model.base_model_prefix)
    for name in path[:-1]:
        parent = getattr(parent, name)
    stack = getattr(parent, path[-1])  # nn.ModuleList of decoder layers
    if not (isinstance(layers, int) and not isinstance(layers, bool) and 1 <= layers <= len(stack)):
        raise ConfigError(f"{where}={layers!r}: must be an integer from 1 to the model's {len(stack)} layers")
    setattr(parent, path[-1], nn.ModuleList(list(stack)[:layers]))
    config.num_hidden_layers = layers  # GPT-2's config maps it to n_layer
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]
    return model
