"""Why a vlbridge BLIP-2 run is not a ``Blip2ForConditionalGeneration``, and its Q-Former under BLIP-2's Hugging Face
names for those who want to carry it over.

``Blip2ForConditionalGeneration`` fixes its vision model to BLIP-2's own ViT (``Blip2VisionModel``, built from
``vision_config`` whatever it says), and its Q-Former cross-attends to every token that ViT outputs, CLS included
(``image_attention_mask`` is all ones). vlbridge's Q-Former reads a CLIP / SigLIP / DINOv2 / CNN encoder's grid with
the prefix tokens dropped (``vlbridge.encoders.vision_encoder``), so no ``Blip2ForConditionalGeneration`` computes what
the run computes: the exporter says so rather than write a model that answers differently.

The Q-Former itself is Hugging Face's layout (``vlbridge.bridges.qformer.convert``): our names are BLIP-2's without
the ``qformer.`` prefix, and LAVIS's ``ln_vision`` is BLIP-2's ``vision_model.post_layernorm`` (as in transformers'
BLIP-2 conversion script).
"""

from __future__ import annotations

from torch import Tensor

CONNECTOR = "bridge.connector."
# our connector's parts -> BLIP-2's Hugging Face prefixes (the Q-Former's own keys get "qformer." unless they are
# query_tokens or the text embeddings, which BLIP-2 keeps at the top level)
RENAMES = {
    "ln_vision.": "vision_model.post_layernorm.",
    "language_projection.": "language_projection.",
    "stage1.vision_projection.": "vision_projection.",
    "stage1.text_projection.": "text_projection.",
    "stage1.itm_head.": "itm_head.",
}
FILE = "blip2_qformer.safetensors"


def why_not_blip2(encoder: str | None, layer: int | None) -> str:
    """The reason a Q-Former -> input-space run has no ``Blip2ForConditionalGeneration``, naming its encoder."""
    return (f"no Blip2ForConditionalGeneration computes this model: that class's vision model is always BLIP-2's own "
            f"ViT (Blip2VisionModel) and its Q-Former reads every token that ViT gives, CLS included, while this run's "
            f"Q-Former reads the grid of model.vision_encoder={encoder!r} (layer {layer}) with its prefix tokens "
            f"dropped. The Q-Former, query tokens, language projection and ln_vision are also written under BLIP-2's "
            f"Hugging Face names in {FILE} (ln_vision as vision_model.post_layernorm, whose "
            f"vision_config.layer_norm_eps must then be 1e-5, ln_vision's), to load into a "
            f"Blip2ForConditionalGeneration with load_state_dict(strict=False)")


def blip2_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's Q-Former connector tensors (``bridge.connector.*``) under BLIP-2's Hugging Face names; other
    tensors (LoRA, adapters) are left out."""
    out = {}
    for name, tensor in state.items():
        if not name.startswith(CONNECTOR):
            continue
        key = name[len(CONNECTOR):]
        for ours, theirs in RENAMES.items():
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = tensor
                break
        else:
            if key.startswith("qformer."):
                inner = key[len("qformer."):]
                out[inner if inner == "query_tokens" or inner.startswith("embeddings.") else key] = tensor
    return out
