"""Which training samples each step reads, in a form that can be saved and restored exactly.

Every epoch is a fresh permutation of the training set drawn from the run's own ``torch.Generator``
(seeded by ``train.seed``), cut into *global* micro-batches of ``batch_size x world_size`` samples; a
tail shorter than one global micro-batch is left out of that epoch (as ``drop_last``). Process ``rank``
reads its own contiguous slice of every global micro-batch, so processes never share a sample and
together read exactly what one process with the whole global batch would (PyTorch's
``DistributedSampler`` makes the same promise; here the order is also resumable mid-epoch).

The state is the epoch, the offset inside its permutation and the generator state *at the start of
the epoch*: restoring redraws the same permutation and continues at the same offset.
"""

from __future__ import annotations

import torch


class DataOrder:
    def __init__(self, num_samples: int, global_batch: int, seed: int):
        if global_batch < 1 or num_samples < global_batch:
            raise ValueError(f"a global batch of {global_batch} needs at least that many samples, got {num_samples}")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = -1  # no permutation drawn yet
        self.offset = 0
        self._epoch_start = self.generator.get_state()  # (5056,) uint8: the Mersenne Twister state
        self._permutation: list[int] = []

    def _new_epoch(self) -> None:
        self.epoch += 1
        self._epoch_start = self.generator.get_state()
        self._permutation = torch.randperm(self.num_samples, generator=self.generator).tolist()
        self.offset = 0

    def next_global(self) -> list[int]:
        """Indices of the next global micro-batch (``global_batch`` of them, all processes together)."""
        if self.epoch < 0 or self.offset + self.global_batch > self.num_samples:
            self._new_epoch()
        indices = self._permutation[self.offset:self.offset + self.global_batch]
        self.offset += self.global_batch
        return indices

    def state_dict(self) -> dict:
        """``{"epoch", "offset"}`` (JSON) and ``"generator"`` (a uint8 tensor, for safetensors)."""
        return {"epoch": self.epoch, "offset": self.offset, "generator": self._epoch_start.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"] - 1
        if state["epoch"] >= 0:
            self._new_epoch()  # redraws the epoch's permutation from its starting state
            self.offset = state["offset"]
        else:
            self._epoch_start = self.generator.get_state()


def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
    """Process ``rank``'s contiguous slice of a global micro-batch (its length divides evenly)."""
    per_process = len(indices) // world_size
    return indices[rank * per_process:(rank + 1) * per_process]
