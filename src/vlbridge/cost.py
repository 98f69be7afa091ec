"""What one sample costs a built model, read off the interfaces: the connector's and the injection's own
cost methods (:class:`vlbridge.bridges.connectors.base.Connector`, :class:`vlbridge.bridges.injections.base.Injection`)
and the LM's shape, with no switch on concrete types.

Input-space bridges lengthen the sequence by their visual tokens; memory-space bridges keep it and add
slots to FFNs; cross-attention adds its own blocks (METHODS.md section 0). Formulas and conventions:
:mod:`vlbridge.flops`. For an encoder-decoder LM the "sequence" is the encoder's input (prompt and image
positions) and the answer is the decoder's.
"""

from __future__ import annotations

from typing import Callable

import torch

from vlbridge.flops import LMShape, Seq2SeqShape, lm_flops, seq2seq_flops


def lm_forward_flops(language_model, sequence: int, logit_positions: int, memory_slots: int = 0,
                     memory_layers: dict[str, int] | None = None) -> int:
    """Analytic forward FLOPs of the LM on one sample of ``sequence`` positions.

    Decoder-only: LM-head logits at ``logit_positions``. Encoder-decoder: the encoder over ``sequence``
    positions (prompt and image positions), the decoder and its head over ``logit_positions`` (the answer and
    its EOS). ``memory_slots`` extra FFN slots sit in ``memory_layers[stack]`` layers of each stack (default:
    every layer)."""
    layers = memory_layers or {}
    if getattr(language_model, "is_encoder_decoder", False):
        return seq2seq_flops(Seq2SeqShape.of(language_model), sequence, logit_positions, memory_slots,
                             layers.get("encoder"), layers.get("decoder"))
    return lm_flops(LMShape.of(language_model), sequence, logit_positions, memory_slots, layers.get("decoder"))


def sample_flops(model, text_tokens: int, logit_positions: int = 1) -> dict[str, int]:
    """Forward FLOPs of ``model`` (a :class:`vlbridge.vlm.VisionLanguageModel`) for one sample of ``text_tokens``
    text tokens and one image (``logit_positions`` LM-head rows: 1 for a one-token answer, the answer length
    for training; an encoder-decoder LM reads the ``text_tokens`` in its encoder and runs its decoder over
    ``logit_positions`` tokens).

    Returns ``lm`` (with the injection), ``text_only_lm`` (the same LM without any image), ``connector``,
    ``total`` (the two), ``sequence_length`` (positions the LM sees) and ``visual_tokens`` (the connector's).
    """
    bridge, lm = model.bridge, model.language_model
    inputs = model.num_connector_inputs  # encoder grid cells (or patches) per image
    visual = bridge.num_visual_tokens(inputs)
    with_image = bridge.injection.lm_flops(lm, text_tokens, visual, logit_positions)
    prompt = {"prompt_tokens": text_tokens} if bridge.connector.reads_prompt else {}  # it reads the text too
    connector = bridge.connector.flops(bridge.num_visual_inputs(inputs), **prompt)  # after pooling, or one pooled vector
    return {"lm": with_image, "text_only_lm": lm_forward_flops(lm, text_tokens, logit_positions),
            "connector": connector, "total": with_image + connector,
            "sequence_length": text_tokens + bridge.injection.visual_sequence_length(visual), "visual_tokens": visual}


def describe_sample_flops(model, text_tokens: int) -> str:
    f = sample_flops(model, text_tokens)
    added = model.bridge.injection.describe_cost()
    return (f"analytic forward FLOPs per sample ({text_tokens} text tokens, one image, one answer token): "
            f"LM {f['lm'] / 1e9:.3f} G over {f['sequence_length']} positions with {f['visual_tokens']} visual "
            f"vectors{f' ({added})' if added else ''}, connector {f['connector'] / 1e9:.4f} G; {f['lm'] / f['text_only_lm']:.2f}x the text-only LM "
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
