"""What one sample costs a built model: analytic LM FLOPs from the LM's shape and the bridge's injection.

Input-space bridges lengthen the sequence by their visual tokens; memory-space bridges keep it and add
slots to FFNs (METHODS.md section 0). Formulas and conventions: :mod:`vlbridge.flops`. For an
encoder-decoder LM the "sequence" is the encoder's input (prompt and image positions) and the answer is
the decoder's.
"""

from __future__ import annotations

from typing import Callable

import torch

from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.flops import LMShape, Seq2SeqShape, lm_flops, projector_flops, seq2seq_flops


def lm_forward_flops(language_model, injection, sequence: int, answer: int) -> int:
    """Analytic forward FLOPs of the LM on one sample, with ``injection``'s memory slots if it has any.

    Decoder-only: ``sequence`` positions (prompt, image positions and answer), LM-head logits at ``answer``
    positions. Encoder-decoder: the encoder over ``sequence`` positions (prompt and image positions), the
    decoder and its head over ``answer`` positions (the answer and its EOS)."""
    slots = getattr(injection, "num_slots", 0)
    if getattr(language_model, "is_encoder_decoder", False):
        memory = {}
        if slots:
            memory = {"encoder_memory_layers": len(injection.layers_in("encoder")),
                      "decoder_memory_layers": len(injection.layers_in("decoder"))}
        return seq2seq_flops(Seq2SeqShape.of(language_model), sequence, answer, slots, **memory)
    return lm_flops(LMShape.of(language_model), sequence, answer, slots, len(injection.layers) if slots else None)


def sample_flops(built, text_tokens: int, logit_positions: int = 1) -> dict[str, int]:
    """Forward FLOPs for one sample of ``text_tokens`` text tokens (``logit_positions`` LM-head rows:
    1 for a one-token answer, the answer length for training; an encoder-decoder LM reads the
    ``text_tokens`` in its encoder and runs its decoder over ``logit_positions`` tokens).

    Returns ``lm`` (decoder stack + head), ``text_only_lm`` (the same LM without any image),
    ``connector`` (for the MLP projector; 0 for connectors without a closed form here) and ``total``.
    """
    model = built.model
    injection = model.bridge.injection
    grid_tokens = model.vision_encoder.num_tokens
    n = model.bridge.num_visual_inputs(grid_tokens)  # vectors entering the connector
    sequence = text_tokens + injection.visual_sequence_length(model.bridge.num_visual_tokens(grid_tokens))
    slots = getattr(injection, "num_slots", 0)
    lm = lm_forward_flops(model.language_model, injection, sequence, logit_positions)
    connector = 0  # closed form for MLP projectors only (the Q-Former's own cost: benchmarks/qformer_vs_hf.py)
    layers = [m for m in model.bridge.connector.modules() if m.__class__.__name__ == "Linear"]
    if layers and isinstance(model.bridge.connector, MLPProjector):
        dims = [(m.in_features, m.out_features) for m in layers]
        connector = projector_flops(dims[0][0], dims[-1][1], n, dims[0][1] if len(dims) == 2 else None, len(dims))
    text_only = lm_forward_flops(model.language_model, None, text_tokens, logit_positions)
    return {"lm": lm, "text_only_lm": text_only, "connector": connector,
            "total": lm + connector, "sequence_length": sequence, "memory_slots": slots}


def describe_sample_flops(built, text_tokens: int) -> str:
    f = sample_flops(built, text_tokens)
    memory = f" with {f['memory_slots']} memory slots per FFN" if f["memory_slots"] else ""
    return (f"analytic forward FLOPs per sample ({text_tokens} text tokens, one answer token): "
            f"LM {f['lm'] / 1e9:.3f} G over {f['sequence_length']} positions{memory}, "
            f"connector {f['connector'] / 1e9:.4f} G; {f['lm'] / f['text_only_lm']:.2f}x the text-only LM "
            f"({f['text_only_lm'] / 1e9:.3f} G)")


def saved_activation_bytes(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    """Bytes autograd keeps for the backward pass while ``fn()`` runs, each storage counted once and
    ``model``'s parameters excluded (measured, for LMs without a closed-form estimate)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())
