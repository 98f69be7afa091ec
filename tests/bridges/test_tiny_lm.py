"""PaLM2-VAdapter's tiny-LM adapter (connector ``tiny_lm``) and its progressive alignment on tiny models: LM
truncation keeping the final norm and head, the adapter's shapes, options and FLOPs, and stage 2 starting from a
stage-1 captioning run with the tiny LM's and the resampler's weights carried over exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from vlbridge.bridges.connectors.perceiver import PerceiverOptions, build_perceiver
from vlbridge.bridges.connectors.tiny_lm import TinyLMConnector, TinyLMOptions, build_tiny_lm
from vlbridge.errors import ConfigError
from vlbridge.flops import count_flops
from vlbridge.models.truncate import keep_first_layers
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded
from vlbridge.train.checkpoint import initialise_from
from vlbridge.train.trainer import train

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory, smol_tokenizer):
    """A 3-layer LLaMA (48 wide) with SmolLM2's tokenizer: the tiny LM, narrower than the 64-wide large one."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=smol_tokenizer.eos_token_id, pad_token_id=smol_tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("tiny_lm")
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def adapter(tiny_lm_dir, **options) -> TinyLMConnector:
    torch.manual_seed(0)
    defaults = dict(language_model=str(tiny_lm_dir), layers=2, num_latents=5, heads=2, head_dim=8)
    return build_tiny_lm(32, 64, TinyLMOptions(**(defaults | options)))


def test_truncation_keeps_the_first_layers_the_final_norm_and_the_head(tiny_lm_dir):
    full = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    truncated = keep_first_layers(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), 2)
    assert len(truncated.model.layers) == 2 and truncated.config.num_hidden_layers == 2
    ids = torch.tensor([[5, 17, 300, 2]])
    with torch.no_grad():
        after_two = full(ids, output_hidden_states=True).hidden_states[2]  # after layer 2, before the final norm
        expected = full.lm_head(full.model.norm(after_two))
        torch.testing.assert_close(truncated(ids).logits, expected)
    for bad in (0, 4, -1, True, 1.5):
        with pytest.raises(ConfigError, match="model.language_model_layers"):
            keep_first_layers(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), bad)


def test_the_adapter_turns_features_or_clip_frames_into_num_latents_soft_tokens(tiny_lm_dir):
    connector = adapter(tiny_lm_dir, max_frames=3)
    assert connector.takes_frames and connector.num_output_tokens(16) == 5
    assert connector(torch.randn(2, 16, 32)).shape == (2, 5, 64)
    assert connector(torch.randn(2, 3, 16, 32)).shape == (2, 5, 64)  # a clip of 3 frames
    assert connector.max_frames == 3 and connector.frames_refused(3) is None
    assert "max_frames=3" in connector.frames_refused(4)
    assert "no frame embeddings" in adapter(tiny_lm_dir).frames_refused(2)
    # the tiny LM's first 2 layers and final norm, no token embeddings (fed inputs_embeds), no head
    assert len(connector.tiny_lm.layers) == 2 and connector.tiny_lm.embed_tokens is None
    names = {n for n, _ in connector.named_parameters()}
    assert not any("embed_tokens" in n or "lm_head" in n for n in names)
    assert "tiny_lm.norm.weight" in names
    assert all(p.requires_grad for p in connector.parameters())  # everything in the adapter trains
    # the pretrained tiny LM's layers, unchanged
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).model.state_dict()
    for name, tensor in connector.tiny_lm.state_dict().items():
        torch.testing.assert_close(tensor, pretrained[name], rtol=0, atol=0)
    # FC_in (32 -> 48) into the resampler at the tiny LM's width; FC_out (48 -> 64) to the large LM
    assert connector.perceiver.input_projection.weight.shape == (48, 32)
    assert connector.output_projection.weight.shape == (64, 48)


def test_causal_and_bidirectional_attention_over_the_latents(tiny_lm_dir):
    # one tiny-LM layer: then the last latent reads the same inputs under either mask
    causal, bidirectional = adapter(tiny_lm_dir, layers=1), adapter(tiny_lm_dir, layers=1, attention="bidirectional")
    bidirectional.load_state_dict(causal.state_dict())
    features = torch.randn(1, 16, 32)
    with torch.no_grad():
        a, b = causal(features), bidirectional(features)
        latents = causal.perceiver(features)
        hidden = causal.tiny_lm(inputs_embeds=latents).last_hidden_state  # the tiny LM's own (causal) mask
        torch.testing.assert_close(a, causal.output_projection(hidden))
    torch.testing.assert_close(a[:, -1], b[:, -1])  # the last latent sees all of them either way
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first sees the others only when bidirectional


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_closed_form_flops_equal_torch_counter(tiny_lm_dir, attention):
    connector = adapter(tiny_lm_dir, attention=attention)
    example = torch.zeros(1, 16, 32)
    with torch.no_grad():
        measured = count_flops(lambda: connector(example))
    assert connector.flops(16) == measured


@pytest.mark.parametrize("option, value", [("layers", 0), ("layers", 9), ("attention", "sideways"),
                                           ("num_latents", 0), ("resampler_depth", -1)])
