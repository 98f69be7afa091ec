"""The bf16 training attention and the bf16 memory-gradient sum: the same maths as the plain versions, checked
against fp64 references (as accurate as bf16 inputs allow, or more), and plain sdpa wherever its fast path does
not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlbridge import cpu_bf16_attention
from vlbridge.bridges.injections.shared_memory import SharedMemory
from vlbridge.cpu_bf16_attention import NAME, attention, use_for_training


class Module:  # what Hugging Face's attention functions read off the attention module
    is_causal = True
    num_key_value_groups = 3


def qkv(T: int, S: int | None = None, dtype=torch.bfloat16, seed: int = 0):
    """q (2, 6, T, 16), k and v (2, 2, S, 16): grouped-query heads as SmolLM2's (3 query heads per key head)."""
    g = torch.Generator().manual_seed(seed)
    S = S or T
    return [torch.randn(2, heads, length, 16, generator=g).to(dtype).requires_grad_(True)
            for heads, length in ((6, T), (2, S), (2, S))]


def padded_causal_mask(T: int) -> torch.Tensor:
    """(2, 1, T, T) additive: causal, and row 1's first 3 keys are padding (its first 3 queries see only key 3 on)."""
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    allowed[1, :, :, :3] = False
    allowed[1, :, :3, 3] = True
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


def reference(q, k, v, mask, grad):
    """fp64 sdpa (key heads repeated for the query heads): output (B, T, H, h) and the three gradients."""
    q, k, v = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1),
                                         attn_mask=None if mask is None else mask.double(), is_causal=mask is None)
    out = out.transpose(1, 2)
    out.backward(grad.double())
    return out.detach(), q.grad, k.grad, v.grad


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("T", [5, cpu_bf16_attention.FP32_BACKWARD_BELOW + 8])  # the fp32 and the bf16 backward
@pytest.mark.parametrize("masked", [True, False])
def test_gradients_match_fp64_as_closely_as_sdpa_in_bf16(T, masked):
    q, k, v = qkv(T)
    mask = padded_causal_mask(T).to(torch.bfloat16) if masked else None
    grad = torch.randn(2, T, 6, 16, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    expected = reference(q, k, v, mask, grad)

    out, _ = attention(Module(), q, k, v, mask)
    assert out.dtype == torch.bfloat16 and out.shape == (2, T, 6, 16)
    out.backward(grad)
    ours = [out, q.grad, k.grad, v.grad]

    q2, k2, v2 = qkv(T)  # Hugging Face's sdpa on the same bf16 inputs: the accuracy bf16 allows
    sdpa = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
    sdpa = sdpa.transpose(1, 2)
    sdpa.backward(grad)
    theirs = [sdpa, q2.grad, k2.grad, v2.grad]
    for got, other, exact in zip(ours, theirs, expected):
        assert got.dtype == torch.bfloat16 and torch.isfinite(got.float()).all()
        assert relative_error(got, exact) <= max(2 * relative_error(other, exact), 1e-2)


def test_without_gradients_or_in_fp32_it_is_huggingfaces_sdpa():
    q, k, v = qkv(7, dtype=torch.float32)
    mask = padded_causal_mask(7)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ours, _ = attention(Module(), q, k, v, mask)
    theirs, _ = sdpa_attention_forward(Module(), q, k, v, mask)
    assert torch.equal(ours, theirs)
    q, k, v = qkv(7)
    with torch.no_grad():  # generation: no backward, so sdpa as it is
        assert torch.equal(attention(Module(), q, k, v, mask.bfloat16())[0],
                           sdpa_attention_forward(Module(), q, k, v, mask.bfloat16())[0])


def test_an_lm_switched_to_it_trains_as_with_sdpa(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    models = []
    for switch in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
        assert model.config._attn_implementation == "sdpa"
        if switch:
            assert use_for_training(model) and model.config._attn_implementation == NAME
        models.append(model)
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding, as in training batches
    grads, losses = [], []
    for model in models:
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        loss = (loss * mask[:, 1:].flatten()).sum()
        loss.backward()
        grads.append(embeds.grad.float())
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    assert relative_error(grads[1], grads[0].double()) < 5e-2
    assert not use_for_training(models[1])  # only an sdpa LM is switched


def test_the_bf16_memory_gradient_sum_is_more_accurate_than_a_running_sum():
    """30 layers reading one memory: the keys' and values' gradients summed in one product of the layers' terms
    side by side, against fp64 and against a running bf16 sum (what the fp32 path does, in bf16)."""
    g = torch.Generator().manual_seed(0)
    B, L, M, D, layers = 2, 8, 12, 16, 30
    keys, values = (torch.randn(B, M, D, generator=g, requires_grad=True) for _ in range(2))
    xs = [torch.randn(B, L, D, generator=g) for _ in range(layers)]
    upstream = [torch.randn(B, L, D, generator=g) for _ in range(layers)]

    def run(dtype):
        k, v = keys.detach().clone().requires_grad_(True), values.detach().clone().requires_grad_(True)
        memory = SharedMemory(k.to(dtype), v.to(dtype)) if dtype != torch.float64 else SharedMemory(k.double(),
                                                                                                     v.double())
        total = sum((memory.read(F.silu(memory.scores(x.to(dtype)))) * u.to(dtype)).sum() for x, u in
                    zip(xs, upstream))
        total.backward()
        return k.grad, v.grad

    exact = run(torch.float64)
    summed = run(torch.bfloat16)
    assert all(grad.dtype == torch.float32 for grad in summed)  # cast back to the memory's dtype
    running = []
    for which in (0, 1):  # the same terms as a bf16 running sum
        total = None
        k, v = keys.detach().bfloat16(), values.detach().bfloat16()
        for x, u in zip(xs, upstream):
            x, u = x.bfloat16(), u.bfloat16()
            s = x @ k.transpose(1, 2)
            w = F.silu(s)
            if which == 0:  # dK += dS^T x with dS = (dW * silu'(s)), dW = u V^T
                dw = u @ v.transpose(1, 2)
                ds = dw * torch.sigmoid(s) * (1 + s * (1 - torch.sigmoid(s)))
                term = ds.transpose(1, 2) @ x
            else:  # dV += W^T u
                term = w.transpose(1, 2) @ u
            total = term if total is None else total + term
        running.append(total)
    for ours, plain, truth in zip(summed, running, exact):
        assert relative_error(ours, truth) < relative_error(plain, truth)
        assert relative_error(ours, truth) < 1e-2
