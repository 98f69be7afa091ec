"""Every registered connector with every registered injection, built by recipe on tiny models.

For each pair: a training step changes only the trainable tensors and gradients reach the connector; batched
greedy generation equals one-by-one generation; saving and loading the run gives the same outputs. The pairs
come from the registries, so a new connector or injection is covered here without editing this file.
"""

from __future__ import annotations

import pytest
import torch

from vlbridge.bridges.registry import CONNECTORS, INJECTIONS
from vlbridge.data.sample import Sample, Turn
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, load_run, prompt_collator
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable

PAIRS = [(c, i) for c in sorted(CONNECTORS) for i in sorted(INJECTIONS)]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Three images of different aspect ratios and one text-only sample."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("grid_images")
    rng = torch.Generator().manual_seed(0)
    images = []
    for i, (height, width) in enumerate([(56, 56), (30, 56), (56, 20)]):
        path = folder / f"{i}.png"
        Image.fromarray((torch.rand(height, width, 3, generator=rng) * 255).to(torch.uint8).numpy()).save(path)
        images.append(path)
    return [
        Sample("a", (Turn("user", "<image>\nWhat is it?"), Turn("assistant", "a red circle")), image=images[0]),
        Sample("b", (Turn("user", "Tell me about shapes"), Turn("assistant", "no"))),
        Sample("c", (Turn("user", "<image>\nHi"), Turn("assistant", "blue")), image=images[1]),
        Sample("d", (Turn("user", "Where is it?<image>"), Turn("assistant", "top left")), image=images[2]),
    ]


def pair_recipe(connector: str, injection: str, lm_dir, encoder_dir):
    """The pair between the tiny LM and the tiny DINOv2, or no encoder when the connector reads pixels."""
    encoder = [f"model.vision_encoder={encoder_dir}", "model.vision_layer=-1"] if CONNECTORS[connector].consumes == "features" \
        else ["model.vision_encoder=none"]
    return load_recipe(None, [f"model.language_model={lm_dir}", *encoder, "model.bridge=null",
                              f"model.connector={connector}", f"model.injection={injection}", "data.cache_features=false"])


@pytest.mark.parametrize("connector, injection", PAIRS)
def test_every_pair_trains_generates_and_reloads(connector, injection, samples, tiny_llama_dir, tiny_dinov2_dir,
                                                 tmp_path):
    recipe = pair_recipe(connector, injection, tiny_llama_dir, tiny_dinov2_dir)
    built = build_seeded(recipe)
    model = built.model
    apply_trainable(model, ["bridge"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    connector_names = {f"bridge.connector.{n}" for n, _ in model.bridge.connector.named_parameters()}
    assert trainable == {n for n in before if n.startswith("bridge.")}
    batch = prompt_collator(built, with_answer=True)(samples)
    if trainable:  # only zero vectors spliced into the sequence (zeros -> input_space) have nothing to train
        # two steps: a gated injection starts closed, the first step opens its gates and the second reaches
        # the connector through them
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        for _ in range(2):
            optimizer.zero_grad()
            output = model(batch)
            (output.loss_sum / output.num_tokens).backward()
            optimizer.step()
        assert all(model.get_parameter(n).grad is not None and model.get_parameter(n).grad.abs().sum() > 0
                   for n in connector_names), "gradients must reach every connector tensor"
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)[:4]}"
        assert connector_names <= changed
    else:
        assert (connector, injection) == ("zeros", "input_space")

    # batched greedy generation equals one by one
    model.eval()
    model.language_model.model.generation_config.eos_token_id = None  # every row generates all its tokens
    prompts = prompt_collator(built)
    batched = generate_answers(model, built.tokenizer, prompts, samples, GenerationSettings(4, len(samples)))
    single = generate_answers(model, built.tokenizer, prompts, samples, GenerationSettings(4, 1))
    assert batched == single

    # save -> load gives the same model
    save_checkpoint(model, recipe, tmp_path / "final")
    loaded, _ = load_run(tmp_path / "final")
    loaded.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(batch).loss_sum, model(batch).loss_sum)
    loaded.model.language_model.model.generation_config.eos_token_id = None
    assert generate_answers(loaded.model, loaded.tokenizer, prompt_collator(loaded), samples,
                            GenerationSettings(4, len(samples))) == batched