def test_bad_options_name_themselves(tiny_lm_dir, option, value):
    with pytest.raises(ConfigError, match=option):
        adapter(tiny_lm_dir, **{option: value})


def test_a_tiny_lm_of_another_width_than_the_resampler_is_refused(tiny_lm_dir):
    tiny_lm = adapter(tiny_lm_dir).tiny_lm
    perceiver = build_perceiver(32, 40, PerceiverOptions(depth=1, num_latents=2, heads=2, head_dim=8))
    with pytest.raises(ConfigError, match="40-wide latents, the tiny LM reads 48-wide"):
        TinyLMConnector(perceiver, tiny_lm, torch.nn.Linear(48, 64))
    with pytest.raises(ConfigError, match="FC_out reads 56-wide vectors, the tiny LM gives 48-wide"):
        TinyLMConnector(build_perceiver(32, 48, PerceiverOptions(depth=1)), tiny_lm, torch.nn.Linear(56, 64))


def test_an_encoder_decoder_tiny_lm_is_refused(tiny_seq2seq_dirs):
    with pytest.raises(ConfigError, match="decoder-only"):
        build_tiny_lm(32, 64, TinyLMOptions(language_model=str(tiny_seq2seq_dirs["t5"])))


@pytest.fixture
def stages(tmp_path, shapes_dir, tiny_llama_dir, tiny_lm_dir, tiny_dinov2_dir, monkeypatch):
    """recipe(stage, run folder, *overrides): PaLM2-VAdapter's two stages on tiny models. Stage 1: the tiny LM,
    truncated to 2 layers, as the decoder of a captioning model behind a 1-layer resampler (both trained); stage 2:
    the adapter built from it in front of the frozen 64-wide LLaMA."""
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    common = [f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1", "model.bridge=null",
              "model.injection=input_space", f"data.train={shapes_dir / 'train_caption.json'}",
              f"data.val={shapes_dir / 'val_caption.json'}", f"data.image_root={shapes_dir}", "train.steps=3",
              "train.batch_size=2", "train.eval_samples=2", "train.eval_every=0", "train.lr=1e-2",
              "eval.max_new_tokens=2"]
    stage1 = [f"model.language_model={tiny_lm_dir}", "model.language_model_layers=2", "model.connector=perceiver",
              "model.connector_options={depth: 1, num_latents: 5, heads: 2, head_dim: 8, width: 48}",
              "train.trainable=[bridge, lm]"]
    stage2 = [f"model.language_model={tiny_llama_dir}", "model.connector=tiny_lm",
              f"model.connector_options={{language_model: {tiny_lm_dir}, layers: 2, num_latents: 5, heads: 2, "
              "head_dim: 8}", "train.trainable=[bridge]"]
    return lambda stage, run, *extra: load_recipe(None, [*common, *(stage1 if stage == 1 else stage2),
                                                         f"train.output_dir={run}", *extra])


def test_stage_two_starts_from_stage_one_s_tiny_lm_and_resampler(stages, tmp_path):
    stage1 = train(stages(1, tmp_path / "stage1"), **QUIET)["built"].model
    assert len(stage1.language_model.layers) == 2
    recipe = stages(2, tmp_path / "stage2", f"model.init_from={tmp_path / 'stage1'}")
    model = build_seeded(recipe).model
    result = initialise_from(model, recipe.model.init_from, log=lambda *_: None)
    connector = model.bridge.connector
    trained_lm = stage1.language_model.base.state_dict()
    for name, tensor in connector.tiny_lm.state_dict().items():  # stage 2 at step 0 = stage 1's trained tiny LM
        assert torch.equal(tensor, trained_lm[name]), name
    for name, tensor in connector.perceiver.state_dict().items():
        assert torch.equal(tensor, stage1.bridge.connector.state_dict()[name]), name
    assert result["not_in_checkpoint"] == ["bridge.connector.output_projection.bias",
                                           "bridge.connector.output_projection.weight"]  # FC_out is new
    # the decoder's embeddings stay out of the large LM (they share its tensors' names)
    assert result["not_in_model"] == ["stage1/language_model.model.model.embed_tokens.weight"]
    assert not any(name.startswith("language_model.") for name in result["loaded"])
    # and it trains in front of the frozen large LM, from the stage-1 run
    run = train(stages(2, tmp_path / "stage2", f"model.init_from={tmp_path / 'stage1'}"), **QUIET)
    assert run["report"]["init_from"]["loaded"] == result["loaded"]


def test_stage_two_refuses_a_run_that_is_not_a_stage_one_run(stages, tmp_path):
    other = tmp_path / "llava"
    train(stages(1, other, "model.connector=mlp", "model.connector_options={}", "train.trainable=[bridge]"), **QUIET)
    recipe = stages(2, tmp_path / "stage2", f"model.init_from={other}")
    model = build_seeded(recipe).model
    with pytest.raises(ConfigError, match=rf"model.init_from={other}: .*connector 'mlp'"):
        initialise_from(model, other, log=lambda *_: None)
    frozen_lm = tmp_path / "frozen_lm"  # a stage-1 layout whose LM did not train
    train(stages(1, frozen_lm, "train.trainable=[bridge]"), **QUIET)
    with pytest.raises(ConfigError, match="did not train its LM"):
        initialise_from(model, frozen_lm, log=lambda *_: None)
    shallower = build_seeded(stages(2, tmp_path / "s", "model.connector_options={language_model: "
                                    f"{recipe.model.connector_options['language_model']}, layers: 1, num_latents: 5, "
                                    "heads: 2, head_dim: 8}")).model
    with pytest.raises(ConfigError, match="an LM of 2 layers .* this tiny LM has 1"):
        initialise_from(shallower, frozen_lm, log=lambda *_: None)


