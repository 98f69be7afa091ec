"""Encoder-decoder LMs (T5, flan-T5, BART): loading from a folder, FFN sites, and the loss against Hugging
Face's own loss with ``labels``."""

from __future__ import annotations

import pytest
import torch
from tiny_seq2seq import KINDS, VOCAB, tiny_seq2seq

from vlbridge.build import wrap_language_model
from vlbridge.errors import ConfigError
from vlbridge.models.language_model import LanguageModel
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel, resolve
from vlbridge.text.tokenize import IGNORE
from vlbridge.weights import load_language_model


def encoder_inputs_and_targets(lm):
    """Three rows of encoder embeddings (right-padded) and decoder targets (IGNORE-padded)."""
    g = torch.Generator().manual_seed(0)
    embeds = lm.embed(torch.randint(3, VOCAB, (3, 7), generator=g))  # (3, 7, d)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    targets = torch.randint(3, VOCAB, (3, 4), generator=g)
    targets[1, 3:] = IGNORE
    targets[2, 2:] = IGNORE
    return embeds, mask, targets


@pytest.mark.parametrize("kind", KINDS)
def test_a_local_folder_loads_as_a_frozen_seq2seq_lm(kind, tiny_seq2seq_dirs):
    module, tokenizer = load_language_model(str(tiny_seq2seq_dirs[kind]))
    lm = wrap_language_model(module)
    assert isinstance(lm, Seq2SeqLanguageModel) and lm.is_encoder_decoder
    assert lm.layout.gated == (kind == "flan-t5")
    assert lm.hidden_size == 32 and tokenizer.pad_token is not None
    assert not any(p.requires_grad for p in lm.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_ffn_sites_cover_both_stacks(kind):
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    sites = lm.ffn_sites()
    assert [(s.stack, s.index) for s in sites] == [("encoder", 0), ("encoder", 1), ("decoder", 0), ("decoder", 1)]
    encoder_layer, decoder_layer = lm.stack("encoder")[1], lm.stack("decoder")[1]
    if kind == "bart":  # no FFN module: the input enters fc1, the output leaves fc2
        assert sites[3].input is decoder_layer.fc1 and sites[3].output is decoder_layer.fc2
        assert sites[3].activation is decoder_layer.activation_fn
    else:  # the block's last sub-layer: layer[1] in the encoder, layer[2] (after cross-attention) in the decoder
        assert sites[1].input is sites[1].output is encoder_layer.layer[1].DenseReluDense
        assert sites[3].input is sites[3].output is decoder_layer.layer[2].DenseReluDense
        assert sites[3].activation is decoder_layer.layer[2].DenseReluDense.act


@pytest.mark.parametrize("kind", KINDS)
def test_loss_equals_hugging_face_loss_with_labels(kind):
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    embeds, mask, targets = encoder_inputs_and_targets(lm)
    ours = lm(embeds, mask, targets)
    reference = lm.model(inputs_embeds=embeds, attention_mask=mask, labels=targets).loss
    assert int(ours.num_tokens) == 4 + 3 + 2
    torch.testing.assert_close(ours.loss_sum / ours.num_tokens, reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(lm.decoder_inputs(targets), lm.model.prepare_decoder_input_ids_from_labels(labels=targets))


@pytest.mark.parametrize("kind", KINDS)
def test_without_targets_only_the_encoder_runs(kind):
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    embeds, mask, _ = encoder_inputs_and_targets(lm)
    out = lm(embeds, mask, output_hidden_states=True)
    assert int(out.num_tokens) == 0 and len(out.hidden_states) == 3  # embeddings + 2 encoder layers
    reference = lm.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out.hidden_states[-1], reference)


def test_embed_carries_barts_embedding_scale():
    lm = Seq2SeqLanguageModel(tiny_seq2seq("bart"))
    assert lm.config.scale_embedding
    ids = torch.randint(3, VOCAB, (2, 5))
    encoder = lm.model.get_encoder()
    torch.testing.assert_close(encoder(inputs_embeds=lm.embed(ids)).last_hidden_state,
                               encoder(input_ids=ids).last_hidden_state)


def test_causal_lms_keep_their_wrapper(tiny_gpt2_dir):
    module, _ = load_language_model(str(tiny_gpt2_dir))
    lm = wrap_language_model(module)
    assert type(lm) is LanguageModel and not lm.is_encoder_decoder
    assert [(s.stack, s.index) for s in lm.ffn_sites()] == [("decoder", 0), ("decoder", 1)]


def test_unknown_architecture_and_paths():
    from transformers import PretrainedConfig

    config = PretrainedConfig()
    config.model_type = "pegasus"
    with pytest.raises(ConfigError, match="known: \\['bart', 't5'\\]"):
        Seq2SeqLanguageModel(type("Stub", (torch.nn.Module,), {"config": config})())
    layers = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()])
    assert resolve(torch.nn.ModuleDict({"layers": layers}), "layers.-1") is layers[1]
