"""Forward FLOPs of a decoder-only or encoder-decoder LM with and without visual tokens: pure functions of
the LM's shape.

Conventions (stated, as in nanoGPT's ``estimate_mfu`` and nanochat's ``estimate_flops``):
- one multiply-add = 2 FLOPs; only matrix products count (norms, activations, softmax, rotary and
  embedding lookups are ignored, as :class:`torch.utils.flop_counter.FlopCounterMode` does);
- per sample (batch 1), no padding; biases ignored;
- attention scores and weighted values cost ``2·T·S·H·h`` each for T query and S key positions, H query
  heads of width h. A causal mask is *not* halved, as torch's flop counter counts SDPA kernels;
- grouped-query attention: the key and value projections are ``n_kv · h`` wide;
- FFN: 3 matrices of width D when gated (SwiGLU), 2 otherwise;
- the LM head counts only at the positions that need logits (the loss's supervised tokens, or the
  last position when generating), as :class:`vlbridge.models.language_model.LanguageModel` computes it;
- memory-space prompting (MemVP) adds ``x K^T`` and ``(.) V`` over M slots in each memory layer:
  ``4·T·d·M``.

Encoder-decoder LMs (T5, BART; :func:`seq2seq_flops`): the encoder runs over the prompt (with any visual
tokens), the decoder over the answer, each decoder layer adding cross-attention (q and o over the answer,
k and v over the encoder's output, scores and weighted values over both); memory slots may sit in either
stack; the head counts at every decoder position (per sample there is no padding: the answer's tokens).

METHODS.md section 0's simplified per-layer formulas (multi-head attention, FFN 4d, no head) are
:func:`paper_layer_flops`; with a matching :class:`LMShape` they equal :func:`layer_flops` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class LMShape:
    """What a decoder-only LM's FLOPs depend on."""

    layers: int  # decoder layers
    width: int  # d, the hidden size
    ffn_width: int  # D, the FFN's hidden width
    heads: int  # query heads H
    kv_heads: int  # key/value heads (grouped-query attention); = heads for multi-head attention
    head_dim: int  # h; H * h is usually d
    vocab: int  # LM head outputs
    gated: bool  # SwiGLU FFN (3 matrices) vs. two-matrix FFN

    @classmethod
    def from_config(cls, config, gated: bool) -> "LMShape":
        """From a Hugging Face config (LLaMA family, Qwen2, GPT-2's aliased names...)."""
        width = config.hidden_size
        heads = config.num_attention_heads
        ffn_width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * width
        return cls(
            layers=config.num_hidden_layers,
            width=width,
            ffn_width=ffn_width,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or width // heads,
            vocab=config.vocab_size,
            gated=gated,
        )

    @classmethod
    def of(cls, language_model) -> "LMShape":
        """From a :class:`vlbridge.models.language_model.LanguageModel`."""
        if getattr(language_model, "is_encoder_decoder", False):
            raise ValueError("an encoder-decoder LM has two stacks: use Seq2SeqShape.of and seq2seq_flops")
        return cls.from_config(language_model.config, language_model.layout.gated)


@dataclass(frozen=True)
class Seq2SeqShape:
    """What an encoder-decoder LM's FLOPs depend on: one :class:`LMShape` per stack (the decoder's
    ``vocab`` is the head's; the encoder's is unused)."""

    encoder: LMShape
    decoder: LMShape

    @classmethod
    def from_config(cls, config, gated: bool) -> "Seq2SeqShape":
        """From a Hugging Face T5 (``num_layers``, ``d_ff``, ``d_kv``...) or BART (``encoder_layers``,
        ``encoder_ffn_dim``, ``encoder_attention_heads``...) config."""
        width = config.d_model

        def stack(prefix: str, layers: int) -> LMShape:
            heads = getattr(config, f"{prefix}_attention_heads", None) or config.num_heads
            return LMShape(layers=layers, width=width,
                           ffn_width=getattr(config, f"{prefix}_ffn_dim", None) or config.d_ff,
                           heads=heads, kv_heads=heads, head_dim=getattr(config, "d_kv", None) or width // heads,
                           vocab=config.vocab_size, gated=gated)

        encoder_layers = getattr(config, "encoder_layers", None) or config.num_layers
        decoder_layers = getattr(config, "decoder_layers", None) or getattr(config, "num_decoder_layers", None)
        return cls(stack("encoder", encoder_layers), stack("decoder", decoder_layers or encoder_layers))

    @classmethod
    def of(cls, language_model) -> "Seq2SeqShape":
        """From a :class:`vlbridge.models.seq2seq_language_model.Seq2SeqLanguageModel`."""
        return cls.from_config(language_model.config, language_model.layout.gated)


