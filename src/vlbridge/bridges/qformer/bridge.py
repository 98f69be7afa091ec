"""BLIP-2 as a bridge preset: the Q-Former connector with input-space injection (32 soft tokens).

Stage 1 (ITC + ITM + ITG) trains the same Q-Former and ln_vision through `build_blip2_stage1(connector.qformer,
dec_token_id, ln_vision=connector.ln_vision)` with text from `qformer_tokenizer()`; stage 2 trains the
connector (Q-Former + new language projection) under the LM loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlbridge.bridges.bridge import Bridge
from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.connector import QFormerConnector, build_qformer_connector
from vlbridge.bridges.qformer.convert import add_dec_token, load_blip2_checkpoint, qformer_from_bert
from vlbridge.errors import ConfigError

INITS = ("minilm", "random")


@dataclass(frozen=True)
class Blip2Options:
    """BLIP-2 Q-Former between the vision grid and the LM's input embeddings."""

    num_query_tokens: int = 32  # learned queries = visual tokens given to the LM (BLIP-2: 32)
    init: str = "minilm"  # minilm: BERT init from the packaged all-MiniLM-L6-v2 (BLIP-2 style) | random
    cross_attention_frequency: int = 2  # cross-attention in layers 0, f, 2f, ... (BLIP-2: every other)
    ln_vision: bool = True  # LayerNorm on the vision features (BLIP-2); off for already normalised features
    checkpoint: str | None = None  # local Hugging Face BLIP-2 folder to load the Q-Former and projection from
    features: str = "grid"  # grid (patch features) | pooled (one global vector)


def qformer_tokenizer() -> tuple[Any, int]:
    """The Q-Former's text tokenizer (all-MiniLM-L6-v2's BERT WordPiece) with `[DEC]` added, and its id."""
    from vlbridge.weights.minilm import load_minilm

    _, tokenizer = load_minilm()
    return tokenizer, add_dec_token(tokenizer)


def build_blip2_connector(vision_dim: int, lm_hidden_size: int, options: Blip2Options) -> QFormerConnector:
    if options.checkpoint is not None:
        qformer, projection, config = load_blip2_checkpoint(options.checkpoint)
        if config.encoder_hidden_size != vision_dim:
            raise ConfigError(
                f"the BLIP-2 checkpoint's Q-Former reads {config.encoder_hidden_size}-wide vision features, "
                f"the vision encoder gives {vision_dim}"
            )
        connector = build_qformer_connector(config, lm_hidden_size, qformer, use_ln_vision=options.ln_vision)
        if projection is not None and projection.out_features == lm_hidden_size:
            connector.language_projection = projection
        return connector
    if options.init == "minilm":
        from vlbridge.weights.minilm import load_minilm

        bert, tokenizer = load_minilm()
        qformer, config, _ = qformer_from_bert(
            bert,
            tokenizer,
            encoder_hidden_size=vision_dim,
            num_query_tokens=options.num_query_tokens,
            cross_attention_frequency=options.cross_attention_frequency,
        )
        return build_qformer_connector(config, lm_hidden_size, qformer, use_ln_vision=options.ln_vision)
    if options.init == "random":
        # MiniLM's sizes and vocabulary (+[DEC]) so the same tokenizer serves stage 1
        config = QFormerConfig(
            vocab_size=30523, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
            encoder_hidden_size=vision_dim, num_query_tokens=options.num_query_tokens,
            cross_attention_frequency=options.cross_attention_frequency,
        )
        return build_qformer_connector(config, lm_hidden_size, use_ln_vision=options.ln_vision)
    raise ConfigError(f"unknown Q-Former init {options.init!r}; valid: {list(INITS)}")


def build_blip2(vision_dim: int, language_model, options: Blip2Options) -> Bridge:
    """Registry builder: Q-Former connector + input-space injection."""
    connector = build_blip2_connector(vision_dim, language_model.hidden_size, options)
    return Bridge(connector, InputSpaceInjection(), options.features)
