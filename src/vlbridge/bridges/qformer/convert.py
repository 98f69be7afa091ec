"""Weights in and out of the Q-Former: Hugging Face BLIP-2 checkpoints, and initialisation from a BERT.

Hugging Face layout (`Blip2Model`, `Blip2ForConditionalGeneration`, `Blip2ForImageTextRetrieval`):
`query_tokens`, `qformer.{layernorm,encoder}.*`, `embeddings.*` (text, retrieval model only),
`language_projection.*`, `vision_projection.*`, `text_projection.*`, `itm_head.*`. Ours is the same without
the `qformer.` prefix, so conversion is a prefix strip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.model import QFormer, build_qformer
from vlbridge.errors import ConfigError, DataError

DEC_TOKEN = "[DEC]"
_STAGE1_HEADS = ("vision_projection", "text_projection", "itm_head")


def qformer_state_dict_from_hf(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our `QFormer` keys from a Hugging Face BLIP-2 state dict (other keys are ignored)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("qformer."):
            out[key[len("qformer.") :]] = value
        elif key == "query_tokens" or key.startswith("embeddings."):
            out[key] = value
    if not out:
        raise ValueError("no Q-Former weights (query_tokens, qformer.*) in this state dict")
    return out


def _load(module: nn.Module, weights: Mapping[str, Tensor], what: str) -> list[str]:
    # Load what is there; unexpected keys or shapes are errors, missing keys are returned.
    own = module.state_dict()
    unexpected = sorted(set(weights) - set(own))
    if unexpected:
        raise ValueError(f"{what}: keys not in the model: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    for key, value in weights.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{what}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}")
    module.load_state_dict(weights, strict=False)
    return sorted(set(own) - set(weights))


def load_hf_blip2_state_dict(
    state_dict: Mapping[str, Tensor],
    qformer: QFormer,
    language_projection: nn.Linear | None = None,
    stage1: nn.Module | None = None,
) -> list[str]:
    """Copy a Hugging Face BLIP-2 state dict into our modules; returns the keys it had no value for
    (e.g. the text FFN and embeddings, absent from `Blip2ForConditionalGeneration`)."""
    missing = [f"qformer.{k}" for k in _load(qformer, qformer_state_dict_from_hf(state_dict), "Q-Former")]
    if language_projection is not None:
        weights = {k[len("language_projection.") :]: v for k, v in state_dict.items() if k.startswith("language_projection.")}
        missing += [f"language_projection.{k}" for k in _load(language_projection, weights, "language_projection")]
    if stage1 is not None:
        for name in _STAGE1_HEADS:
            weights = {k[len(name) + 1 :]: v for k, v in state_dict.items() if k.startswith(name + ".")}
            missing += [f"{name}.{k}" for k in _load(getattr(stage1, name), weights, name)]
    return missing


def to_hf_state_dict(
    qformer: QFormer, language_projection: nn.Linear | None = None, stage1: nn.Module | None = None
) -> dict[str, Tensor]:
    """Our weights under Hugging Face BLIP-2 names (the inverse of `load_hf_blip2_state_dict`)."""
    out = {}
    for key, value in qformer.state_dict().items():
        hf_key = key if key == "query_tokens" or key.startswith("embeddings.") else f"qformer.{key}"
        out[hf_key] = value
    if language_projection is not None:
        out.update({f"language_projection.{k}": v for k, v in language_projection.state_dict().items()})
    if stage1 is not None:
        for name in _STAGE1_HEADS:
            out.update({f"{name}.{k}": v for k, v in getattr(stage1, name).state_dict().items()})
    return out


def load_blip2_checkpoint(path: str | Path) -> tuple[QFormer, nn.Linear | None, QFormerConfig]:
    """Q-Former and language projection of a local Hugging Face BLIP-2 checkpoint folder (config.json +
    safetensors, sharded or not). Only those tensors are read, not the vision model or the LM."""
    from safetensors import safe_open

    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise DataError("no config.json in this BLIP-2 checkpoint folder", file=str(folder))
    from transformers import Blip2Config

    hf_config = Blip2Config.from_dict(json.loads(config_file.read_text()))
    config = QFormerConfig.from_hf(hf_config)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    wanted = ("query_tokens", "qformer.", "embeddings.", "language_projection.")
    state: dict[str, Tensor] = {}
    for name in files:
        if not (folder / name).is_file():
            raise DataError("safetensors file missing", file=str(folder / name))
        with safe_open(str(folder / name), framework="pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(wanted)})
    qformer = build_qformer(config)
    projection = None
    if "language_projection.weight" in state:
        out_features, in_features = state["language_projection.weight"].shape
        projection = nn.Linear(in_features, out_features)
    load_hf_blip2_state_dict(state, qformer, projection)
    return qformer, projection, config


# ---- initialisation from a pretrained BERT (BLIP-2: bert-base; here e.g. all-MiniLM-L6-v2) ----


def add_dec_token(tokenizer: Any) -> int:
    """Add `[DEC]` as the tokenizer's BOS token (LAVIS `init_tokenizer`) and return its id."""
    tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    return tokenizer.convert_tokens_to_ids(DEC_TOKEN)


