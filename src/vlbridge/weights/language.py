"""Language models by registry name (packaged weights) or from a local Hugging Face folder.

A folder whose ``config.json`` says ``is_encoder_decoder`` (T5, flan-T5, BART) loads as a seq2seq LM
(``AutoModelForSeq2SeqLM``), any other as a causal LM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)

from vlbridge.errors import ConfigError
from vlbridge.weights.safe_folder import from_safetensors
from vlbridge.weights.smollm2 import load_smollm2

LANGUAGE_MODELS: dict[str, Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase]]] = {
    "smollm2-135m": load_smollm2,
}


def load_language_folder(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any causal or encoder-decoder LM saved as a Hugging Face folder, with its tokenizer (no network access;
    safetensors weights only, never a pickle)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} is not a Hugging Face model folder: {folder / 'config.json'} is missing")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = from_safetensors(auto, folder, config=config, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # batched training and generation need a pad token; GPT-2-style tokenizers have none
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_language_model(source: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A registry name (``"smollm2-135m"``) or a local Hugging Face folder (causal or seq2seq LM), in float32."""
    if source in LANGUAGE_MODELS:
        return LANGUAGE_MODELS[source]()
    if Path(source).expanduser().is_dir():
        return load_language_folder(Path(source).expanduser())
    raise ConfigError(
        f"unknown language model {source!r}; valid names: {sorted(LANGUAGE_MODELS)}, "
        f"or the path of a local Hugging Face folder holding a causal or encoder-decoder language model"
    )
