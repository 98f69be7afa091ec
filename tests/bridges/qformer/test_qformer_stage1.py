"""Stage-1 losses (ITC, ITM, ITG) recomputed by hand, hard-negative sampling, and a tiny overfit run."""

import pytest
import torch
import torch.nn.functional as F

from vlbridge.bridges.qformer import QFormerConfig, build_blip2_stage1, build_qformer, itg_mask, itm_mask
from vlbridge.bridges.qformer.stage1 import sample_hard_negatives

Q, B, L, DV, V, DEC = 4, 4, 6, 12, 40, 39


def smoothed_ce(logits, target, eps=0.1):
    """Label-smoothed cross entropy written out: (1-eps) * NLL + eps * mean over classes of -log p."""
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, target[:, None]).squeeze(-1)
    return ((1 - eps) * nll + eps * (-logp.mean(-1))).mean()


def make(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    config = QFormerConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=24, encoder_hidden_size=DV, num_query_tokens=Q, embed_dim=8,
                           hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = build_blip2_stage1(build_qformer(config), DEC, embed_dim=config.embed_dim)
    for name, p in model.named_parameters():
        if name != "temp":  # break the symmetries of the init (zero biases, unit LayerNorms)
            p.data.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, DEC, (B, L), generator=g)
    ids[:, 0] = 1  # [CLS]
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    return model, torch.randn(B, 9, DV, generator=g), ids, mask


def test_losses_equal_hand_computation():
    model, image, ids, mask = make()
    out = model(image, ids, mask, generator=torch.Generator().manual_seed(5))
    assert set(out) == {"loss", "itc", "itm", "itg"}
    torch.testing.assert_close(out["loss"], out["itc"] + out["itm"] + out["itg"])

    # ITC: max over queries of cosine similarity / 0.07, smoothing 0.1, both directions
    assert model.temperature.item() == pytest.approx(0.07)
    img = F.normalize(model.vision_projection(model.qformer(model.ln_vision(image)).last_hidden_state), dim=-1)
    txt = F.normalize(model.text_projection(model.qformer(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]), dim=-1)
    sim = torch.stack([torch.stack([(img[i] @ txt[j]).max() for j in range(B)]) for i in range(B)]) / 0.07
    targets = torch.arange(B)
    itc = (smoothed_ce(sim, targets) + smoothed_ce(sim.t(), targets)) / 2
    torch.testing.assert_close(out["itc"], itc, atol=1e-5, rtol=1e-5)

    # ITM: the same negatives (same generator), [pos, text with neg image, neg text with image] -> [1, 0, 0]
    g = torch.Generator().manual_seed(5)
    neg_image = sample_hard_negatives(sim.t(), 0, g)
    neg_text = sample_hard_negatives(sim, 0, g)
    images = model.ln_vision(torch.cat([image, image[neg_image], image]))
    texts, masks = torch.cat([ids, ids, ids[neg_text]]), torch.cat([mask, mask, mask[neg_text]])
    hidden = model.qformer(images, texts, itm_mask(Q, masks)).last_hidden_state[:, :Q]
    logits = model.itm_head(hidden).mean(1)
    labels = torch.tensor([1] * B + [0] * 2 * B)
    torch.testing.assert_close(out["itm"], F.cross_entropy(logits, labels), atol=1e-5, rtol=1e-5)

    # ITG: recomputed in one joint pass with the ITG mask; [DEC] first; smoothing 0.1 on real next tokens
    dec = ids.clone()
    dec[:, 0] = DEC
    hidden = model.qformer(model.ln_vision(image), dec, itg_mask(Q, mask)).last_hidden_state[:, Q:]
    logits = model.lm_head(hidden, model.qformer.embeddings.word_embeddings.weight)  # (B, L, V)
    rows = [(b, t) for b in range(B) for t in range(L - 1) if mask[b, t + 1]]
    pred = torch.stack([logits[b, t] for b, t in rows])
    target = torch.stack([dec[b, t + 1] for b, t in rows])
    torch.testing.assert_close(out["itg"], smoothed_ce(pred, target), atol=1e-5, rtol=1e-5)


def test_lm_head_is_tied_to_word_embeddings():
    model, *_ = make()
    word = model.qformer.embeddings.word_embeddings.weight
    h = torch.randn(3, 16)
    want = model.lm_head.transform(h) @ word.t() + model.lm_head.bias
    torch.testing.assert_close(model.lm_head(h, word), want)
    assert not any(p.shape == word.shape for p in model.lm_head.parameters())


def test_hard_negatives_never_positive_and_follow_softmax():
    torch.manual_seed(0)
    sim = torch.randn(4, 4) * 2
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, 0, g) for _ in range(3000)])  # (3000, 4)
    assert not (draws == torch.arange(4)).any()
    want = F.softmax(sim, 1) + 1e-4
    want.fill_diagonal_(0)
    want = want / want.sum(1, keepdim=True)
    counts = torch.stack([torch.bincount(draws[:, r], minlength=4) for r in range(4)]).float() / 3000
    assert (counts - want).abs().max() < 0.03  # binomial std <= 0.01
    # with a global batch the positives sit at rank * B + row
    wide = torch.zeros(2, 6)
    draws = torch.stack([sample_hard_negatives(wide, 2, g) for _ in range(500)])
    assert not (draws == torch.tensor([2, 3])).any()
    assert set(draws[:, 0].tolist()) == {0, 1, 3, 4, 5} and set(draws[:, 1].tolist()) == {0, 1, 2, 4, 5}
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1), 0)


def test_temperature_is_learnable_and_clamped():
    model, image, ids, mask = make()
    model(image, ids, mask)["itc"].backward()
    assert model.temp.grad is not None and model.temp.grad.abs() > 0
    with torch.no_grad():
        model.temp.fill_(-1.0)
    assert model.temperature.item() == pytest.approx(0.001)


def test_losses_decrease_on_tiny_overfit_batch():
    model, image, ids, mask = make(seed=3)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    history = []
    for step in range(80):
        out = model(image, ids, mask)
        assert all(torch.isfinite(v) for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: v.item() for k, v in out.items()})
    first, last = history[0], {k: sum(h[k] for h in history[-5:]) / 5 for k in history[0]}
    # ITC cannot go below the entropy of its smoothed targets (0.35 for 4 pairs), ITM learns last
    assert last["itc"] < 0.5 * first["itc"] and last["itg"] < 0.5 * first["itg"]
    assert last["itm"] < 0.6 * first["itm"] and last["loss"] < 0.4 * first["loss"]
