"""ITM re-ranking of the ITC top-k and retrieval with a stage-1 Q-Former (Recall@K itself: tests/metrics)."""

import pytest
import torch

from vlbridge.bridges.qformer import QFormerConfig, build_blip2_stage1, build_qformer, evaluate_retrieval
from vlbridge.bridges.qformer.retrieval import embed_images, embed_texts, itc_scores, itm_rerank
from vlbridge.metrics.retrieval import recall_at_k


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
    assert plain == recall_at_k(scores.amax(-1), text_image.tolist())
    reranked = evaluate_retrieval(model, images, ids, mask, text_image, rerank_k=10)  # k clamps to the count
    i2t, t2i = itm_rerank(model, scores.amax(-1), images, ids, mask, k=10)
    assert reranked == recall_at_k(i2t, text_image.tolist(), similarity_t2i=t2i)
