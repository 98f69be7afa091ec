"""benchmarks/memory_branch_speedups.py compares the library's memory branch with a plain autograd branch:
the two must compute the same outputs and gradients, or its timings compare different work."""

from __future__ import annotations

import types

import torch
from benchmark_scripts import load_script
from tiny_memvp import HAS_IMAGE, PROMPTS, make_batch, memvp_model, randomise_memory


def loss_and_gradients(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss = out.loss_sum / out.num_tokens
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_plain_branch_equals_the_library_branch(llama):
    script = load_script("memory_branch_speedups")
    model = memvp_model(llama, lam=0.5)
    randomise_memory(model)
    batch = make_batch(PROMPTS, HAS_IMAGE, answers=[[30, 31], [32], [33, 34, 35]])
    injection = model.bridge.injection

    library_loss, library_grads = loss_and_gradients(model, batch)  # eval mode: no dropout
    injection.branch = types.MethodType(script.plain_branch, injection)
    plain_loss, plain_grads = loss_and_gradients(model, batch)

    torch.testing.assert_close(plain_loss, library_loss)
    assert set(plain_grads) == set(library_grads) == {name for name, p in model.named_parameters() if p.requires_grad}
    for name, grad in library_grads.items():
        torch.testing.assert_close(plain_grads[name], grad, msg=name)
