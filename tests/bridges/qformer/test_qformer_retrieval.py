"""Recall@K on constructed similarities, and ITM re-ranking of the ITC top-k."""

import random

import pytest
import torch

from vlbridge.bridges.qformer import QFormerConfig, build_blip2_stage1, build_qformer, evaluate_retrieval, recall_at_k
from vlbridge.bridges.qformer.retrieval import embed_images, embed_texts, itc_scores, itm_rerank


def test_recall_on_constructed_similarity():
    # 3 images, 6 texts; text j belongs to image j // 2
    text_image = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.tensor([
        [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # image 0: its text 1 is first -> rank 0
        [0.9, 0.0, 0.5, 0.8, 0.0, 0.0],  # image 1: text 3 second -> rank 1
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # image 2: texts 4, 5 are 5th, 6th -> rank 4
    ])
    r = recall_at_k(scores, text_image, ks=(1, 2, 5))
    assert r["i2t_r1"] == pytest.approx(100 / 3) and r["i2t_r2"] == pytest.approx(200 / 3) and r["i2t_r5"] == 100
    # text -> image on the transpose: ranks of each text's image among 3
    # t0: [.1, .9, .9] -> image 0 is 3rd (rank 2); t1: [.9, 0, .8] -> 0; t2: [0, .5, .7] -> 1; t3: [0, .8, .6] -> 0; t4: [0, 0, .5] -> 0; t5: [0, 0, .4] -> 0
    assert r["t2i_r1"] == pytest.approx(400 / 6) and r["t2i_r2"] == pytest.approx(500 / 6) and r["t2i_r5"] == 100
    assert r["mean"] == pytest.approx(sum(v for k, v in r.items() if k != "mean") / 6)


def reference_recall(scores, text_image, k):
    """Brute force: sort each row, take the best position of a relevant item."""
    n, m = scores.shape
    i2t = []
    for i in range(n):
        order = sorted(range(m), key=lambda j: -scores[i, j].item())
        i2t.append(min(order.index(j) for j in range(m) if text_image[j] == i) < k)
    t2i = []
    for j in range(m):
        order = sorted(range(n), key=lambda i: -scores[i, j].item())
        t2i.append(order.index(int(text_image[j])) < k)
    return 100 * sum(i2t) / n, 100 * sum(t2i) / m


def test_recall_matches_brute_force():
    rng = random.Random(0)
    torch.manual_seed(0)
    for _ in range(5):
        n = rng.randint(12, 20)
        text_image = torch.tensor([i for i in range(n) for _ in range(rng.randint(1, 3))])
        text_image = text_image[torch.randperm(len(text_image))]
        scores = torch.randn(n, len(text_image))
        got = recall_at_k(scores, text_image)
        for k in (1, 5, 10):
            want = reference_recall(scores, text_image, k)
            assert (got[f"i2t_r{k}"], got[f"t2i_r{k}"]) == pytest.approx(want)


def test_recall_errors():
    with pytest.raises(ValueError, match="relevant"):
        recall_at_k(torch.zeros(3, 2), torch.tensor([0, 1]))  # image 2 has no caption
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(torch.zeros(2, 2), torch.tensor([0, 1, 1]))


def tiny_model():
    torch.manual_seed(0)
    config = QFormerConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, encoder_hidden_size=8, num_query_tokens=3, embed_dim=8)
    model = build_blip2_stage1(build_qformer(config), 29, embed_dim=8).eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    images = torch.randn(4, 5, 8)
    ids = torch.randint(2, 29, (6, 5))
    ids[:, 0] = 1
    mask = torch.ones(6, 5, dtype=torch.long)
    mask[2, 3:] = 0
    return model, images, ids, mask


def test_itm_rerank_top_k():
    model, images, ids, mask = tiny_model()
    scores = itc_scores(embed_images(model, images), embed_texts(model, ids, mask))  # (4, 6)
    i2t, t2i = itm_rerank(model, scores, images, ids, mask, k=2, batch_size=3)
    assert i2t.shape == (4, 6) and t2i.shape == (6, 4)
    for i in range(4):
        top = scores[i].topk(2).indices
        for j in range(6):
            if j in top:
                itm = model.itm_scores(images[i:i + 1], ids[j:j + 1], mask[j:j + 1])[0]
                assert i2t[i, j].item() == pytest.approx((scores[i, j] + itm).item(), abs=1e-5)
            else:
                assert i2t[i, j] == -100
    for j in range(6):
        top = scores[:, j].topk(2).indices
        for i in range(4):
            if i in top:
                itm = model.itm_scores(images[i:i + 1], ids[j:j + 1], mask[j:j + 1])[0]
                assert t2i[j, i].item() == pytest.approx((scores[i, j] + itm).item(), abs=1e-5)
            else:
                assert t2i[j, i] == -100


def test_evaluate_retrieval():
    model, images, ids, mask = tiny_model()
    model.train()
    text_image = torch.tensor([0, 1, 2, 3, 0, 1])
    plain = evaluate_retrieval(model, images, ids, mask, text_image)
    assert model.training  # mode restored
    model.eval()
    scores = torch.einsum("iqe,je->ijq", model.embed_images(images), model.embed_texts(ids, mask))
    assert plain == recall_at_k(scores.amax(-1), text_image)
    reranked = evaluate_retrieval(model, images, ids, mask, text_image, rerank_k=10)  # k clamps to the count
    assert set(reranked) == set(plain) and all(0 <= v <= 100 for v in reranked.values())
