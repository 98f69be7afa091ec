"""Recall@K in both directions on hand-made similarity matrices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from vlbridge.errors import DataError
from vlbridge.metrics.retrieval import recall_at_k


def test_perfect_retrieval():
    sim = np.eye(3).repeat(2, axis=1)  # 3 images, 2 captions each, each image most similar to its own
    r = recall_at_k(sim + 0.01 * np.arange(6), [0, 0, 1, 1, 2, 2], ks=(1, 5))
    assert r["i2t_R@1"] == 100.0 and r["t2i_R@1"] == 100.0 and r["rsum"] == 400.0


def test_image_to_text_uses_the_best_ranked_of_its_captions():
    # image 0's captions are texts 0 and 1; text 1 ranks first for image 0, text 0 last.
    sim = np.array([[0.0, 0.9, 0.5, 0.4],
                    [0.1, 0.2, 0.8, 0.7]])
    r = recall_at_k(sim, [0, 0, 1, 1], ks=(1, 2))
    assert r["i2t_R@1"] == 100.0
    # text->image: text 0 (0.0 vs 0.1) ranks its image second; the others first.
    assert r["t2i_R@1"] == 75.0 and r["t2i_R@2"] == 100.0
    assert r["t2i_mean_rank"] == pytest.approx(1.25)


def test_hand_computed_ranks_and_ties_broken_by_index():
    sim = np.array([[0.5, 0.5, 0.1],
                    [0.5, 0.2, 0.5],
                    [0.3, 0.9, 0.0]])
    r = recall_at_k(sim, [0, 1, 2], ks=(1, 2, 3))
    # i2t ranks: image0 -> text0 rank 0 (tie with text1, lower index first); image1 -> text1 rank 2;
    # image2 -> text2 rank 2.   t2i: text0 -> image0 rank 0 (tie with image1); text1 -> image1 rank 2;
    # text2 -> image2 rank 2.
    assert r["i2t_R@1"] == pytest.approx(100 / 3) and r["i2t_R@2"] == pytest.approx(100 / 3)
    assert r["i2t_R@3"] == 100.0 and r["t2i_R@1"] == pytest.approx(100 / 3) and r["t2i_R@3"] == 100.0


def test_accepts_torch_and_checks_shapes():
    r = recall_at_k(torch.eye(4), [0, 1, 2, 3], ks=(1,))
    assert r["i2t_R@1"] == 100.0
    with pytest.raises(DataError, match="2 entries for 4 texts"):
        recall_at_k(np.eye(4), [0, 1])
    with pytest.raises(DataError, match="outside"):
        recall_at_k(np.eye(2), [0, 5])
    with pytest.raises(DataError, match="have no text"):
        recall_at_k(np.ones((3, 2)), [0, 1])


def brute_force_recall(scores: np.ndarray, owner: list[int], k: int, scores_t2i: np.ndarray) -> tuple[float, float]:
    """Sort every row with Python's stable sort; take the best position of a relevant item."""
    n, m = scores.shape
    i2t = [min(sorted(range(m), key=lambda j: -scores[i, j]).index(j) for j in range(m) if owner[j] == i) < k
           for i in range(n)]
    t2i = [sorted(range(n), key=lambda i: -scores_t2i[j, i]).index(owner[j]) < k for j in range(m)]
    return 100 * sum(i2t) / n, 100 * sum(t2i) / m


@pytest.mark.parametrize("separate_t2i", [False, True])
def test_matches_brute_force(separate_t2i):
    rng, gen = random.Random(0), np.random.default_rng(0)
    for _ in range(5):
        n = rng.randint(12, 20)
        owner = [i for i in range(n) for _ in range(rng.randint(1, 3))]
        rng.shuffle(owner)
        scores = gen.standard_normal((n, len(owner)))
        scores_t2i = gen.standard_normal((len(owner), n)) if separate_t2i else scores.T
        got = recall_at_k(scores, owner, similarity_t2i=scores_t2i if separate_t2i else None)
        for k in (1, 5, 10):
            assert (got[f"i2t_R@{k}"], got[f"t2i_R@{k}"]) == pytest.approx(brute_force_recall(scores, owner, k, scores_t2i))


def test_separate_text_to_image_scores_must_have_the_transposed_shape():
    with pytest.raises(DataError, match="similarity_t2i"):
        recall_at_k(np.eye(3), [0, 1, 2], similarity_t2i=np.eye(2))
