"""Several processes, one training loop: Hugging Face Accelerate does the distributed work.

The trainer always runs through an :class:`accelerate.Accelerator`; a plain ``python`` run is world
size 1 and nothing is wrapped. Under ``accelerate launch`` or ``torchrun`` the model is wrapped in DDP
(or FSDP, when Accelerate's config selects it) and this module holds the few collective steps the loop
needs: splitting evaluation samples, gathering predictions and step statistics, and the full
(unsharded) model and optimizer state for checkpoints, through PyTorch's
``torch.distributed.checkpoint.state_dict`` API, which speaks plain modules, DDP and FSDP alike.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from vlbridge.errors import ConfigError


def make_accelerator():
    from accelerate import Accelerator

    # Without a GPU (or other accelerator device) Accelerate only forms a process group, over gloo, when
    # told cpu=True; with one, it picks its device and backend (NCCL on CUDA) itself.
    accelerator = Accelerator(cpu=not torch.accelerator.is_available())
    if is_fsdp(accelerator) and accelerator.state.fsdp_plugin.fsdp_version != 1:
        raise ConfigError("FSDP version 2 is not supported by the trainer yet (generation during training needs "
                          "FSDP1's summon_full_params); launch with --fsdp_version 1 --fsdp_use_orig_params true")
    return accelerator


class OnDevice:
    """A collator whose batches land on ``device`` (the accelerator's); otherwise the collator itself."""

    def __init__(self, collator, device):
        self.collator, self.device = collator, device

    def __call__(self, samples):
        return self.collator(samples).to(self.device)

    def __getattr__(self, name):
        return getattr(self.collator, name)


def is_fsdp(accelerator) -> bool:
    return accelerator.distributed_type.name == "FSDP"


def split_evenly(items: list, rank: int, world_size: int) -> list:
    """Process ``rank``'s contiguous part of ``items`` (sizes differ by at most one); concatenating the
    parts in rank order gives ``items`` back, which is what :func:`gather` returns."""
    per, extra = divmod(len(items), world_size)
    start = rank * per + min(rank, extra)
    return items[start:start + per + (rank < extra)]


def gather(accelerator, items: list) -> list:
    """Every process's list, concatenated in rank order, on every process."""
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return gather_object(list(items))


def reduce(accelerator, values: list[float], how: str = "sum") -> list[float]:
    """Sum (or mean) of each value over processes, in float64. World size 1 returns them untouched, so a
    single-process run is bit-for-bit the same as without this layer."""
    if accelerator.num_processes == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(tensor, reduction=how).tolist()


def full_parameters(accelerator, wrapped):
    """Context in which the unwrapped model holds all its parameters (generation needs them): FSDP
    gathers its shards; everything else already has them."""
    if is_fsdp(accelerator):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(wrapped, writeback=False)
    return nullcontext()


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def trained_weights(accelerator, wrapped, model) -> dict[str, torch.Tensor]:
    """The trainable tensors by name, whole (all processes must call this: FSDP gathers)."""
    if not is_fsdp(accelerator):
        return model.trainable_state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    names = set(model.trainable_parameters())
    full = get_model_state_dict(wrapped, options=_full_options())
    return {k: v.detach().clone() for k, v in full.items() if k in names}


def optimizer_state(wrapped, optimizer) -> dict:
    """``{"state": {param name: {...}}, "param_groups": [{..., "params": [names]}]}``, whole and keyed
    by parameter name (not by position), so a checkpoint does not depend on how parameters were listed."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(wrapped, getattr(optimizer, "optimizer", optimizer), options=_full_options())


def load_optimizer_state(wrapped, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(wrapped, getattr(optimizer, "optimizer", optimizer), state,
                             options=StateDictOptions(full_state_dict=True))