def qformer_config_from_bert(
    bert_config: Any,
    *,
    encoder_hidden_size: int,
    vocab_size: int | None = None,
    num_query_tokens: int = 32,
    cross_attention_frequency: int = 2,
    embed_dim: int = 256,
) -> QFormerConfig:
    """A Q-Former config with the sizes of a Hugging Face `BertConfig` (vocab_size: e.g. len(tokenizer))."""
    return QFormerConfig(
        vocab_size=vocab_size or bert_config.vocab_size,
        hidden_size=bert_config.hidden_size,
        num_hidden_layers=bert_config.num_hidden_layers,
        num_attention_heads=bert_config.num_attention_heads,
        intermediate_size=bert_config.intermediate_size,
        hidden_act=bert_config.hidden_act,
        hidden_dropout_prob=bert_config.hidden_dropout_prob,
        attention_probs_dropout_prob=bert_config.attention_probs_dropout_prob,
        max_position_embeddings=bert_config.max_position_embeddings,
        initializer_range=bert_config.initializer_range,
        layer_norm_eps=bert_config.layer_norm_eps,
        pad_token_id=bert_config.pad_token_id if bert_config.pad_token_id is not None else 0,
        cross_attention_frequency=cross_attention_frequency,
        encoder_hidden_size=encoder_hidden_size,
        use_qformer_text_input=True,
        num_query_tokens=num_query_tokens,
        embed_dim=embed_dim,
    )


@torch.no_grad()
def init_from_bert(qformer: QFormer, bert: nn.Module | Mapping[str, Tensor], fold_token_type: bool = True) -> None:
    """Copy a Hugging Face `BertModel` (or its state dict, `bert.` prefix allowed) into `qformer`.

    Embeddings, embedding LayerNorm, self-attention and text FFN are copied; each query FFN becomes a copy of
    its layer's text FFN (BLIP-2); cross-attention and query tokens keep their fresh init. Word-embedding rows
    beyond BERT's vocabulary (`[DEC]`) start at the mean BERT word embedding (ours).
    fold_token_type: add BERT's token-type-0 embedding to the position embeddings, so the text path computes
    exactly what BERT computes (ours; LAVIS drops the token-type table, which shifts every input slightly).
    """
    state = bert.state_dict() if isinstance(bert, nn.Module) else dict(bert)
    state = {k[len("bert.") :] if k.startswith("bert.") else k: v for k, v in state.items()}
    if qformer.embeddings is None:
        raise ConfigError("init_from_bert needs a Q-Former with text input (use_qformer_text_input=True)")
    layers = qformer.encoder.layer
    bert_layers = len({k.split(".")[2] for k in state if k.startswith("encoder.layer.")})
    if bert_layers != len(layers):
        raise ConfigError(f"BERT has {bert_layers} layers, the Q-Former {len(layers)}")
    words = state["embeddings.word_embeddings.weight"]  # (V_bert, H)
    ours = qformer.embeddings.word_embeddings.weight
    if words.shape[1] != ours.shape[1] or words.shape[0] > ours.shape[0]:
        raise ConfigError(f"BERT word embeddings {tuple(words.shape)} do not fit the Q-Former's {tuple(ours.shape)}")
    ours[: words.shape[0]] = words
    ours[words.shape[0] :] = words.mean(dim=0)
    positions = state["embeddings.position_embeddings.weight"]
    if fold_token_type and "embeddings.token_type_embeddings.weight" in state:
        positions = positions + state["embeddings.token_type_embeddings.weight"][0]
    qformer.embeddings.position_embeddings.weight.copy_(positions)
    qformer.layernorm.weight.copy_(state["embeddings.LayerNorm.weight"])
    qformer.layernorm.bias.copy_(state["embeddings.LayerNorm.bias"])
    for i, layer in enumerate(layers):
        src = f"encoder.layer.{i}."
        pairs = {
            layer.attention.attention.query: "attention.self.query",
            layer.attention.attention.key: "attention.self.key",
            layer.attention.attention.value: "attention.self.value",
            layer.attention.output.dense: "attention.output.dense",
            layer.attention.output.LayerNorm: "attention.output.LayerNorm",
            layer.intermediate.dense: "intermediate.dense",
            layer.output.dense: "output.dense",
            layer.output.LayerNorm: "output.LayerNorm",
            layer.intermediate_query.dense: "intermediate.dense",  # query FFN = copy of the text FFN
            layer.output_query.dense: "output.dense",
            layer.output_query.LayerNorm: "output.LayerNorm",
        }
        for module, name in pairs.items():
            module.weight.copy_(state[src + name + ".weight"])
            module.bias.copy_(state[src + name + ".bias"])


def qformer_from_bert(
    bert: nn.Module,
    tokenizer: Any,
    *,
    encoder_hidden_size: int,
    num_query_tokens: int = 32,
    cross_attention_frequency: int = 2,
    embed_dim: int = 256,
) -> tuple[QFormer, QFormerConfig, int]:
    """BLIP-2's Q-Former initialisation: add `[DEC]` to `tokenizer` (in place), build a Q-Former with the BERT's
    sizes and the grown vocabulary, copy the BERT in. Returns (qformer, config, dec_token_id)."""
    dec_token_id = add_dec_token(tokenizer)
    config = qformer_config_from_bert(
        bert.config,
        encoder_hidden_size=encoder_hidden_size,
        vocab_size=max(len(tokenizer), bert.config.vocab_size),
        num_query_tokens=num_query_tokens,
        cross_attention_frequency=cross_attention_frequency,
        embed_dim=embed_dim,
    )
    qformer = build_qformer(config)
    init_from_bert(qformer, bert)
    return qformer, config, dec_token_id
