"""Forward FLOPs of a decoder-only LM with and without visual tokens: pure functions of the LM's shape.

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
