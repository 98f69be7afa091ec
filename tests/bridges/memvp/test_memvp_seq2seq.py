"""MemVP and LLaVA on encoder-decoder LMs (T5 relu, flan-T5 gated-gelu, BART): memory in the encoder's
and/or decoder's FFNs, the paper's literal concatenation on non-gated FFNs, the LM intact, and batched
generation through Hugging Face ``generate`` on encoder input embeddings."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_memvp import HAS_IMAGE, PROMPTS, VISION_DIM, make_batch, randomise_memory, tiny_llama
from tiny_seq2seq import KINDS, tiny_seq2seq
from torch.nn import functional as F

from vlbridge.bridges.registry import build_preset
from vlbridge.errors import ConfigError
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
from vlbridge.text.tokenize import IGNORE
from vlbridge.vlm import VisionLanguageModel

NEW_TOKENS = 5
ANSWERS = [[30, 31, 32], [33], [34, 35]]


def seq2seq_model(kind: str, bridge: str = "memvp", **options) -> VisionLanguageModel:
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    if bridge == "memvp":
        options.setdefault("num_slots", 12)
    return VisionLanguageModel(lm, build_preset(bridge, VISION_DIM, lm, options)).eval()


def batch_with_targets(side: str = "right", seed: int = 0, answers=ANSWERS):
    """PROMPTS as encoder input and ``answers`` as decoder targets (IGNORE-padded on the right)."""
    batch = make_batch(PROMPTS, HAS_IMAGE, side=side, seed=seed)
    width = max(len(a) for a in answers)
    targets = torch.tensor([a + [IGNORE] * (width - len(a)) for a in answers])
    return replace(batch, targets=targets)


def logits(model, batch, *, bare: bool = False):
    """Decoder logits (B, T, V) for ``batch.targets``, with the memory or (``bare``) without it."""
    lm = model.language_model
    visual = model.visual_vectors(batch)
    decoder_inputs = lm.decoder_inputs(batch.targets)
    with model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image,
                                       None, "right") as inputs:
        if not bare:
            return lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                            decoder_input_ids=decoder_inputs).logits
    return lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                    decoder_input_ids=decoder_inputs).logits


# --- which FFNs get the memory ------------------------------------------------------------------------
@pytest.mark.parametrize("memory_in, sites", [("both", (0, 1, 2, 3)), ("encoder", (0, 1)), ("decoder", (2, 3))])
def test_memory_in_chooses_the_stacks(memory_in, sites):
    injection = seq2seq_model("t5", memory_in=memory_in).bridge.injection
    assert injection.layers == sites
    assert injection.layers_in("encoder") == tuple(i for i in sites if i < 2)
    assert injection.layers_in("decoder") == tuple(i - 2 for i in sites if i >= 2)


def test_layers_are_indexed_within_each_stack():
    injection = seq2seq_model("bart", layers=[-1]).bridge.injection
    assert injection.layers == (1, 3) and injection.layers_in("encoder") == injection.layers_in("decoder") == (1,)
    with pytest.raises(ConfigError, match="memory layer 2 does not exist; the LM's encoder has 2 layers"):
        seq2seq_model("bart", layers=[2])


def test_memory_in_decoder_leaves_the_encoder_bare():
    model = seq2seq_model("t5", memory_in="decoder", lam=1.0, scale=1.0)
    randomise_memory(model)
    batch = batch_with_targets()
    lm, injection = model.language_model, model.bridge.injection
    visual = model.visual_vectors(batch)
    with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image, None, "right") as inputs:
        encoded = lm(inputs.inputs_embeds, inputs.attention_mask, output_hidden_states=True).hidden_states[-1]
    bare = lm(inputs.inputs_embeds, inputs.attention_mask, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(encoded, bare)
    assert not torch.allclose(logits(model, batch), logits(model, batch, bare=True))


def test_memory_in_errors():
    with pytest.raises(ConfigError, match="the LM has no encoder to put the memory in; its stacks: \\['decoder'\\]"):
        lm = tiny_llama()
        VisionLanguageModel(lm, build_preset("memvp", VISION_DIM, lm, {"memory_in": "encoder"}))
    with pytest.raises(ConfigError, match="unknown memory_in 'cross'; valid"):
        seq2seq_model("t5", memory_in="cross")


# --- the maths on each FFN kind -------------------------------------------------------------------------
def memory_and_input(model):
    batch = batch_with_targets()
    visual = model.visual_vectors(batch)
    keys, values = model.bridge.injection.memory(visual, batch.has_image)  # (B, M, d)
    return batch, visual, keys, values, torch.randn(3, 5, 32)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_non_gated_ffn_is_literal_concatenation(kind):
    """act(x [W1; K]^T + [b1; 0]) [W2; V] + b2 in every memory FFN of both stacks (eval mode)."""
    model = seq2seq_model(kind, lam=0.5, projector_layers=1)
    randomise_memory(model)
    injection, lm = model.bridge.injection, model.language_model
    assert (injection.scale, injection.dropout) == (1.0, 0.0)
    batch, visual, keys, values, x = memory_and_input(model)
    for site in lm.ffn_sites():
        first, second = (site.input.wi, site.input.wo) if kind == "t5" else (site.input, site.output)
        b1 = first.bias if first.bias is not None else torch.zeros(first.out_features)
        b2 = second.bias if second.bias is not None else 0.0
        expected = torch.stack([
            site.activation(x[b] @ torch.cat([first.weight, keys[b]]).T + torch.cat([b1, torch.zeros(12)]))
            @ torch.cat([second.weight.T, values[b]]) + b2 for b in range(3)])
        with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
            got = site.output(site.activation(site.input(x))) if kind == "bart" else site.input(x)
        torch.testing.assert_close(got, expected)


def test_gated_t5_ffn_gets_the_codes_parallel_branch():
    """flan-T5's gated-gelu FFN, like LLaMA's SwiGLU: FFN(x) + 0.1 * silu(x K^T) V, dropout 0.1 in training."""
    model = seq2seq_model("flan-t5", lam=0.5)
    randomise_memory(model)
    injection, lm = model.bridge.injection, model.language_model
    assert (injection.scale, injection.dropout, injection.activation) == (0.1, 0.1, "silu")
    batch, visual, keys, values, x = memory_and_input(model)
    ffn = lm.ffn_sites()[2].input  # decoder layer 0
    plain = ffn.wo(ffn.act(ffn.wi_0(x)) * ffn.wi_1(x))
    with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image):
        got = ffn(x)
    torch.testing.assert_close(got, plain + 0.1 * (F.silu(x @ keys.transpose(1, 2)) @ values))


# --- the LM stays what it was ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_pretrained_names_kept_and_only_the_bridge_trains(kind):
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    before = list(lm.model.state_dict())
    model = VisionLanguageModel(lm, build_preset("memvp", VISION_DIM, lm, {"num_slots": 12, "projector_layers": 1}))
    assert list(lm.model.state_dict()) == before
    assert [k for k in model.state_dict() if k.startswith("language_model.")] == [f"language_model.model.{k}" for k in before]
    model.train()
    out = model(batch_with_targets())
    (out.loss_sum / out.num_tokens).backward()
    trainable = set(model.trainable_parameters())
    assert trainable == {"bridge.connector.net.0.weight", "bridge.connector.net.0.bias", "bridge.injection.p_k",
                         "bridge.injection.p_v"}
    for name, p in model.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) if name in trainable else p.grad is None, name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("option", ["lam", "scale"])
def test_zero_p_v_and_lambda_or_scale_is_the_bare_lm(kind, option):
    model = seq2seq_model(kind, **{option: 0.0})
    randomise_memory(model)
    with torch.no_grad():
        model.bridge.injection.p_v.zero_()
    batch = batch_with_targets()
    torch.testing.assert_close(logits(model, batch), logits(model, batch, bare=True), rtol=0, atol=1e-5)
    model.bridge.injection.lam = model.bridge.injection.scale = 1.0  # and the memory matters once they are back
    assert not torch.allclose(logits(model, batch), logits(model, batch, bare=True), atol=1e-3)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_text_only_row_ignores_the_other_rows_images(kind):
    model = seq2seq_model(kind, lam=1.0)
    randomise_memory(model)
    a, b = logits(model, batch_with_targets(seed=0)), logits(model, batch_with_targets(seed=1))
    torch.testing.assert_close(a[1], b[1])  # row 1 has no image: only p_k / p_v in its memory
    assert not torch.allclose(a[0], b[0])


def test_loss_is_hugging_faces_on_the_injected_inputs():
    model = seq2seq_model("bart", "llava")
    batch = batch_with_targets()
    ours = model(batch)
    lm = model.language_model
    visual = model.visual_vectors(batch)
    with model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image,
                                       None, "right") as inputs:
        # the visual tokens sit in the encoder's input, right-aligned
        assert inputs.visual_positions.sum(1).tolist() == [9, 0, 9] and inputs.attention_mask[:, 0].all()
        reference = lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                             labels=batch.targets).loss
    torch.testing.assert_close(ours.loss_sum / ours.num_tokens, reference)


# --- generation -----------------------------------------------------------------------------------------
def generation_model(kind: str, bridge: str) -> VisionLanguageModel:
    torch.manual_seed(0)
    model = seq2seq_model(kind, bridge, **({"lam": 1.0, "scale": 1.0} if bridge == "memvp" else {}))
    randomise_memory(model)
    return model


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_cached_generation_equals_full_recomputation(kind):
    model = generation_model(kind, "memvp")
    batch = make_batch(PROMPTS, HAS_IMAGE, side="left")
    lm = model.language_model
    lm.model.generation_config.eos_token_id = None  # always NEW_TOKENS steps
    visual = model.visual_vectors(batch)
    with model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image,
                                       None, "right") as inputs:
        cached = lm.model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                   max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=lm.config.pad_token_id,
                                   output_logits=True, return_dict_in_generate=True)
        # no cache: the encoder and the whole decoder prefix again for every new token
        decoder = torch.full((3, 1), lm.config.decoder_start_token_id)
        steps = []
        for _ in range(NEW_TOKENS):
            step = lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                            decoder_input_ids=decoder, use_cache=False).logits[:, -1]  # (B, V)
            steps.append(step)
            decoder = torch.cat([decoder, step.argmax(-1, keepdim=True)], 1)
    assert torch.equal(cached.sequences, decoder)
    for step in range(NEW_TOKENS):
        torch.testing.assert_close(cached.logits[step], steps[step], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind, bridge", [("t5", "memvp"), ("t5", "llava"), ("bart", "memvp"), ("bart", "llava"),
                                          ("flan-t5", "memvp")])
def test_batched_greedy_equals_one_by_one(kind, bridge):
    model = generation_model(kind, bridge)
    config = model.language_model.config
    tokens = dict(max_new_tokens=NEW_TOKENS, pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
    full = make_batch(PROMPTS, HAS_IMAGE)  # the same image features row by row
    singles = []
    for k, prompt in enumerate(PROMPTS):
        one = make_batch([prompt], [HAS_IMAGE[k]], side="left")
        if HAS_IMAGE[k]:
            row = int(full.has_image[:k].sum())
            one.images.grid = full.images.grid[row:row + 1]
        singles.append(model.generate(one, **tokens)[0])
    for side in ("left", "right"):  # the encoder input is right-aligned whatever the collator did
        batched = model.generate(make_batch(PROMPTS, HAS_IMAGE, side=side), **tokens)
        assert batched.shape[0] == 3 and batched.shape[1] <= NEW_TOKENS
        for k, single in enumerate(singles):
            assert torch.equal(batched[k, :single.shape[0]], single), (side, k)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_the_image_changes_the_answer_and_sampling_is_seeded(kind):
    """Guards the tests above against a memory that does nothing."""
    model = generation_model(kind, "memvp")
    config = model.language_model.config
    tokens = dict(max_new_tokens=NEW_TOKENS, pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id)
    a = model.generate(make_batch(PROMPTS, HAS_IMAGE, side="left", seed=0), **tokens)
    b = model.generate(make_batch(PROMPTS, HAS_IMAGE, side="left", seed=5), **tokens)
    assert a.shape == b.shape == (3, NEW_TOKENS)
    assert not torch.equal(a[[0, 2]], b[[0, 2]])
    assert torch.equal(a[1], b[1])  # the text-only row
    run = lambda: model.generate(make_batch(PROMPTS, HAS_IMAGE, side="left"), do_sample=True,  # noqa: E731
                                 temperature=1.5, top_p=0.9, seed=3, **tokens)
    assert torch.equal(run(), run())
