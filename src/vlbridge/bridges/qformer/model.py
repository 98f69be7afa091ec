"""The BLIP-2 Q-Former (Li et al. 2023): a BERT encoder whose input is [32 learned queries; text tokens].

Queries and text share each layer's self-attention (who sees whom is the attention mask, see `masks.py`);
only the queries cross-attend to the image features, in every `cross_attention_frequency`-th layer; queries
and text have separate FFNs. Parameter names are those of Hugging Face `Blip2QFormerModel` (`layernorm`,
`encoder.layer.{i}.attention.attention.query`, ..., `intermediate_query`, `output_query`), with the text
embeddings under `embeddings.*` as in `Blip2ForImageTextRetrieval` and `query_tokens` beside them, so a
Hugging Face state dict loads by stripping the `qformer.` prefix (`convert.py`).
Attention runs through `torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.errors import ConfigError

KeyValue = tuple[Tensor, Tensor]  # (B, heads, T, head_dim) each

# `hidden_act` names as in Hugging Face's ACT2FN (BERT checkpoints use "gelu", the exact erf form)
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown hidden_act {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class QFormerMultiHeadAttention(nn.Module):
    """Multi-head attention; keys/values from `kv_states` (cross-attention) or the input (self-attention)."""

    def __init__(self, hidden_size: int, num_heads: int, kv_size: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(kv_size, hidden_size)
        self.value = nn.Linear(kv_size, hidden_size)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, H) -> (B, heads, T, head_dim)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, x: Tensor, kv_states: Tensor, mask: Tensor | None, past: KeyValue | None = None
    ) -> tuple[Tensor, KeyValue]:
        # x: (B, S, H); kv_states: (B, T, kv); mask: bool (B, 1, S, P+T), True = may attend
        q = self._heads(self.query(x))
        k = self._heads(self.key(kv_states))
        v = self._heads(self.value(kv_states))
        if past is not None:  # keys/values of a prefix computed earlier (the queries, for ITG)
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).flatten(2), (k, v)  # (B, S, H)


class QFormerSelfOutput(nn.Module):
    """Output projection, dropout, residual and post-LayerNorm (BERT)."""

    def __init__(self, hidden_size: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class QFormerAttention(nn.Module):
    """Attention block: `attention` (q/k/v) + `output` (dense, LayerNorm), Hugging Face names."""

    def __init__(self, hidden_size: int, num_heads: int, kv_size: int, eps: float, dropout: float, attn_dropout: float):
        super().__init__()
        self.attention = QFormerMultiHeadAttention(hidden_size, num_heads, kv_size, attn_dropout)
        self.output = QFormerSelfOutput(hidden_size, eps, dropout)

    def forward(
        self, x: Tensor, kv_states: Tensor, mask: Tensor | None, past: KeyValue | None = None
    ) -> tuple[Tensor, KeyValue]:
        out, present = self.attention(x, kv_states, mask, past)
        return self.output(out, x), present


class QFormerIntermediate(nn.Module):
    """First FFN half: dense to the intermediate width and the activation."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(x))


