"""Image-text retrieval with a stage-1 Q-Former: ITC scores, optional ITM re-ranking, Recall@K both ways.

As LAVIS `compute_sim_matrix`: ITC score = max over queries of the cosine similarity; re-ranking replaces
each row's top-k by ITC + ITM match logit and everything else by -100. Recall@K both ways:
:func:`vlbridge.metrics.retrieval.recall_at_k`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlbridge.bridges.qformer.stage1 import Blip2Stage1, max_over_queries
from vlbridge.metrics.retrieval import recall_at_k


@torch.no_grad()
def embed_images(model: Blip2Stage1, image_features: Tensor, batch_size: int = 64) -> Tensor:
    """(N, n, d_v) -> (N, Q, E) normalised query embeddings."""
    return torch.cat([model.embed_images(chunk) for chunk in image_features.split(batch_size)])


@torch.no_grad()
def embed_texts(model: Blip2Stage1, text_ids: Tensor, text_mask: Tensor, batch_size: int = 256) -> Tensor:
    """(M, L) -> (M, E) normalised [CLS] embeddings."""
    return torch.cat(
        [model.embed_texts(i, m) for i, m in zip(text_ids.split(batch_size), text_mask.split(batch_size))]
    )


@torch.no_grad()
def itc_scores(image_embeds: Tensor, text_embeds: Tensor, batch_size: int = 256) -> Tensor:
    """(N, Q, E), (M, E) -> (N, M) max-over-queries cosine similarity."""
    return torch.cat([max_over_queries(chunk, text_embeds) for chunk in image_embeds.split(batch_size)])


@torch.no_grad()
def itm_rerank(
    model: Blip2Stage1,
    scores: Tensor,
    image_features: Tensor,
    text_ids: Tensor,
    text_mask: Tensor,
    k: int = 128,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Re-rank the top-k of every row of the ITC `scores` (N, M) by ITC + ITM match logit, both ways.
    Returns (scores_i2t (N, M), scores_t2i (M, N)); entries outside a row's top-k are -100 (LAVIS)."""

    def rerank(sim: Tensor, image_of_pair, text_of_pair) -> Tensor:
        kk = min(k, sim.shape[1])
        top_sim, top_idx = sim.topk(kk, dim=1)  # (R, kk)
        rows = torch.arange(sim.shape[0], device=sim.device)[:, None].expand(-1, kk)
        pairs_row, pairs_col = rows.reshape(-1), top_idx.reshape(-1)
        itm = []
        for r, c in zip(pairs_row.split(batch_size), pairs_col.split(batch_size)):
            img, txt = image_of_pair(r, c), text_of_pair(r, c)
            itm.append(model.itm_scores(image_features[img], text_ids[txt], text_mask[txt]).float())
        out = torch.full_like(sim, -100.0)
        out[pairs_row, pairs_col] = torch.cat(itm) + top_sim.reshape(-1)
        return out

    i2t = rerank(scores, lambda r, c: r, lambda r, c: c)
    t2i = rerank(scores.t(), lambda r, c: c, lambda r, c: r)
    return i2t, t2i


@torch.no_grad()
def evaluate_retrieval(
    model: Blip2Stage1,
    image_features: Tensor,
    text_ids: Tensor,
    text_mask: Tensor,
    text_image: Tensor,
    rerank_k: int | None = None,
) -> dict[str, float]:
    """Recall@1/5/10 both ways from ITC scores, or from ITM-re-ranked top-`rerank_k` scores if given."""
    was_training = model.training
    model.eval()
    try:
        scores = itc_scores(embed_images(model, image_features), embed_texts(model, text_ids, text_mask))
        if rerank_k is None:
            return recall_at_k(scores, text_image.tolist())
        i2t, t2i = itm_rerank(model, scores, image_features, text_ids, text_mask, k=rerank_k)
        return recall_at_k(i2t, text_image.tolist(), similarity_t2i=t2i)
    finally:
        model.train(was_training)
