"""Every bridge with its frozen parts stored in bf16: training changes only the trained tensors, which stay fp32 with
fp32 gradients reaching the connector, and batched generation with the KV cache agrees with recomputing the whole
sequence for every token (up to bf16 rounding). LoRA and the encoder's adapters stay fp32 beside bf16 weights."""

from __future__ import annotations

import pytest
import torch
from greedy import greedy_without_cache

from vlbridge.bridges.registry import CONNECTORS, INJECTIONS
from vlbridge.data.sample import Sample, Turn
from vlbridge.models.language_model import positions_from_mask
from vlbridge.precision import frozen_parameters, resolve, store_frozen
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, prompt_collator
from vlbridge.train.identity import model_identity
from vlbridge.train.parameter_groups import apply_trainable, group_of

PAIRS = [(c, i) for c in sorted(CONNECTORS) for i in sorted(INJECTIONS)]
BF16 = resolve("bf16", "bf16", "cpu")
NEW_TOKENS = 3


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two images of different aspect ratios and a text-only sample."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("bf16_images")
    rng = torch.Generator().manual_seed(0)
    paths = []
    for i, (height, width) in enumerate([(56, 56), (30, 56)]):
        path = folder / f"{i}.png"
        Image.fromarray((torch.rand(height, width, 3, generator=rng) * 255).to(torch.uint8).numpy()).save(path)
        paths.append(path)
    return [
        Sample("a", (Turn("user", "<image>\nWhat is it?"), Turn("assistant", "a red circle")), image=paths[0]),
        Sample("b", (Turn("user", "Tell me about shapes"), Turn("assistant", "no"))),
        Sample("c", (Turn("user", "Where is it?<image>"), Turn("assistant", "top left")), image=paths[1]),
    ]


def recipe_for(connector: str, injection: str, lm_dir, encoder_dir, *extra):
    encoder = ([f"model.vision_encoder={encoder_dir}", "model.vision_layer=-1"]
               if CONNECTORS[connector].consumes == "features" else ["model.vision_encoder=none"])
    return load_recipe(None, [f"model.language_model={lm_dir}", *encoder, "model.bridge=null",
                              f"model.connector={connector}", f"model.injection={injection}",
                              "data.cache_features=false", *extra])


