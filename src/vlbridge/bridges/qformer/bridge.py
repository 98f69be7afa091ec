"""The Q-Former as a registered connector (``qformer``) and BLIP-2 as a preset: the Q-Former connector with
input-space injection (32 soft tokens).

Stage 1 (representation learning, connector option `stage1: true`): the connector carries the stage-1 model as
`connector.stage1` (ITC projections, ITM head, temperature, ITG head around the connector's own Q-Former and
ln_vision), so the trainer's parameter group `bridge` trains, checkpoints and resumes it; the objective
`blip2_stage1` (:mod:`vlbridge.bridges.qformer.objective`) gives its ITC + ITM + ITG loss on captions tokenized by
`qformer_tokenizer()`. Stage 2 (`stage1: false`, the default): the connector (Q-Former + new language projection)
under the LM loss, usually initialised from a stage-1 run with `model.init_from`.

The Q-Former's text side (word/position embeddings and each layer's text FFN) is read only by stage 1; without
the stage-1 model it is dropped, as LAVIS's `Blip2OPT` drops it, so stage 2 trains exactly what it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.connector import QFormerConnector, build_qformer_connector
from vlbridge.bridges.qformer.convert import DEC_TOKEN, add_dec_token, load_blip2_checkpoint, qformer_from_bert
from vlbridge.bridges.qformer.model import QFormer
from vlbridge.bridges.qformer.stage1 import build_blip2_stage1
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.errors import ConfigError

INITS = ("minilm", "random")


@dataclass(frozen=True)
class QFormerOptions:
    """BLIP-2 Q-Former between vision features and an injection."""

    num_query_tokens: int = 32  # learned queries = visual vectors per image (BLIP-2: 32)
    init: str = "minilm"  # minilm: BERT init from the packaged all-MiniLM-L6-v2 (BLIP-2 style) | random
    cross_attention_frequency: int = 2  # cross-attention in layers 0, f, 2f, ... (BLIP-2: every other)
    ln_vision: bool = True  # LayerNorm on the vision features (BLIP-2); off for already normalised features
    checkpoint: str | None = None  # local Hugging Face BLIP-2 folder to load the Q-Former and projection from
    stage1: bool = False  # carry the stage-1 model (ITC/ITM/ITG heads) as connector.stage1; train.objective=blip2_stage1
    embed_dim: int = 256  # width of the ITC image and text embeddings (BLIP-2: 256); read only with stage1
    sizes: dict[str, Any] = field(default_factory=dict)  # init=random only: QFormerConfig sizes replacing MiniLM's,
    # e.g. {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128} (tests)


@dataclass(frozen=True)
class Blip2Options(QFormerOptions):
    """The BLIP-2 preset: the Q-Former's options, and which vision features it reads."""

    features: str = "grid"  # grid (patch features) | pooled (one global vector)


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


def drop_text_side(qformer: QFormer) -> None:
    """Remove what only text inputs read: word/position embeddings and every layer's text FFN (LAVIS `Blip2OPT`
    sets them to None for stage 2). The queries' computation is unchanged."""
    qformer.embeddings = None
    for layer in qformer.encoder.layer:
        if hasattr(layer, "intermediate"):
            del layer.intermediate, layer.output


def _new_connector(vision_dim: int, output_width: int, options: QFormerOptions) -> QFormerConnector:
    if options.sizes and (options.init != "random" or options.checkpoint is not None):
        raise ConfigError("qformer option sizes is for init=random (a checkpoint or MiniLM init has its own sizes)")
    if options.checkpoint is not None:
        qformer, projection, config = load_blip2_checkpoint(options.checkpoint)
        if config.encoder_hidden_size != vision_dim:
            raise ConfigError(
                f"the BLIP-2 checkpoint's Q-Former reads {config.encoder_hidden_size}-wide vision features, "
                f"the vision encoder gives {vision_dim}"
            )
        connector = build_qformer_connector(config, output_width, qformer, use_ln_vision=options.ln_vision)
        if projection is not None and projection.out_features == output_width:
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
        return build_qformer_connector(config, output_width, qformer, use_ln_vision=options.ln_vision)
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
            raise ConfigError(f"unknown Q-Former size(s) {unknown} in qformer option sizes; valid: {valid}")
        config = replace(config, **options.sizes)
        return build_qformer_connector(config, output_width, use_ln_vision=options.ln_vision)
    raise ConfigError(f"unknown Q-Former init {options.init!r}; valid: {list(INITS)}")


def build_qformer_bridge_connector(input_width: int, output_width: int, options: QFormerOptions) -> QFormerConnector:
    """Registry builder: the Q-Former connector, with the stage-1 model (`connector.stage1`) if asked."""
    connector = _new_connector(input_width, output_width, options)
    qformer = connector.qformer
    if not options.stage1:
        drop_text_side(qformer)
        return connector
    if qformer.embeddings is None:
        raise ConfigError("stage1: true needs a Q-Former with text input; this checkpoint's has none")
    tokenizer, dec_token_id = qformer_tokenizer()
    if qformer.embeddings.word_embeddings.num_embeddings < len(tokenizer):
        raise ConfigError(f"the Q-Former's {qformer.embeddings.word_embeddings.num_embeddings} word embeddings do not "
                          f"cover its text tokenizer's {len(tokenizer)} tokens ({DEC_TOKEN} included)")
    connector.stage1 = build_blip2_stage1(qformer, dec_token_id, embed_dim=options.embed_dim,
                                          ln_vision=connector.ln_vision)
    return connector


def blip2_spec(options: Blip2Options) -> BridgeSpec:
    """The preset: the Q-Former connector with these options, input-space injection."""
    if options.stage1 and options.features != "grid":
        raise ConfigError(f"BLIP-2 stage 1 reads the grid features; features={options.features!r} is for stage 2 only")
    qformer = {f.name: getattr(options, f.name) for f in fields(QFormerOptions)}
    return BridgeSpec("qformer", qformer, "input_space", {}, features=options.features)