class QFormerOutput(nn.Module):
    """Second FFN half: dense back, dropout, residual, LayerNorm."""

    def __init__(self, hidden_size: int, intermediate_size: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(intermediate_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class QFormerLayer(nn.Module):
    """Shared self-attention over [queries; text] -> cross-attention (queries only, some layers) -> FFNs."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        act: str,
        eps: float,
        dropout: float,
        attn_dropout: float,
        cross_attention_size: int | None,
        text_ffn: bool,
    ):
        super().__init__()
        self.attention = QFormerAttention(hidden_size, num_heads, hidden_size, eps, dropout, attn_dropout)
        self.crossattention = (
            QFormerAttention(hidden_size, num_heads, cross_attention_size, eps, dropout, attn_dropout)
            if cross_attention_size is not None
            else None
        )
        self.has_cross_attention = cross_attention_size is not None
        if text_ffn:
            self.intermediate = QFormerIntermediate(hidden_size, intermediate_size, act)
            self.output = QFormerOutput(hidden_size, intermediate_size, eps, dropout)
        self.intermediate_query = QFormerIntermediate(hidden_size, intermediate_size, act)
        self.output_query = QFormerOutput(hidden_size, intermediate_size, eps, dropout)

    def forward(
        self,
        x: Tensor,
        query_length: int,
        mask: Tensor | None,
        image: Tensor | None,
        image_mask: Tensor | None,
        past: KeyValue | None = None,
    ) -> tuple[Tensor, KeyValue]:
        # x: (B, Q+L, H) with the Q queries first
        h, present = self.attention(x, x, mask, past)
        parts = []
        if query_length > 0:
            queries = h[:, :query_length]
            if self.crossattention is not None:
                if image is None:
                    raise ValueError("image features must be given when queries pass a cross-attention layer")
                queries = self.crossattention(queries, image, image_mask)[0]
            parts.append(self.output_query(self.intermediate_query(queries), queries))
        if h.shape[1] > query_length:
            if not hasattr(self, "intermediate"):
                raise ValueError("this Q-Former has no text FFN (use_qformer_text_input=False): give no text")
            text = h[:, query_length:]
            parts.append(self.output(self.intermediate(text), text))
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)), present


class QFormerEncoder(nn.Module):
    """The layer stack (`encoder.layer.{i}` as in Hugging Face)."""

    def __init__(self, layers: list[QFormerLayer]):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class QFormerTextEmbeddings(nn.Module):
    """Word + absolute position embeddings of the text (`Blip2TextEmbeddings`); queries get none."""

    def __init__(self, vocab_size: int, hidden_size: int, max_positions: int, pad_token_id: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:  # (B, L) -> (B, L, H)
        if input_ids.shape[1] > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {input_ids.shape[1]} tokens is longer than max_position_embeddings "
                f"({self.position_embeddings.num_embeddings})"
            )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)


@dataclass
class QFormerOutputs:
    last_hidden_state: Tensor
    """(B, Q+L, H): query outputs first (if queries were run), then text outputs."""
    past_key_values: tuple[KeyValue, ...] | None
    """Per layer, the self-attention keys/values of this input (when `use_cache`); for ITG's text pass."""


class QFormer(nn.Module):
    """The Q-Former with its query tokens and (optionally) text embeddings.

    Queries are run iff `image_features` is given: image only = the visual tokens Z; text only = the text
    encoder (ITC); both = the joint encoder (ITM, or ITG with its mask); text + `past_key_values` of an
    image-only pass = ITG's decoder pass without recomputing the queries (LAVIS does the same).
    """

    def __init__(
        self,
        *,
        num_query_tokens: int,
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        hidden_act: str,
        hidden_dropout_prob: float,
        attention_probs_dropout_prob: float,
        layer_norm_eps: float,
        cross_attention_frequency: int,
        encoder_hidden_size: int,
        use_text_input: bool,
        vocab_size: int,
        max_position_embeddings: int,
        pad_token_id: int,
        initializer_range: float = 0.02,
    ):
        super().__init__()
        # sizes that modules built around the Q-Former (stage-1 heads, connectors) need
        self.hidden_size = hidden_size
        self.num_query_tokens = num_query_tokens
        self.encoder_hidden_size = encoder_hidden_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_tokens, hidden_size))
        self.embeddings = (
            QFormerTextEmbeddings(vocab_size, hidden_size, max_position_embeddings, pad_token_id)
            if use_text_input
            else None
        )
        self.layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)  # BERT's embedding LayerNorm
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.encoder = QFormerEncoder(
            [
                QFormerLayer(
                    hidden_size,
                    num_attention_heads,
                    intermediate_size,
                    hidden_act,
                    layer_norm_eps,
                    hidden_dropout_prob,
                    attention_probs_dropout_prob,
                    encoder_hidden_size if i % cross_attention_frequency == 0 else None,
                    use_text_input,
                )
                for i in range(num_hidden_layers)
            ]
        )
        self.apply(self._init_weights)
        nn.init.normal_(self.query_tokens, std=initializer_range)  # LAVIS init_Qformer

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation (LAVIS BertPreTrainedModel._init_weights)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.initializer_range)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        image_features: Tensor | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_mask: Tensor | None = None,
        past_key_values: tuple[KeyValue, ...] | None = None,
        use_cache: bool = False,
    ) -> QFormerOutputs:
        """Run the Q-Former.

        image_features: (B, n, d_v) or None (then no queries); input_ids: (B, L) or None.
        attention_mask: who may attend to whom over the S = Q+L inputs (and a P-long prefix of
            `past_key_values` before them): bool (B, S, P+S), True = may attend; or (B, P+S) key padding
            mask (1 = keep), seen by every row; None = everyone sees everyone.
        image_mask: (B, n) key padding mask of the image features (1 = keep), None = all valid.
        """
        parts = []
        if image_features is not None:
            parts.append(self.query_tokens.expand(image_features.shape[0], -1, -1))
        if input_ids is not None:
            if self.embeddings is None:
                raise ValueError("this Q-Former has no text embeddings (use_qformer_text_input=False)")
            parts.append(self.embeddings(input_ids))
        if not parts:
            raise ValueError("give image_features, input_ids or both")
        # always a new tensor: a bare view of `query_tokens` made under no_grad (requires_grad without grad_fn)
        # stops torch's module tracker, and with it the FLOP counter of the run report
        x = torch.cat(parts, dim=1)
        query_length = self.num_query_tokens if image_features is not None else 0
        if image_features is not None:
            image_features = image_features.to(x.dtype)
        return self.encode(x, query_length, attention_mask, image_features, image_mask, past_key_values, use_cache)

    def encode(
        self,
        embeddings: Tensor,
        query_length: int,
        attention_mask: Tensor | None = None,
        image_features: Tensor | None = None,
        image_mask: Tensor | None = None,
        past_key_values: tuple[KeyValue, ...] | None = None,
        use_cache: bool = False,
    ) -> QFormerOutputs:
        """The layers on given input embeddings (B, S, H) whose first `query_length` rows are queries:
        the computation of Hugging Face's `Blip2QFormerModel.forward(query_embeds=embeddings, ...)`."""
        x = self.dropout(self.layernorm(embeddings))
        mask = _expand_mask(attention_mask, x.shape[1])
        cross_mask = None if image_mask is None else image_mask.bool()[:, None, None, :]  # (B, 1, 1, n)
        presents = []
        for i, layer in enumerate(self.encoder.layer):
            past = past_key_values[i] if past_key_values is not None else None
            x, present = layer(x, query_length, mask, image_features, cross_mask, past)
            if use_cache:
                presents.append(present)
        return QFormerOutputs(x, tuple(presents) if use_cache else None)


def _expand_mask(mask: Tensor | None, num_rows: int) -> Tensor | None:
    """A bool (B, 1, S, T) SDPA mask from a (B, T) key mask or a (B, S, T) mask."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return mask.bool()[:, None, None, :]
    if mask.dim() == 3:
        if mask.shape[1] != num_rows:
            raise ValueError(f"attention_mask has {mask.shape[1]} rows, the input has {num_rows} tokens")
        return mask.bool()[:, None]
    raise ValueError(f"attention_mask must be (B, T) or (B, S, T), got shape {tuple(mask.shape)}")


def build_qformer(config: QFormerConfig) -> QFormer:
    """A randomly initialised Q-Former (BERT init, query tokens ~ N(0, initializer_range^2))."""
    return QFormer(
        num_query_tokens=config.num_query_tokens,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        cross_attention_frequency=config.cross_attention_frequency,
        encoder_hidden_size=config.encoder_hidden_size,
        use_text_input=config.use_qformer_text_input,
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        pad_token_id=config.pad_token_id,
        initializer_range=config.initializer_range,
    )
