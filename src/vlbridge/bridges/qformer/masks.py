"""The three stage-1 self-attention masks of BLIP-2 (paper Fig. 2) over the inputs [Q queries; L text tokens].

All are bool (B, Q+L, Q+L), True = the row may attend to the column; padded text columns are never seen.
- ITC (uni-modal): queries see queries, text sees text. Stage 1 runs it as two separate passes (queries with
  the image, text alone), which is the same computation with less work; the mask documents and tests that.
- ITM (bi-directional): everyone sees everyone.
- ITG (multi-modal causal): queries see only queries; text token i sees all queries and text tokens <= i.
  LAVIS runs it as a text pass on the cached keys/values of the ITC query pass; same result.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _blocks(num_queries: int, text_mask: Tensor) -> tuple[Tensor, Tensor]:
    # key-validity (B, 1, Q+L) and a (B, Q+L) "is a query" flag
    batch, length = text_mask.shape
    keys = torch.cat([text_mask.new_ones(batch, num_queries), text_mask], dim=1).bool()[:, None, :]
    is_query = torch.arange(num_queries + length, device=text_mask.device) < num_queries
    return keys, is_query


def itc_mask(num_queries: int, text_mask: Tensor) -> Tensor:
    """Uni-modal mask: no attention between queries and text. text_mask: (B, L), 1 = real token."""
    keys, is_query = _blocks(num_queries, text_mask)
    same_modality = is_query[:, None] == is_query[None, :]  # (S, S)
    return same_modality[None] & keys


def itm_mask(num_queries: int, text_mask: Tensor) -> Tensor:
    """Bi-directional mask: queries and text attend to each other fully (padding excluded)."""
    keys, is_query = _blocks(num_queries, text_mask)
    return keys.expand(-1, is_query.numel(), -1).clone()


def itg_mask(num_queries: int, text_mask: Tensor) -> Tensor:
    """Multi-modal causal mask: queries see queries; text sees all queries and earlier (and its own) text."""
    keys, is_query = _blocks(num_queries, text_mask)
    pos = torch.arange(is_query.numel(), device=text_mask.device)
    causal_text = (~is_query[:, None]) & (pos[None, :] <= pos[:, None])  # text row, column not in its future
    allowed = is_query[None, :] | causal_text  # every row sees the queries; text rows see earlier text
    return allowed[None] & keys


def itg_text_rows(num_queries: int, text_mask: Tensor) -> Tensor:
    """The text rows of `itg_mask` (B, L, Q+L): what ITG's text pass attends to over [cached queries; text]."""
    return itg_mask(num_queries, text_mask)[:, num_queries:]
