"""Image-text retrieval with a stage-1 Q-Former: ITC scores, optional ITM re-ranking, Recall@K both ways.

As LAVIS `compute_sim_matrix`: ITC score = max over queries of the cosine similarity; re-ranking replaces
each row's top-k by ITC + ITM match logit and everything else by -100; image->text counts the best-ranked of
an image's captions, text->image the rank of the caption's image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlbridge.bridges.qformer.stage1 import Blip2Stage1, max_over_queries


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


def _ranks(scores: Tensor, relevant: Tensor) -> Tensor:
    """0-based rank of the best relevant column in each row under a stable descending sort.
    scores, relevant: (R, C); every row needs a relevant column."""
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant item")
    best = scores.masked_fill(~relevant, float("-inf")).max(dim=1, keepdim=True).values  # (R, 1)
    columns = torch.arange(scores.shape[1], device=scores.device)
    first_best = torch.where(relevant & (scores == best), columns, scores.shape[1]).min(dim=1, keepdim=True).values
    ahead = (scores > best) | ((scores == best) & (columns < first_best))
    return ahead.sum(dim=1)


def recall_at_k(
    scores_i2t: Tensor, text_image: Tensor, scores_t2i: Tensor | None = None, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K in percent both ways. scores_i2t: (N images, M texts); text_image: (M,) index of each text's
    image; scores_t2i: (M, N), default scores_i2t transposed. Keys i2t_r{k}, t2i_r{k}, mean."""
    num_images, num_texts = scores_i2t.shape
    if text_image.shape != (num_texts,):
        raise ValueError(f"text_image must have shape ({num_texts},), got {tuple(text_image.shape)}")
    if scores_t2i is None:
        scores_t2i = scores_i2t.t()
    text_image = text_image.to(scores_i2t.device)
    relevant = text_image[None, :] == torch.arange(num_images, device=scores_i2t.device)[:, None]  # (N, M)
    i2t = _ranks(scores_i2t.float(), relevant)
    t2i = _ranks(scores_t2i.float(), relevant.t())
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * (ranks < k).float().mean().item()
    out["mean"] = sum(out.values()) / len(out)
    return out


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
            return recall_at_k(scores, text_image)
        i2t, t2i = itm_rerank(model, scores, image_features, text_ids, text_mask, k=rerank_k)
        return recall_at_k(i2t, text_image, t2i)
    finally:
        model.train(was_training)