def layer_flops(shape: LMShape, positions: int, context: int | None = None, memory_slots: int = 0) -> int:
    """One decoder layer over ``positions`` new tokens attending to ``context`` keys (default: the same
    tokens; with a KV cache, the cached prefix plus the new tokens), with ``memory_slots`` FFN slots."""
    T, S = positions, positions if context is None else context
    d, h = shape.width, shape.head_dim
    q_width, kv_width = shape.heads * h, shape.kv_heads * h
    projections = 2 * T * d * (2 * q_width + 2 * kv_width)  # q, o (H·h wide) and k, v (n_kv·h wide)
    attention = 2 * (2 * T * S * q_width)  # scores and weighted values, every key counted
    ffn = (3 if shape.gated else 2) * 2 * T * d * shape.ffn_width
    memory = 4 * T * d * memory_slots  # x K^T over M slots, then (.) V
    return projections + attention + ffn + memory


def head_flops(shape: LMShape, positions: int) -> int:
    """The LM head at ``positions`` positions."""
    return 2 * positions * shape.width * shape.vocab


def lm_flops(shape: LMShape, seq_len: int, logit_positions: int, memory_slots: int = 0,
             memory_layers: int | None = None) -> int:
    """A full forward pass of ``seq_len`` tokens; ``memory_layers`` of the layers (default all, when
    ``memory_slots`` > 0) carry ``memory_slots`` extra FFN slots."""
    with_memory = shape.layers if memory_layers is None else memory_layers
    plain = layer_flops(shape, seq_len)
    per_memory_layer = layer_flops(shape, seq_len, memory_slots=memory_slots)
    return (shape.layers - with_memory) * plain + with_memory * per_memory_layer + head_flops(shape, logit_positions)


def cross_attention_flops(shape: LMShape, positions: int, encoder_positions: int) -> int:
    """One decoder layer's cross-attention: ``positions`` decoder tokens reading ``encoder_positions``."""
    T, S = positions, encoder_positions
    q_width, kv_width = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projections = 2 * T * shape.width * 2 * q_width + 2 * S * shape.width * 2 * kv_width  # q, o; k, v
    return projections + 2 * (2 * T * S * q_width)


def seq2seq_flops(shape: Seq2SeqShape, encoder_len: int, decoder_len: int, memory_slots: int = 0,
                  encoder_memory_layers: int | None = None, decoder_memory_layers: int | None = None) -> int:
    """A full forward pass: the encoder over ``encoder_len`` positions, the decoder (with cross-attention)
    over ``decoder_len`` positions and the head at each of them. With ``memory_slots`` > 0, that many FFN
    slots in ``encoder_memory_layers`` / ``decoder_memory_layers`` layers of each stack (default all)."""
    enc, dec = shape.encoder, shape.decoder
    enc_memory = (enc.layers if encoder_memory_layers is None else encoder_memory_layers) if memory_slots else 0
    dec_memory = (dec.layers if decoder_memory_layers is None else decoder_memory_layers) if memory_slots else 0
    encoder = (enc.layers - enc_memory) * layer_flops(enc, encoder_len) \
        + enc_memory * layer_flops(enc, encoder_len, memory_slots=memory_slots)
    decoder = (dec.layers - dec_memory) * layer_flops(dec, decoder_len) \
        + dec_memory * layer_flops(dec, decoder_len, memory_slots=memory_slots) \
        + dec.layers * cross_attention_flops(dec, decoder_len, encoder_len)
    return encoder + decoder + head_flops(dec, decoder_len)