def test_with_prompt_prefix_the_soft_tokens_read_the_question_through_frozen_pretrained_embeddings(tiny_lm_dir,
                                                                                                  smol_tokenizer):
    connector = adapter(tiny_lm_dir, prompt="prefix")
    assert connector.reads_prompt and not adapter(tiny_lm_dir).reads_prompt
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_lm_dir).model.embed_tokens.weight
    assert torch.equal(connector.prompt_embeddings, pretrained)  # the pretrained table, as a buffer
    assert connector.tiny_lm.embed_tokens is None and not any("embed" in n for n, _ in connector.named_parameters())
    assert "prompt_embeddings" not in connector.state_dict()  # never saved: rebuilt from the tiny LM
    features = torch.randn(1, 16, 32)
    ids = torch.tensor([[11, 12, 13]])
    with torch.no_grad():
        out = connector(features, ids, torch.ones_like(ids))
        assert out.shape == (1, 5, 64)
        # the prompt's tokens before the latents, the tiny LM's own causal mask: the latents' outputs
        latents = connector.perceiver(features)
        embedded = pretrained[ids]  # (1, 3, 48)
        hidden = connector.tiny_lm(inputs_embeds=torch.cat([embedded, latents], 1)).last_hidden_state
        torch.testing.assert_close(out, connector.output_projection(hidden[:, 3:]))
        other = connector(features, torch.tensor([[11, 12, 99]]), torch.ones_like(ids))
        assert not torch.allclose(out, other)  # another question, other soft tokens
        # left padding of a shorter prompt in the batch changes nothing
        padded = connector(features, torch.tensor([[0, 0, 11, 12, 13]]), torch.tensor([[0, 0, 1, 1, 1]]))
        torch.testing.assert_close(padded, out, atol=1e-5, rtol=1e-5)
        measured = count_flops(lambda: connector(features, ids, torch.ones_like(ids)))
    assert connector.flops(16, prompt_tokens=3) == measured
    with pytest.raises(ValueError, match="reads a prompt exactly when"):
        connector(features)
    with pytest.raises(ConfigError, match="prompt"):
        adapter(tiny_lm_dir, prompt="suffix")
    connector.check_tokenizer(smol_tokenizer, "the large LM")  # the same vocabulary
    from transformers import AutoTokenizer
    other_tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    other_tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ConfigError, match="tokenizer differs"):
        connector.check_tokenizer(other_tokenizer, "the large LM")


def test_the_prompt_the_tiny_lm_reads_is_the_same_in_training_and_in_generation(stages, tmp_path):
    from vlbridge.batch import Collator
    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.text.tokenize import IMAGE_TOKEN_ID
    from vlbridge.vlm import prompt_tokens

    options = stages(2, tmp_path / "run").model.connector_options | {"prompt": "prefix"}
    recipe = stages(2, tmp_path / "run", "train.steps=2", f"model.connector_options={options}")
    built = build_seeded(recipe)
    samples = read_llava_json(recipe.data.train, image_root=recipe.data.image_root)[:3]
    make = lambda with_answer: Collator(built.tokenizer, built.chat_format, lambda s: None,  # noqa: E731
                                        image_tokens=built.image_tokens, with_answer=with_answer)
    training, generation = make(True)(samples), make(False)(samples)
    train_ids, train_mask = prompt_tokens(training)
    gen_ids, gen_mask = prompt_tokens(generation)
    assert torch.equal(train_ids, gen_ids) and torch.equal(train_mask, gen_mask)
    assert not (train_ids == IMAGE_TOKEN_ID).any()
    for row, sample in enumerate(samples):  # the question is in it, the answer is not
        text = built.tokenizer.decode(train_ids[row][train_mask[row].bool()])
        question, answer = sample.turns[0].text, sample.turns[1].text
        assert question.replace("<image>", "").strip() in text
        assert answer not in text
    for precision in ("fp32", "bf16"):  # and it trains and evaluates with the prompt in the tiny LM
        run = train(stages(2, tmp_path / precision, "train.steps=2", f"model.connector_options={options}",
                           f"model.precision={precision}"), **QUIET)
        connector = run["built"].model.bridge.connector
        assert connector.reads_prompt and run["history"][-1]["loss"] > 0
        # no training group reaches the prompt's embeddings; the trained tiny LM stays fp32 in either precision
        assert all("embed" not in name for name in run["built"].model.trainable_parameters())
        assert connector.tiny_lm.layers[0].mlp.up_proj.weight.dtype == torch.float32