def train_two_steps(model, batch) -> list[float]:
    """As the trainer does: the forward pass under the precision's autocast, fp32 loss, AdamW on fp32 tensors."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(2):  # a gated injection opens its gates in the first step, the second reaches the connector
        optimizer.zero_grad()
        with BF16.autocast("cpu"):
            output = model(batch)
        loss = output.loss_sum / output.num_tokens
        assert loss.dtype == torch.float32
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def assert_generation_matches_recomputation(model, batch):
    """Batched generation with the KV cache against greedy decoding that re-runs the whole sequence for every
    token, both in bf16: the same tokens while the reference's best two tokens are apart by more than bf16 can
    blur, and the logits close throughout."""
    lm = model.language_model
    lm.model.generation_config.eos_token_id = None
    visual, lengths = model.visual_tokens(batch)
    with torch.no_grad(), model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual,
                                                        batch.has_image, None, "left", lengths) as inputs:
        cached = lm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                   position_ids=positions_from_mask(inputs.attention_mask), max_new_tokens=NEW_TOKENS,
                                   do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        tokens, logits = greedy_without_cache(lm, inputs.inputs_embeds, inputs.attention_mask, NEW_TOKENS)
    assert logits[0].dtype == torch.bfloat16  # the LM really ran in bf16
    compared = 0
    for row in range(tokens.shape[0]):
        for step in range(NEW_TOKENS):
            reference = logits[step][row].float()
            scale = reference.abs().max()
            torch.testing.assert_close(cached.logits[step][row].float(), reference, rtol=0, atol=0.05 * scale)
            top2 = reference.topk(2).values
            if top2[0] - top2[1] <= 0.05 * scale:  # a near tie: either token is greedy; later steps differ
                break
            assert cached.sequences[row, step] == tokens[row, step], (row, step)
            compared += 1
    assert compared >= tokens.shape[0]  # not every step was a tie
    # the public API generates the same tokens as the cached run above
    assert torch.equal(model.generate(batch, max_new_tokens=NEW_TOKENS, pad_token_id=0), cached.sequences)


@pytest.mark.parametrize("connector, injection", PAIRS)
def test_every_pair_trains_and_generates_in_bf16(connector, injection, samples, tiny_llama_dir, tiny_dinov2_dir):
    built = build_seeded(recipe_for(connector, injection, tiny_llama_dir, tiny_dinov2_dir))
    model = built.model
    apply_trainable(model, ["bridge"])
    BF16.apply(model, training=True)
    frozen = dict(frozen_parameters(model))
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen.values())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in trainable.values())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = prompt_collator(built, with_answer=True)(samples)
    if trainable:  # zero vectors spliced into the sequence (zeros -> input_space) have nothing to train
        losses = train_two_steps(model, batch)
        assert all(torch.isfinite(torch.tensor(losses)))
        connector_names = [f"bridge.connector.{n}" for n, p in model.bridge.connector.named_parameters()
                           if p.requires_grad]
        for name in connector_names:
            grad = model.get_parameter(name).grad
            assert grad is not None and grad.dtype == torch.float32 and grad.abs().sum() > 0, name
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed <= set(trainable) and set(connector_names) <= changed
        assert all(p.dtype == torch.float32 for p in trainable.values())  # the optimizer kept them fp32
    model.eval()
    assert_generation_matches_recomputation(model, prompt_collator(built)(samples))


def test_lora_and_the_encoders_adapters_stay_fp32_beside_bf16_weights(samples, tiny_llama_dir, tiny_dinov2_dir):
    """MemVP with LoRA on the LM and bottleneck adapters inside the ViT: the encoder runs live (its adapters train),
    from fp32 pixels into a bf16 backbone."""
    recipe = recipe_for("mlp", "memory_space", tiny_llama_dir, tiny_dinov2_dir, "model.bridge=memvp",
                        "model.lora_rank=2", "model.vision_adapter_dim=4")
    built = build_seeded(recipe)
    model = built.model
    apply_trainable(model, ["bridge", "lora", "vision_adapters"])
    BF16.apply(model, training=True)
    dtypes = {}
    for name, parameter in model.named_parameters():
        dtypes.setdefault(group_of(name), set()).add(parameter.dtype)
    assert dtypes == {"lm": {torch.bfloat16}, "vision": {torch.bfloat16}, "lora": {torch.float32},
                      "vision_adapters": {torch.float32}, "bridge": {torch.float32}}
    batch = prompt_collator(built, with_answer=True)(samples)
    assert batch.images.pixel_values.dtype == torch.float32
    train_two_steps(model, batch)
    for group in ("lora", "vision_adapters", "bridge"):
        grads = [p.grad for n, p in model.named_parameters() if group_of(n) == group]
        assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads), group
        assert any(g.abs().sum() > 0 for g in grads), group
    model.eval()
    assert_generation_matches_recomputation(model, prompt_collator(built)(samples))


def test_a_trained_lm_stays_fp32_and_the_identity_ignores_the_precision(tiny_llama_dir, tiny_dinov2_dir):
    built = build_seeded(recipe_for("mlp", "input_space", tiny_llama_dir, tiny_dinov2_dir))
    model = built.model
    apply_trainable(model, ["bridge"])
    identity = model_identity(model, set(model.trainable_parameters()))
    assert store_frozen(model, torch.bfloat16) > 0
    # checkpoints fingerprint the weights as loaded: the same identity in bf16 as in fp32
    assert model_identity(model, set(model.trainable_parameters())) == identity
    other = build_seeded(recipe_for("mlp", "input_space", tiny_llama_dir, tiny_dinov2_dir)).model
    apply_trainable(other, ["bridge", "lm"])  # EVE's stages 2-3 train the LM itself
    store_frozen(other, torch.bfloat16)
    assert {p.dtype for n, p in other.named_parameters() if group_of(n) == "lm"} == {torch.float32}
    assert {p.dtype for n, p in other.named_parameters() if group_of(n) == "vision"} == {torch.bfloat16}


def test_the_bf16_head_gets_its_input_contiguous_once(tiny_llama_dir, tiny_dinov2_dir):
    """Generation hands the LM head the prompt's last position, a strided view: a bf16 Linear would multiply it
    through an expanded, copied weight (vlbridge.precision.contiguous_head_input)."""
    built = build_seeded(recipe_for("mlp", "input_space", tiny_llama_dir, tiny_dinov2_dir))
    BF16.apply(built.model)
    BF16.apply(built.model)  # a second call adds nothing
    head = built.model.language_model.model.get_output_embeddings()
    assert len(head._forward_pre_hooks) == 1
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(2, 5, head.in_features, dtype=torch.bfloat16)
    with torch.no_grad():
        out = head(hidden[:, -1:, :])
    assert seen == [True] and out.shape == (2, 1, head.out_features)
    torch.testing.assert_close(out, head(hidden[:, -1:, :].contiguous()))
