"""BLIP-2 as a bridge preset: the Q-Former connector with input-space injection (32 soft tokens).

Stage 1 (representation learning, `bridge_options.stage1: true`): the bridge carries the stage-1 model as
`bridge.stage1` (ITC projections, ITM head, temperature, ITG head around the connector's own Q-Former and
ln_vision), so the trainer's parameter group `bridge` trains, checkpoints and resumes it; the recipe's
`train.objective: blip2_stage1` gives its ITC + ITM + ITG loss on captions tokenized by `qformer_tokenizer()`.
Stage 2 (`stage1: false`, the default): the connector (Q-Former + new language projection) under the LM loss,
usually initialised from a stage-1 run with `model.init_from`.

The Q-Former's text side (word/position embeddings and each layer's text FFN) is read only by stage 1; without
the stage-1 model it is dropped, as LAVIS's `Blip2OPT` drops it, so stage 2 trains exactly what it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from vlbridge.bridges.bridge import Bridge
from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.connector import QFormerConnector, build_qformer_connector
from vlbridge.bridges.qformer.convert import DEC_TOKEN, add_dec_token, load_blip2_checkpoint, qformer_from_bert
from vlbridge.bridges.qformer.model import QFormer
from vlbridge.bridges.qformer.stage1 import Blip2Stage1, build_blip2_stage1
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
    stage1: bool = False  # carry the stage-1 model (ITC/ITM/ITG heads) as bridge.stage1; train.objective=blip2_stage1
    embed_dim: int = 256  # width of the ITC image and text embeddings (BLIP-2: 256); read only with stage1
    sizes: dict[str, Any] = field(default_factory=dict)  # init=random only: QFormerConfig sizes replacing MiniLM's,
    # e.g. {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128} (tests)

# Set by other options (or fixed by the tokenizer), so not changeable through `sizes`.
FIXED_SIZES = ("vocab_size", "encoder_hidden_size", "num_query_tokens", "cross_attention_frequency", "embed_dim",
               "use_qformer_text_input")


def qformer_tokenizer() -> tuple[Any, int]:
    """The Q-Former's text tokenizer (all-MiniLM-L6-v2's BERT WordPiece) with `[DEC]` added, and its id."""
    from transformers import AutoTokenizer

    from vlbridge.weights.minilm import CONFIG_NAME
    from vlbridge.weights.packages import MINILM, package_file

    tokenizer = AutoTokenizer.from_pretrained(package_file(MINILM, CONFIG_NAME).parent, local_files_only=True)
    return tokenizer, add_dec_token(tokenizer)


class Blip2Bridge(Bridge):
    """Q-Former connector + input-space injection; `stage1` (or None) shares the connector's Q-Former and
    ln_vision and gives the stage-1 losses and the retrieval embeddings (`embed_images`, `embed_texts`)."""

    def __init__(self, connector: QFormerConnector, features: str = "grid", stage1: Blip2Stage1 | None = None):
        super().__init__(connector, InputSpaceInjection(), features)
        self.stage1 = stage1


def drop_text_side(qformer: QFormer) -> None:
    """Remove what only text inputs read: word/position embeddings and every layer's text FFN (LAVIS `Blip2OPT`
    sets them to None for stage 2). The queries' computation is unchanged."""
    qformer.embeddings = None
    for layer in qformer.encoder.layer:
        if hasattr(layer, "intermediate"):
            del layer.intermediate, layer.output


def build_blip2_connector(vision_dim: int, lm_hidden_size: int, options: Blip2Options) -> QFormerConnector:
    if options.sizes and (options.init != "random" or options.checkpoint is not None):
        raise ConfigError("bridge option sizes is for init=random (a checkpoint or MiniLM init has its own sizes)")
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
        valid = sorted({f.name for f in fields(QFormerConfig)} - set(FIXED_SIZES))
        unknown = sorted(set(options.sizes) - set(valid))
        if unknown:
            raise ConfigError(f"unknown Q-Former size(s) {unknown} in bridge option sizes; valid: {valid}")
        config = replace(config, **options.sizes)
        return build_qformer_connector(config, lm_hidden_size, use_ln_vision=options.ln_vision)
    raise ConfigError(f"unknown Q-Former init {options.init!r}; valid: {list(INITS)}")


def build_blip2(vision_dim: int, language_model, options: Blip2Options) -> Blip2Bridge:
    """Registry builder: Q-Former connector + input-space injection, with the stage-1 model if asked."""
    connector = build_blip2_connector(vision_dim, language_model.hidden_size, options)
    qformer = connector.qformer
    if not options.stage1:
        drop_text_side(qformer)
        return Blip2Bridge(connector, options.features)
    if options.features != "grid":
        raise ConfigError(f"BLIP-2 stage 1 reads the grid features; features={options.features!r} is for stage 2 only")
    if qformer.embeddings is None:
        raise ConfigError("stage1: true needs a Q-Former with text input; this checkpoint's has none")
    tokenizer, dec_token_id = qformer_tokenizer()
    if qformer.embeddings.word_embeddings.num_embeddings < len(tokenizer):
        raise ConfigError(f"the Q-Former's {qformer.embeddings.word_embeddings.num_embeddings} word embeddings do not "
                          f"cover its text tokenizer's {len(tokenizer)} tokens ({DEC_TOKEN} included)")
    stage1 = build_blip2_stage1(qformer, dec_token_id, embed_dim=options.embed_dim, ln_vision=connector.ln_vision)
    return Blip2Bridge(connector, options.features, stage1)
