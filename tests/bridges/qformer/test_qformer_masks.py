"""The three stage-1 attention masks, element by element, and the passes that use them."""

import torch

from vlbridge.bridges.qformer import QFormerConfig, build_qformer, itc_mask, itg_mask, itm_mask
from vlbridge.bridges.qformer.masks import itg_text_rows

Q = 3
TEXT_MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])


def expected(kind):
    """The masks spelled out from the BLIP-2 paper (Fig. 2), one element at a time."""
    batch, length = TEXT_MASK.shape
    s = Q + length
    out = torch.zeros(batch, s, s, dtype=torch.bool)
    for b in range(batch):
        for i in range(s):
            for j in range(s):
                row_query, col_query = i < Q, j < Q
                col_valid = col_query or bool(TEXT_MASK[b, j - Q])
                if kind == "itc":
                    allowed = row_query == col_query
                elif kind == "itm":
                    allowed = True
                else:  # itg
                    allowed = col_query if row_query else (col_query or j <= i)
                out[b, i, j] = allowed and col_valid
    return out


def test_itc_mask():
    got = itc_mask(Q, TEXT_MASK)
    assert got.dtype == torch.bool and got.shape == (2, 7, 7)
    assert torch.equal(got, expected("itc"))
    assert not got[:, :Q, Q:].any() and not got[:, Q:, :Q].any()  # no query<->text attention


def test_itm_mask():
    got = itm_mask(Q, TEXT_MASK)
    assert torch.equal(got, expected("itm"))
    assert got[0].all()  # no padding: everyone sees everyone
    assert not got[1, :, Q + 2:].any()  # padded text columns are seen by nobody


def test_itg_mask():
    got = itg_mask(Q, TEXT_MASK)
    assert torch.equal(got, expected("itg"))
    assert got[:, :, :Q].all()  # every row sees all queries
    assert not got[:, :Q, Q:].any()  # queries see no text
    # text token i sees text tokens 0..i only: row Q+1 (2nd text token) sees exactly Q+2 columns
    assert got[0, Q + 1].tolist() == [True] * (Q + 2) + [False] * 2
    assert torch.equal(itg_text_rows(Q, TEXT_MASK), got[:, Q:])


def tiny():
    torch.manual_seed(0)
    config = QFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                           intermediate_size=24, encoder_hidden_size=8, num_query_tokens=Q)
    model = build_qformer(config).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(1, 50, TEXT_MASK.shape)
    return model, ids, torch.randn(2, 5, 8)


def test_itc_mask_pass_equals_the_two_unimodal_passes():
    model, ids, image = tiny()
    joint = model(image, ids, itc_mask(Q, TEXT_MASK)).last_hidden_state
    torch.testing.assert_close(joint[:, :Q], model(image).last_hidden_state, atol=1e-6, rtol=0)
    text = model(input_ids=ids, attention_mask=TEXT_MASK).last_hidden_state
    torch.testing.assert_close(joint[:, Q:], text, atol=1e-6, rtol=0)


def test_itg_mask_pass_equals_text_pass_on_cached_queries():
    model, ids, image = tiny()
    joint = model(image, ids, itg_mask(Q, TEXT_MASK)).last_hidden_state
    queries = model(image, use_cache=True)
    torch.testing.assert_close(joint[:, :Q], queries.last_hidden_state, atol=1e-6, rtol=0)
    text = model(input_ids=ids, attention_mask=itg_text_rows(Q, TEXT_MASK),
                 past_key_values=queries.past_key_values).last_hidden_state
    torch.testing.assert_close(joint[:, Q:], text, atol=1e-6, rtol=0)
    # causal: changing the last token changes no earlier output
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 50
    again = model(image, changed, itg_mask(Q, TEXT_MASK)).last_hidden_state
    torch.testing.assert_close(again[0, :-1], joint[0, :-1], atol=1e-6, rtol=0)


def test_itm_mask_lets_text_change_queries():
    model, ids, image = tiny()
    out = model(image, ids, itm_mask(Q, TEXT_MASK)).last_hidden_state
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 50
    again = model(image, changed, itm_mask(Q, TEXT_MASK)).last_hidden_state
    assert (again[0, :Q] - out[0, :Q]).abs().max() > 1e-4  # queries see the text
    # padded text positions change nothing for the other tokens
    changed = ids.clone()
    changed[1, -1] = (changed[1, -1] + 1) % 50
    again = model(image, changed, itm_mask(Q, TEXT_MASK)).last_hidden_state
    torch.testing.assert_close(again[1, :Q + 2], out[1, :Q + 2], atol=1e-6, rtol=0)
