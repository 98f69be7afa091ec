"""What one sample costs a built model: analytic LM FLOPs from the LM's shape and the bridge's injection.

Input-space bridges lengthen the sequence by their visual tokens; memory-space bridges keep it and add
slots to FFNs (METHODS.md section 0). Formulas and conventions: :mod:`vlbridge.flops`.
"""

from __future__ import annotations

from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.flops import LMShape, lm_flops, projector_flops


def sample_flops(built, text_tokens: int, logit_positions: int = 1) -> dict[str, int]:
    """Forward FLOPs for one sample of ``text_tokens`` text tokens (``logit_positions`` LM-head rows:
    1 for a one-token answer, the answer length for training).

    Returns ``lm`` (decoder stack + head), ``text_only_lm`` (the same LM without any image),
    ``connector`` (for the MLP projector; 0 for connectors without a closed form here) and ``total``.
    """
    model = built.model
    shape = LMShape.of(model.language_model)
    injection = model.bridge.injection
    grid_tokens = model.vision_encoder.num_tokens
    n = model.bridge.num_visual_inputs(grid_tokens)  # vectors entering the connector
    sequence = text_tokens + injection.visual_sequence_length(model.bridge.num_visual_tokens(grid_tokens))
    slots = getattr(injection, "num_slots", 0)
    memory_layers = len(injection.layers) if slots else None
    lm = lm_flops(shape, sequence, logit_positions, slots, memory_layers)
    connector = 0  # closed form for MLP projectors only (the Q-Former's own cost: benchmarks/qformer_vs_hf.py)
    layers = [m for m in model.bridge.connector.modules() if m.__class__.__name__ == "Linear"]
    if layers and isinstance(model.bridge.connector, MLPProjector):
        dims = [(m.in_features, m.out_features) for m in layers]
        connector = projector_flops(dims[0][0], dims[-1][1], n, dims[0][1] if len(dims) == 2 else None, len(dims))
    return {"lm": lm, "text_only_lm": lm_flops(shape, text_tokens, logit_positions), "connector": connector,
            "total": lm + connector, "sequence_length": sequence, "memory_slots": slots}


def describe_sample_flops(built, text_tokens: int) -> str:
    f = sample_flops(built, text_tokens)
    memory = f" with {f['memory_slots']} memory slots per FFN" if f["memory_slots"] else ""
    return (f"analytic forward FLOPs per sample ({text_tokens} text tokens, one answer token): "
            f"LM {f['lm'] / 1e9:.3f} G over {f['sequence_length']} positions{memory}, "
            f"connector {f['connector'] / 1e9:.4f} G; {f['lm'] / f['text_only_lm']:.2f}x the text-only LM "
            f"({f['text_only_lm'] / 1e9:.3f} G)")
