"""Attention for training a bf16 LM on a CPU: PyTorch's flash kernel, with its backward in fp32 for short sequences.

On a CPU with AMX, PyTorch's fused flash attention runs its forward 2-3x faster in bf16 than in fp32, but its bf16
backward is slow on short sequences: 3-4x slower than the fp32 backward at 64 query positions (SmolLM2-135M's 9
query / 3 key-value heads of 64, batch 8, one thread), as fast at 192-256 and faster beyond
(``benchmarks/precision.py --attention``; the kernel splits queries into larger blocks from 192 on). So this
attention keeps the forward's log-sum-exp and, below :data:`FP32_BACKWARD_BELOW` query positions, runs the kernel's
backward on fp32 copies of q, k, v, the output and its gradient (a few MB), casting the gradients back; at longer
sequences it runs the kernel's bf16 backward as ``sdpa`` would. The maths is the same (the backward is exact given
the forward's statistics) and the fp32 backward accumulates in fp32.

It is a Hugging Face attention implementation (:data:`NAME`, registered with ``AttentionInterface``; its masks are
``eager``'s, additive in the LM's dtype as the kernel takes them, built once per forward pass), so the LM's own
modules call it: :func:`use_for_training` switches an LM from ``sdpa`` to it. Anything else (no gradient needed, not
bf16, not on a CPU, dropout, a position bias, soft-capping, a sliding window) goes to Hugging Face's ``sdpa``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "vlbridge_cpu_bf16"
FP32_BACKWARD_BELOW = 192  # query positions; measured crossover of the kernel's bf16 and fp32 (+ casts) backward

_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


class _FlashBf16(torch.autograd.Function):
    """q (B, H, T, h), k and v (B, H_kv, S, h) in bf16 (H a multiple of H_kv), an additive mask broadcastable to
    (B, H, T, S) or None -> (B, H, T, h)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None, causal: bool):
        out, lse = _forward(q, k, v, 0.0, causal, attn_mask=mask, scale=scale)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.scale, ctx.causal = scale, causal
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, mask, out, lse = ctx.saved_tensors
        if q.shape[2] >= FP32_BACKWARD_BELOW:
            dq, dk, dv = _backward(grad.contiguous(), q, k, v, out, lse, 0.0, ctx.causal, attn_mask=mask,
                                   scale=ctx.scale)
            return dq, dk, dv, None, None, None
        fp32 = [t.float() for t in (grad, q, k, v, out)]
        mask = mask.float() if mask is not None else None
        dq, dk, dv = _backward(*fp32, lse, 0.0, ctx.causal, attn_mask=mask, scale=ctx.scale)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None


def _takes(query: Tensor, key: Tensor, value: Tensor, dropout: float, kwargs: dict) -> bool:
    """Whether the bf16 path applies: a backward will run, on a CPU, in bf16, with nothing it does not support."""
    return (torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            and query.device.type == "cpu" and query.dtype == key.dtype == value.dtype == torch.bfloat16
            and dropout == 0.0 and key.shape[-1] == value.shape[-1] and query.shape[1] % key.shape[1] == 0
            and all(kwargs.get(name) is None for name in ("position_bias", "softcap", "sliding_window", "s_aux"))
            and not kwargs.get("output_attentions", False))


def attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
              dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
              **kwargs) -> tuple[Tensor, None]:
    """Hugging Face's attention-function signature: query (B, H, T, h), key / value (B, H_kv, S, h), an additive
    mask broadcastable to (B, 1, T, S) (or a boolean one, True = attend) or None -> (B, T, H, h), None."""
    if not _takes(query, key, value, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal,
                                      **kwargs)
    T = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and T > 1)
    mask = None
    if attention_mask is not None:  # the kernel takes an additive mask of the query's dtype
        mask = attention_mask.to(query.dtype) if attention_mask.dtype != torch.bool else torch.zeros(
            attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~attention_mask, float("-inf"))
    elif causal and key.shape[2] > T:  # as Hugging Face's sdpa: the kernel's causal mask is aligned top-left
        key, value = key[:, :, :T], value[:, :, :T]
    out = _FlashBf16.apply(query.contiguous(), key.contiguous(), value.contiguous(), mask, scaling, causal)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, attention)
AttentionMaskInterface.register(NAME, eager_mask)  # additive, in the LM's dtype: built once per forward pass


def use_for_training(model) -> bool:
    """Switch a Hugging Face model that attends with ``sdpa`` to this attention (in place); True if switched."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(NAME)
    return True
