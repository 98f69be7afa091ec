"""Recall@K for image-text retrieval in both directions (the ALBEF/BLIP ``itm_eval`` convention).

Given a similarity matrix ``S`` (num_images, num_texts) and, for each text, the index of its image:

- image -> text: for image i, sort all texts by ``S[i]`` (descending); the image's rank is the best
  (smallest) rank among *its own* captions; R@K = share of images with rank < K;
- text -> image: for text t, sort all images by ``S[:, t]``; R@K = share of texts whose image ranks < K.

Ties are broken by index order (stable sort), so results do not depend on the sorting algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlbridge.errors import DataError


def _ranks_desc(scores: np.ndarray) -> np.ndarray:
    """(n, m) scores -> (n, m) rank of each column within its row, 0 = highest score."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(scores.shape[1])[None, :]
    return ranks


def _as_array(scores) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().float().cpu().numpy()
    return np.asarray(scores, dtype=np.float64)


def recall_at_k(similarity, text_to_image: Sequence[int], ks: Sequence[int] = (1, 5, 10),
                similarity_t2i=None) -> dict[str, float]:
    """Recall@K in percent for image->text (``i2t_R@K``) and text->image (``t2i_R@K``), plus their
    mean ranks (1-based) and ``rsum`` (the sum of all recalls, as papers report it).

    Args:
        similarity: array-like (num_images, num_texts); a torch tensor works too.
        text_to_image: for each text (column), the index of its image (row).
        similarity_t2i: (num_texts, num_images) scores ranking images for each text when they are not
            ``similarity`` transposed (BLIP-2's ITM re-ranking re-scores each direction's own top k).
    """
    sim = _as_array(similarity)
    if sim.ndim != 2:
        raise DataError(f"similarity must be 2-D (num_images, num_texts), got shape {sim.shape}")
    num_images, num_texts = sim.shape
    owner = np.asarray(text_to_image, dtype=np.int64)
    if owner.shape != (num_texts,):
        raise DataError(f"text_to_image has {owner.size} entries for {num_texts} texts", field="text_to_image")
    if num_texts and (owner.min() < 0 or owner.max() >= num_images):
        raise DataError(f"text_to_image holds image indices outside 0..{num_images - 1}", field="text_to_image")
    captionless = sorted(set(range(num_images)) - set(owner.tolist()))
    if captionless:
        raise DataError(f"{len(captionless)} images have no text (first: {captionless[:5]})", field="text_to_image")
    i2t_all = _ranks_desc(sim)  # (num_images, num_texts)
    own = owner[None, :] == np.arange(num_images)[:, None]
    i2t = np.where(own, i2t_all, num_texts).min(axis=1)  # best rank among the image's own texts
    sim_t2i = sim.T if similarity_t2i is None else _as_array(similarity_t2i)
    if sim_t2i.shape != (num_texts, num_images):
        raise DataError(f"similarity_t2i must have shape ({num_texts}, {num_images}), got {sim_t2i.shape}",
                        field="similarity_t2i")
    t2i = _ranks_desc(sim_t2i)[np.arange(num_texts), owner]
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * float(np.mean(i2t < k))
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * float(np.mean(t2i < k))
    out["i2t_mean_rank"] = float(np.mean(i2t + 1))
    out["t2i_mean_rank"] = float(np.mean(t2i + 1))
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks)
    return out
