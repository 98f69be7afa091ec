"""The memory's two products, with the key and value gradients summed over layers inside the products.

Every memory layer reads the same keys K and values V (B, M, d) (one memory for the whole LM, METHODS.md
section 1), so their gradients are sums over the layers: dK = sum_l dS_l^T x_l and dV = sum_l W_l^T G_l,
with x_l the layer's FFN input, S_l = x_l K^T, W_l the activations after phi and dropout, and G_l the
gradient of W_l V. Plain autograd computes each layer's term into a new tensor and then adds it to the
running sum; here each layer's backward adds its term into one buffer with ``baddbmm`` (beta = 1). On 2 CPU
threads, for the 135M LM's 30 layers at B = 8, L = 64, M = 320, that is ~28 ms instead of ~38 ms per
tensor and step (``benchmarks/memory_branch_speedups.py``, BENCHMARKS.md). With an LM stored in bf16
(``vlbridge.precision``) the layers' terms are kept instead and summed once, as one product of the terms side by side:
a bf16 running sum would round after every layer, and one wide product is faster than 30 thin ones. The products
are plain ``bmm`` / ``baddbmm`` calls, so ``torch.utils.flop_counter`` counts them as before::

    memory = SharedMemory(keys, values)    # once per batch, keys and values (B, M, d)
    scores = memory.scores(x)              # (B, L, M) = x K^T
    read = memory.read(weights)            # (B, L, d) = W V
"""

from __future__ import annotations

import torch
from torch import Tensor


def _accumulate(total: Tensor | list | None, first: Tensor, second: Tensor) -> Tensor | list:
    """total + first @ second: written into total (a new tensor for the first layer) in fp32 and fp64; in a
    half-width dtype (bf16) the terms are only collected, and :func:`_total` sums them in one product."""
    if first.dtype.itemsize < 4:
        return (total or []) + [(first, second)]
    if total is None:
        return torch.bmm(first, second)
    return torch.baddbmm(total, first, second, out=total)


def _total(summed: Tensor | list | None) -> Tensor | None:
    """The layers' sum. bf16 terms (B, M, L_l) @ (B, L_l, d) are summed as one product of the terms side by side,
    (B, M, sum L_l) @ (B, sum L_l, d), which accumulates in fp32 inside the kernel: a running sum in bf16 would
    round after every layer (1.5-2 % off over 30 layers, against fp64) and its 30 thin products take longer."""
    if not isinstance(summed, list):
        return summed
    firsts, seconds = zip(*summed)
    return torch.bmm(torch.cat(firsts, dim=2), torch.cat(seconds, dim=1))


def _with_direct(summed: Tensor | list | None, direct: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """The layers' sum (in the layers' dtype) cast to the memory's, plus any gradient of the views' other uses."""
    summed = _total(summed)
    if summed is None:
        return direct
    summed = summed.to(dtype)
    return summed if direct is None else summed + direct


class _Share(torch.autograd.Function):
    """Hands the layers views of K and V; its backward, run after every layer's, returns the sums."""

    @staticmethod
    def forward(ctx, keys: Tensor, values: Tensor, sums: dict):
        ctx.sums = sums
        ctx.dtypes = keys.dtype, values.dtype
        ctx.set_materialize_grads(False)  # the layers return no gradient for the views
        return keys.view_as(keys), values.view_as(values)

    @staticmethod
    def backward(ctx, grad_keys: Tensor | None, grad_values: Tensor | None):
        summed = ctx.sums["keys"], ctx.sums["values"]
        ctx.sums.update(keys=None, values=None)  # a second backward pass (retain_graph) sums afresh
        return (*(_with_direct(total, direct, dtype)
                  for total, direct, dtype in zip(summed, (grad_keys, grad_values), ctx.dtypes)), None)


class _Product(torch.autograd.Function):
    """``keys``: S = x K^T (B, L, M); ``values``: W V (B, L, d). The backward returns the gradient of the left
    operand (dx = dS K, dW = G V^T) and adds the memory's term (dS^T x, W^T G) into that tensor's sum."""

    @staticmethod
    def forward(ctx, left: Tensor, memory: Tensor, sums: dict, name: str):
        memory = memory.to(left.dtype)
        ctx.save_for_backward(left, memory)
        ctx.sums, ctx.name = sums, name
        return torch.bmm(left, memory.transpose(1, 2) if name == "keys" else memory)

    @staticmethod
    def backward(ctx, grad: Tensor):
        left, memory = ctx.saved_tensors
        keys = ctx.name == "keys"
        if ctx.needs_input_grad[1]:
            term = (grad.transpose(1, 2), left) if keys else (left.transpose(1, 2), grad)
            ctx.sums[ctx.name] = _accumulate(ctx.sums[ctx.name], *term)
        grad_left = None
        if ctx.needs_input_grad[0]:
            grad_left = torch.bmm(grad, memory if keys else memory.transpose(1, 2))
        return grad_left, None, None, None


class SharedMemory:
    """One batch's keys and values (B, M, d), read by every memory layer."""

    def __init__(self, keys: Tensor, values: Tensor):
        self._sums: dict[str, Tensor | None] = {"keys": None, "values": None}  # during a backward pass
        self.keys, self.values = _Share.apply(keys, values, self._sums)

    @property
    def batch_size(self) -> int:
        return self.keys.shape[0]

    def scores(self, x: Tensor) -> Tensor:
        """(B, L, d) FFN input -> (B, L, M) x K^T."""
        return _Product.apply(x, self.keys, self._sums, "keys")

    def read(self, weights: Tensor) -> Tensor:
        """(B, L, M) activations -> (B, L, d) W V."""
        return _Product.apply(weights, self.values, self._sums, "values")
