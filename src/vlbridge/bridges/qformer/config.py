"""Q-Former configuration, field for field the Hugging Face `Blip2QFormerConfig` plus the two BLIP-2 sizes
that `Blip2Config` keeps beside it (`num_query_tokens`, `image_text_hidden_size` = our `embed_dim`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from vlbridge.errors import ConfigError


@dataclass
class QFormerConfig:
    """Sizes of a BLIP-2 Q-Former. Defaults are BLIP-2's (bert-base, EVA ViT-g features)."""

    vocab_size: int = 30522
    """Text vocabulary size of the word embeddings (BERT's 30522; +1 once `[DEC]` is added)."""
    hidden_size: int = 768
    """Width of queries, text tokens and every layer."""
    num_hidden_layers: int = 12
    """Number of Q-Former layers."""
    num_attention_heads: int = 12
    """Heads of self- and cross-attention; must divide `hidden_size`."""
    intermediate_size: int = 3072
    """Hidden width of the query FFN and of the text FFN."""
    hidden_act: str = "gelu"
    """FFN and LM-head-transform activation: gelu (exact, BERT), gelu_new, gelu_pytorch_tanh, relu, silu, tanh."""
    hidden_dropout_prob: float = 0.1
    """Dropout after embeddings, attention outputs and FFN outputs."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities."""
    max_position_embeddings: int = 512
    """Longest text; only text tokens get position embeddings, queries none (BLIP-2)."""
    initializer_range: float = 0.02
    """Std of the normal init of new weights and of the query tokens (LAVIS `init_Qformer`)."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon (BERT's)."""
    pad_token_id: int = 0
    """Padding index of the word embeddings."""
    cross_attention_frequency: int = 2
    """Layer i has cross-attention to the image iff i % frequency == 0 (layers 0, 2, 4, ...)."""
    encoder_hidden_size: int = 1408
    """Width d_v of the image features the queries cross-attend to."""
    use_qformer_text_input: bool = True
    """With text input: word/position embeddings and a text FFN in every layer (needed by stage 1).
    Hugging Face's default is False (query-only, as in `Blip2ForConditionalGeneration`); ours is True."""
    num_query_tokens: int = 32
    """Number of learned query vectors, the number of visual tokens the Q-Former outputs."""
    embed_dim: int = 256
    """Width of the ITC projections (Hugging Face `Blip2Config.image_text_hidden_size`)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"QFormerConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.cross_attention_frequency < 1:
            raise ConfigError(f"QFormerConfig.cross_attention_frequency must be >= 1, got {self.cross_attention_frequency}")
        if self.num_query_tokens < 1:
            raise ConfigError(f"QFormerConfig.num_query_tokens must be >= 1, got {self.num_query_tokens}")

    @property
    def cross_attention_layers(self) -> list[int]:
        """Indices of the layers with cross-attention."""
        return [i for i in range(self.num_hidden_layers) if i % self.cross_attention_frequency == 0]

    @classmethod
    def from_hf(cls, hf_config: Any) -> "QFormerConfig":
        """From a Hugging Face `Blip2Config` (takes its Q-Former part and query count) or `Blip2QFormerConfig`."""
        qcfg = getattr(hf_config, "qformer_config", hf_config)
        names = {f.name for f in fields(cls)} - {"num_query_tokens", "embed_dim"}
        kwargs = {name: getattr(qcfg, name) for name in names if hasattr(qcfg, name)}
        if hasattr(hf_config, "num_query_tokens"):
            kwargs["num_query_tokens"] = hf_config.num_query_tokens
        if hasattr(hf_config, "image_text_hidden_size"):
            kwargs["embed_dim"] = hf_config.image_text_hidden_size
        return cls(**kwargs)

    def to_hf(self) -> Any:
        """The equivalent Hugging Face `Blip2QFormerConfig`."""
        from transformers import Blip2QFormerConfig

        names = {f.name for f in fields(self)} - {"num_query_tokens", "embed_dim"}
        return Blip2QFormerConfig(**{name: getattr(self, name) for name in names})
