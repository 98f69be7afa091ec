"""The assembled model: loss parity with Hugging Face, batched generation equal to one-by-one."""

from __future__ import annotations

import pytest
import torch
from tiny_vlm import build_tiny_vlm

from vlbridge.build import build_model
from vlbridge.data.sample import Sample, Turn
from vlbridge.runs import prompt_collator
from vlbridge.text.tokenize import IGNORE
from vlbridge.recipe import load_recipe


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = torch.Generator().manual_seed(0)
    paths = []
    for i in range(3):
        pixels = (torch.rand(40 + 10 * i, 56, 3, generator=rng) * 255).to(torch.uint8).numpy()
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def samples(images):
    return [
        Sample("a", (Turn("user", "<image>\nWhat is it?"), Turn("assistant", "a red circle")), image=images[0]),
        Sample("b", (Turn("user", "Tell me a long story about the shapes and colours"), Turn("assistant", "no"))),
        Sample("c", (Turn("user", "<image>\nHi"), Turn("assistant", "blue")), image=images[1]),
        Sample("d", (Turn("user", "Where?<image>"), Turn("assistant", "top left")), image=images[2]),
    ]


@pytest.fixture(scope="module", params=["llava", "memvp"])
def built(request, tiny_llama_dir, tiny_dinov2_dir):
    return build_tiny_vlm(tiny_llama_dir, tiny_dinov2_dir, request.param)


def collator(built, with_answer):
    return prompt_collator(built, with_answer=with_answer)


def test_loss_equals_hugging_face_loss_on_the_same_embeddings(built, images):
    batch = collator(built, True)(samples(images))
    model = built.model
    ours = model(batch)
    visual = model.visual_vectors(batch)
    with model.bridge.injection.inject(model.language_model, batch.input_ids, batch.attention_mask, visual,
                                       batch.has_image, batch.labels) as inputs:
        reference = model.language_model.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                               labels=inputs.labels).loss
    assert ours.num_tokens == int((inputs.labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(ours.loss_sum / ours.num_tokens, reference, rtol=1e-5, atol=1e-5)


def test_batched_greedy_generation_equals_one_by_one(built, images):
    prompts = collator(built, False)
    items = samples(images)
    eos = built.tokenizer.eos_token_id
    together = built.model.generate(prompts(items), max_new_tokens=6, eos_token_id=eos, pad_token_id=eos)
    for i, sample in enumerate(items):
        alone = built.model.generate(prompts([sample]), max_new_tokens=6, eos_token_id=eos, pad_token_id=eos)[0]
        assert together[i, : alone.shape[0]].tolist() == alone.tolist(), sample.id


def test_generation_stops_at_the_generation_configs_eos_when_none_is_given(built, images):
    prompts = collator(built, False)(samples(images)[:1])
    config = built.model.language_model.model.generation_config
    saved = config.eos_token_id, config.pad_token_id
    try:
        config.eos_token_id = None
        free = built.model.generate(prompts, max_new_tokens=6, pad_token_id=0)[0]
        assert free.shape[0] == 6
        tokens = free.tolist()
        end = max(i for i, t in enumerate(tokens) if t not in tokens[:i])  # a token first seen at position `end`
        config.eos_token_id, config.pad_token_id = tokens[end], 0  # now ends the answer there
        stopped = built.model.generate(prompts, max_new_tokens=6)[0]
        assert stopped.tolist() == tokens[: end + 1]
    finally:
        config.eos_token_id, config.pad_token_id = saved


def test_sampling_is_reproducible_with_a_seed(built, images):
    prompts = collator(built, False)(samples(images)[:2])
    eos = built.tokenizer.eos_token_id
    run = lambda: built.model.generate(prompts, max_new_tokens=5, do_sample=True, temperature=1.5, top_p=0.9,  # noqa: E731
                                       eos_token_id=eos, pad_token_id=eos, seed=3)
    assert torch.equal(run(), run())


def test_blip2_bridge_gives_a_fixed_number_of_soft_tokens(tiny_llama_dir, tiny_dinov2_dir, images):
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1", "model.bridge=blip2",
                                "model.bridge_options={init: random, num_query_tokens: 8}"])
    built = build_model(recipe.model)
    assert built.image_tokens == 8
    batch = collator(built, True)(samples(images))
    out = built.model(batch)
    out.loss_sum.backward()
    assert built.model.bridge.connector.qformer.query_tokens.grad is not None
