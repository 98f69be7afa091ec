"""The memory's two products, with the key and value gradients summed over layers inside the products.

Every memory layer reads the same keys K and values V (B, M, d) (one memory for the whole LM, METHODS.md
section 1), so their gradients are sums over the layers: dK = sum_l dS_l^T x_l and dV = sum_l W_l^T G_l,
with x_l the layer's FFN input, S_l = x_l K^T, W_l the activations after phi and dropout, and G_l the
gradient of W_l V. Plain autograd computes each layer's term into a new tensor and then adds it to the
running sum; here each layer's backward adds its term into one buffer with ``baddbmm`` (beta = 1). On 2 CPU
threads, for the 135M LM's 30 layers at B = 8, L = 64, M = 320, that is ~30 ms instead of ~38 ms per
tensor and step (BENCHMARKS.md). The products are plain ``bmm`` / ``baddbmm`` calls, so
``torch.utils.flop_counter`` counts them as before::

    memory = SharedMemory(keys, values)    # once per batch, keys and values (B, M, d)
    scores = memory.scores(x)              # (B, L, M) = x K^T
    read = memory.read(weights)            # (B, L, d) = W V
"""

from __future__ import annotations

import torch
from torch import Tensor


class _GradientSums:
    """The running sums of the layers' key and value gradients during one backward pass."""

    def __init__(self):
        self.keys: Tensor | None = None
        self.values: Tensor | None = None


def _accumulate(total: Tensor | None, first: Tensor, second: Tensor) -> Tensor:
    """total + first @ second, written into total (a new tensor for the first layer)."""
    if total is None:
        return torch.bmm(first, second)
    return torch.baddbmm(total, first, second, out=total)


class _Share(torch.autograd.Function):
    """Hands the layers views of K and V; its backward, run after every layer's, returns the sums."""

    @staticmethod
    def forward(ctx, keys: Tensor, values: Tensor, sums: _GradientSums):
        ctx.sums = sums
        ctx.dtypes = keys.dtype, values.dtype
        ctx.set_materialize_grads(False)  # the layers return no gradient for the views
        return keys.view_as(keys), values.view_as(values)

    @staticmethod
    def backward(ctx, grad_keys: Tensor | None, grad_values: Tensor | None):
        sums = ctx.sums
        total_keys, total_values = sums.keys, sums.values
        sums.keys = sums.values = None  # a second backward pass (retain_graph) sums afresh

        def combined(total, direct, dtype):
            parts = [part.to(dtype) for part in (total, direct) if part is not None]
            return None if not parts else parts[0] if len(parts) == 1 else parts[0] + parts[1]

        return combined(total_keys, grad_keys, ctx.dtypes[0]), combined(total_values, grad_values, ctx.dtypes[1]), None


class _Scores(torch.autograd.Function):
    """S = x K^T (B, L, M); backward: dx = dS K, and dS^T x added into the key gradients' sum."""

    @staticmethod
    def forward(ctx, x: Tensor, keys: Tensor, sums: _GradientSums):
        keys = keys.to(x.dtype)
        ctx.save_for_backward(x, keys)
        ctx.sums = sums
        return torch.bmm(x, keys.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_scores: Tensor):
        x, keys = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            ctx.sums.keys = _accumulate(ctx.sums.keys, grad_scores.transpose(1, 2), x)
        grad_x = torch.bmm(grad_scores, keys) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


class _Read(torch.autograd.Function):
    """W V (B, L, d); backward: dW = G V^T, and W^T G added into the value gradients' sum."""

    @staticmethod
    def forward(ctx, weights: Tensor, values: Tensor, sums: _GradientSums):
        values = values.to(weights.dtype)
        ctx.save_for_backward(weights, values)
        ctx.sums = sums
        return torch.bmm(weights, values)

    @staticmethod
    def backward(ctx, grad_read: Tensor):
        weights, values = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            ctx.sums.values = _accumulate(ctx.sums.values, weights.transpose(1, 2), grad_read)
        grad_weights = torch.bmm(grad_read, values.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        return grad_weights, None, None


class SharedMemory:
    """One batch's keys and values (B, M, d), read by every memory layer."""

    def __init__(self, keys: Tensor, values: Tensor):
        self._sums = _GradientSums()
        self.keys, self.values = _Share.apply(keys, values, self._sums)

    @property
    def batch_size(self) -> int:
        return self.keys.shape[0]

    def scores(self, x: Tensor) -> Tensor:
        """(B, L, d) FFN input -> (B, L, M) x K^T."""
        return _Scores.apply(x, self.keys, self._sums)

    def read(self, weights: Tensor) -> Tensor:
        """(B, L, M) activations -> (B, L, d) W V."""
        return _Read.apply(weights, self.values, self._sums)
