"""Generation with the memory: the KV cache needs nothing extra, and batching changes nothing."""

from __future__ import annotations

import pytest
import torch
from greedy import greedy_without_cache
from tiny_memvp import HAS_IMAGE, PROMPTS, make_batch, memvp_model, randomise_memory, tiny_gpt2, tiny_llama

from vlbridge.models.language_model import positions_from_mask

NEW_TOKENS = 6


def with_memory(request):
    torch.manual_seed(0)
    lm = tiny_llama() if request.param == "llama" else tiny_gpt2()
    model = memvp_model(lm, lam=1.0, scale=1.0)
    randomise_memory(model)
    return model


@pytest.fixture(params=["llama", "gpt2"])
def model(request):
    return with_memory(request)


def test_cached_generation_equals_full_recomputation(model):
    batch = make_batch(PROMPTS, HAS_IMAGE, side="left")
    lm = model.language_model
    visual = model.visual_vectors(batch)
    lm.model.generation_config.eos_token_id = None  # always NEW_TOKENS steps, EOS is just a token here
    with model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image,
                                       None, "left") as inputs:
        cached = lm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                   position_ids=positions_from_mask(inputs.attention_mask), max_new_tokens=NEW_TOKENS,
                                   do_sample=False, pad_token_id=0,
                                   output_logits=True, return_dict_in_generate=True)
        # no cache: re-run the whole sequence for every new token
        tokens, logits = greedy_without_cache(lm, inputs.inputs_embeds, inputs.attention_mask, NEW_TOKENS)
    assert torch.equal(cached.sequences, tokens)
    for step in range(NEW_TOKENS):
        torch.testing.assert_close(cached.logits[step], logits[step], atol=1e-4, rtol=1e-4)


def test_batched_greedy_equals_one_by_one(model):
    batched = model.generate(make_batch(PROMPTS, HAS_IMAGE, side="left"), max_new_tokens=NEW_TOKENS, pad_token_id=0)
    full = make_batch(PROMPTS, HAS_IMAGE)  # the same image features row by row
    for k, prompt in enumerate(PROMPTS):
        one = make_batch([prompt], [HAS_IMAGE[k]], side="left")
        if HAS_IMAGE[k]:
            row = int(full.has_image[:k].sum())
            one.images.grid = full.images.grid[row:row + 1]
        single = model.generate(one, max_new_tokens=NEW_TOKENS, pad_token_id=0)
        assert torch.equal(batched[k, :single.shape[1]], single[0]), k


def test_the_image_changes_the_answer():
    """Guards the two tests above against a memory that does nothing."""
    torch.manual_seed(0)
    model = memvp_model(tiny_llama(), lam=1.0, scale=1.0)
    randomise_memory(model)
    batch = make_batch(PROMPTS, HAS_IMAGE, side="left", seed=0)
    other = make_batch(PROMPTS, HAS_IMAGE, side="left", seed=5)
    a = model.generate(batch, max_new_tokens=NEW_TOKENS, pad_token_id=0)
    b = model.generate(other, max_new_tokens=NEW_TOKENS, pad_token_id=0)
    assert not torch.equal(a[[0, 2]], b[[0, 2]])
    assert torch.equal(a[1], b[1])  # the text-only row
