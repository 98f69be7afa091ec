"""load_language_model: registry names and local Hugging Face folders."""

from __future__ import annotations

import pytest
import torch

from vlbridge.errors import ConfigError
from vlbridge.weights import LANGUAGE_MODELS, load_language_model


def _word_tokenizer(folder, **special):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "the", "cat", "sat", "on", "mat"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **special)
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_local_llama_folder_loads_with_tokenizer(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=7, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, eos_token_id=1)
    reference = LlamaForCausalLM(config)
    reference.save_pretrained(tmp_path)
    _word_tokenizer(tmp_path, eos_token="</s>")  # no pad token, like GPT-2 / LLaMA tokenizers

    model, tokenizer = load_language_model(str(tmp_path))
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    ids = tokenizer("the cat sat", return_tensors="pt").input_ids
    assert ids.tolist() == [[2, 3, 4]]
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert tokenizer.pad_token == "</s>"  # batched generation needs one: falls back to EOS


def test_unknown_language_model_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_language_model("llama-7b")
    assert all(name in str(error.value) for name in LANGUAGE_MODELS) and "local Hugging Face folder" in str(error.value)
    with pytest.raises(ConfigError, match="config.json"):
        from vlbridge.weights.language import load_language_folder

        load_language_folder(tmp_path)
