"""The data order: shards without duplicates that add up to one process's batch; exact restore mid-epoch."""

from __future__ import annotations

import torch

from vlbridge.train.data_order import DataOrder, shard
from vlbridge.train.distributed import split_evenly


def test_shards_of_every_step_are_disjoint_and_make_up_the_single_process_batch():
    world, per_process, n = 3, 2, 23
    one, many = DataOrder(n, per_process * world, seed=5), DataOrder(n, per_process * world, seed=5)
    seen_in_epoch: set[int] = set()
    for step in range(12):  # 3 epochs of 3 global batches (23 // 6), the last 5 samples left out each epoch
        whole = one.next_global()
        global_batch = many.next_global()
        parts = [shard(global_batch, rank, world) for rank in range(world)]
        assert [len(p) for p in parts] == [per_process] * world
        assert sorted(sum(parts, [])) == sorted(whole) and len(set(whole)) == len(whole)
        if step % 3 == 0:
            seen_in_epoch = set()
        assert not seen_in_epoch & set(whole)  # no sample twice in an epoch, on any process
        seen_in_epoch |= set(whole)
    assert one.epoch == 3


def test_epochs_are_fresh_permutations_from_the_seed():
    order = DataOrder(10, 5, seed=0)
    epochs = [sorted(order.next_global() + order.next_global()) for _ in range(3)]
    assert epochs == [list(range(10))] * 3
    reference = torch.Generator().manual_seed(0)
    first = torch.randperm(10, generator=reference).tolist()
    again = DataOrder(10, 5, seed=0)
    assert again.next_global() + again.next_global() == first


def test_restoring_a_saved_position_continues_exactly_mid_epoch():
    order = DataOrder(17, 4, seed=3)
    for _ in range(6):  # into the second epoch
        order.next_global()
    saved = order.state_dict()
    expected = [order.next_global() for _ in range(9)]
    restored = DataOrder(17, 4, seed=99)  # another seed: everything comes from the saved state
    restored.load_state_dict(saved)
    assert [restored.next_global() for _ in range(9)] == expected
    fresh = DataOrder(17, 4, seed=3)
    fresh.load_state_dict(DataOrder(17, 4, seed=3).state_dict())  # saved before the first batch
    assert fresh.next_global() == DataOrder(17, 4, seed=3).next_global()


def test_evaluation_split_covers_every_sample_once_in_order():
    items = list(range(11))
    for world in (1, 2, 3, 4, 12):
        parts = [split_evenly(items, rank, world) for rank in range(world)]
        assert sum(parts, []) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
