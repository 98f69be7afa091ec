"""BLIP-2 stage 2 connector: ln_vision -> Q-Former queries -> Linear(H -> d) = Q soft tokens for the LM."""

from __future__ import annotations

from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector
from vlbridge.bridges.qformer.config import QFormerConfig
from vlbridge.bridges.qformer.model import QFormer, build_qformer


class QFormerConnector(Connector):
    """(B, n, d_v) image features -> (B, Q, d) visual vectors, Q learned queries whatever n is.

    ``qformer`` and ``ln_vision`` are shared with the stage-1 model (``stage1``: ITC/ITM/ITG heads, or None)
    when stage 1 is trained or its retrieval embeddings are wanted; the language projection is new in stage 2
    (BLIP-2 trains the whole Q-Former in stage 2 too).
    """

    def __init__(self, qformer: QFormer, language_projection: nn.Linear, ln_vision: nn.Module | None = None,
                 stage1: nn.Module | None = None):
        super().__init__()
        self.ln_vision = ln_vision if ln_vision is not None else nn.Identity()
        self.qformer = qformer
        self.language_projection = language_projection  # Hugging Face Blip2ForConditionalGeneration name
        self.stage1 = stage1  # registered after qformer / ln_vision, so the shared tensors keep those names
        self.input_width = qformer.encoder_hidden_size
        self.output_width = language_projection.out_features

    def num_output_tokens(self, num_inputs: int) -> int:
        """Visual tokens per image, whatever the image size: the number of learned queries."""
        return self.qformer.query_tokens.shape[1]

    def forward(self, features: Tensor, image_mask: Tensor | None = None) -> Tensor:
        queries = self.qformer(self.ln_vision(features), image_mask=image_mask).last_hidden_state  # (B, Q, H)
        return self.language_projection(queries.to(self.language_projection.weight.dtype))


def build_qformer_connector(
    config: QFormerConfig,
    lm_hidden_size: int,
    qformer: QFormer | None = None,
    ln_vision: nn.Module | None = None,
    use_ln_vision: bool = True,
) -> QFormerConnector:
    """A connector around `qformer` (a new random one if None) with a new Linear(H -> lm_hidden_size).
    A new LayerNorm(d_v) is made unless `ln_vision` is given or `use_ln_vision` is False."""
    if qformer is None:
        qformer = build_qformer(config)
    if ln_vision is None and use_ln_vision:
        ln_vision = nn.LayerNorm(config.encoder_hidden_size)
    return QFormerConnector(qformer, nn.Linear(config.hidden_size, lm_hidden_size), ln_vision)
