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


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (B, ...) from all processes along dim 0; gradients flow back to each owner."""
    if world()[1] == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)


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