def text_only_flops(shape: LMShape, text_len: int, logit_positions: int) -> int:
    """The LM alone on ``text_len`` tokens."""
    return lm_flops(shape, text_len, logit_positions)


def input_space_flops(shape: LMShape, text_len: int, num_visual: int, logit_positions: int) -> int:
    """LLaVA-style: ``num_visual`` visual tokens join the ``text_len`` text tokens in every layer."""
    return lm_flops(shape, text_len + num_visual, logit_positions)


def memory_space_flops(shape: LMShape, text_len: int, memory_slots: int, logit_positions: int,
                       memory_layers: int | None = None) -> int:
    """MemVP: the sequence stays ``text_len`` long; each memory layer's FFN reads ``memory_slots`` slots."""
    return lm_flops(shape, text_len, logit_positions, memory_slots, memory_layers)


def projector_flops(d_in: int, d_out: int, num_vectors: int, hidden: int | None = None, layers: int = 2) -> int:
    """An MLP projector (:class:`vlbridge.bridges.connectors.mlp.MLPProjector`) on ``num_vectors`` vectors."""
    if layers == 1:
        return 2 * num_vectors * d_in * d_out
    hidden = hidden or d_out
    return 2 * num_vectors * (d_in * hidden + hidden * d_out)


def paper_layer_flops(width: int, text_len: int, num_visual: int = 0) -> dict[str, int]:
    """METHODS.md section 0 (MemVP paper): per layer, MHA and a 4d FFN, biases and norms ignored.

    Returns the text-only cost and what input-space and memory-space prompting add."""
    d, L, n = width, text_len, num_visual
    return {
        "text": 4 * L * d * (6 * d + L),
        "input_space_added": 4 * n * d * (6 * d + n + 2 * L),
        "memory_space_added": 4 * n * d * L,
    }


# --- measuring ------------------------------------------------------------------------------------
def _register_cpu_attention() -> None:
    """torch's flop counter knows the CUDA SDPA kernels but not the CPU flash kernel that
    ``F.scaled_dot_product_attention`` uses here, and would count attention as 0. Register the CPU
    kernels with torch's own SDPA formulas (full, un-halved causal attention)."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if forward is not None and forward not in fc.flop_registry:
        fc.register_flop_formula(forward)(
            lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v))
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if backward is not None and backward not in fc.flop_registry:
        fc.register_flop_formula(backward)(
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(grad, q, k, v))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch's :class:`~torch.utils.flop_counter.FlopCounterMode` measures while ``fn()`` runs
    (with the CPU attention kernels counted, see :func:`_register_cpu_attention`)."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def gated_cross_attention_flops(width: int, text_tokens: int, num_visual: int, heads: int, head_dim: int,
                                ff_mult: int) -> int:
    """One Flamingo gated xattn-dense block (:mod:`vlbridge.bridges.injections.cross_attention`) on one
    sample: ``text_tokens`` text positions T attend to ``num_visual`` visual vectors n of width d, H heads
    of width h, an FF of width ``ff_mult``·d. Conventions as above (matrix products only; scores and
    weighted values counted in full, masks do not halve them)::

        q, o:     2·T·d·(H·h) each          k, v (one product of width 2·H·h):  2·n·d·(2·H·h)
        scores and weighted values:  2·(2·T·n·H·h)          FF (two matrices):  2·(2·T·d·m·d)

    The keys and values are computed once per sample (a generation reuses them at every step). With
    ``num_visual`` = 0 (no image) only the FF runs: the injection skips the attention then."""
    d, T, n, inner = width, text_tokens, num_visual, heads * head_dim
    dense = 2 * (2 * T * d * ff_mult * d)
    if n == 0:
        return dense
    attention = 2 * (2 * T * d * inner) + 2 * n * d * 2 * inner + 2 * (2 * T * n * inner)
    return attention + dense
