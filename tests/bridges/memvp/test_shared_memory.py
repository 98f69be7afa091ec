"""SharedMemory's summed key/value gradients equal plain autograd's, and torch's FLOP counter sees the
same products."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.bridges.injections.shared_memory import SharedMemory

B, L, M, D, LAYERS = 2, 5, 7, 6, 3


def inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(B, M, D, generator=g, dtype=dtype, requires_grad=True)
    values = torch.randn(B, M, D, generator=g, dtype=dtype, requires_grad=True)
    x = torch.randn(B, L, D, generator=g, dtype=dtype, requires_grad=True)
    return keys, values, x


def stack_of_layers(x, scores, read):
    """Layers that feed each other, like the LM's: x <- x + read(silu(scores(x)))."""
    for _ in range(LAYERS):
        x = x + read(F.silu(scores(x)))
    return x.square().sum()


def plain_loss(keys, values, x):
    return stack_of_layers(x, lambda h: h @ keys.transpose(1, 2), lambda w: w @ values)


def shared_loss(keys, values, x):
    memory = SharedMemory(keys, values)
    return stack_of_layers(x, memory.scores, memory.read)


def gradients(loss_fn, tensors, passes=1):
    loss = loss_fn(*tensors)
    for i in range(passes):
        loss.backward(retain_graph=i < passes - 1)
    return [t.grad.clone() for t in tensors]


def test_gradients_equal_plain_autograd():
    plain = gradients(plain_loss, inputs())
    shared = gradients(shared_loss, inputs())
    for expected, got in zip(plain, shared):
        torch.testing.assert_close(got, expected)
    assert all(g.abs().sum() > 0 for g in shared)


def test_a_second_backward_pass_sums_afresh():
    once = gradients(shared_loss, inputs())
    twice = gradients(shared_loss, inputs(), passes=2)
    for single, double in zip(once, twice):
        torch.testing.assert_close(double, 2 * single)


def test_direct_uses_of_the_keys_add_to_the_sums():
    def loss(keys, values, x):
        memory = SharedMemory(keys, values)
        return stack_of_layers(x, memory.scores, memory.read) + memory.keys.sum() * memory.values.mean()

    def reference(keys, values, x):
        return plain_loss(keys, values, x) + keys.sum() * values.mean()

    for expected, got in zip(gradients(reference, inputs()), gradients(loss, inputs())):
        torch.testing.assert_close(got, expected)


def test_layers_in_another_dtype_return_gradients_in_the_memory_dtype():
    keys, values, x = inputs(torch.float32)
    x64 = x.detach().double().requires_grad_(True)
    shared_loss(keys, values, x64).backward()
    assert keys.grad.dtype == values.grad.dtype == torch.float32
    reference = gradients(plain_loss, [t.detach().double().requires_grad_(True) for t in (keys, values, x)])
    torch.testing.assert_close(keys.grad, reference[0].float())
    torch.testing.assert_close(values.grad, reference[1].float())


def test_without_gradients_only_the_products_run():
    keys, values, x = inputs()
    with torch.no_grad():
        got = SharedMemory(keys, values).read(F.silu(SharedMemory(keys, values).scores(x)))
    torch.testing.assert_close(got, F.silu(x @ keys.transpose(1, 2)) @ values)
    assert not got.requires_grad


def test_flop_counter_counts_the_same_training_flops():
    def counted(loss_fn):
        with FlopCounterMode(display=False) as counter:
            loss_fn(*inputs()).backward()
        return counter.get_total_flops()

    plain = counted(plain_loss)
    # per layer: 2 forward products and 4 backward products, each 2 * B * L * M * D
    assert plain == LAYERS * 6 * 2 * B * L * M * D
    assert counted(shared_loss) == plain
