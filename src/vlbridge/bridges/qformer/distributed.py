"""Gathering ITC/ITM negatives from every process (BLIP-2 uses the whole global batch as negatives).

Outside `torch.distributed` (or with one process) every function is the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for this process's slice (all_reduce).

    Written here rather than `torch.distributed.nn.functional.all_gather` because that one's gloo backward
    mixes up elements when the incoming gradient is not contiguous (as the einsum of ITC makes it)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.batch = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (B, ...) from all processes along dim 0 (same B everywhere); gradients flow back to each
    owner, summed over the processes' losses."""
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_padded(x: Tensor, pad_value: int) -> Tensor:
    """Concatenate (B, L_rank) integer tensors whose L differs across processes, right-padded to the longest."""
    if world()[1] == 1:
        return x
    length = torch.tensor([x.shape[1]], device=x.device)
    lengths = [torch.zeros_like(length) for _ in range(world()[1])]
    dist.all_gather(lengths, length)
    longest = int(max(t.item() for t in lengths))
    x = torch.nn.functional.pad(x, (0, longest - x.shape[1]), value=pad_value)
    parts = [torch.empty_like(x) for _ in range(world()[1])]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
