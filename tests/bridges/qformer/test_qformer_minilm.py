"""BLIP-2 Q-Former initialised from the packaged all-MiniLM-L6-v2."""

import pytest
import torch

from vlbridge.bridges.qformer import build_blip2_stage1, qformer_from_bert


@pytest.mark.slow
def test_qformer_from_minilm():
    from vlbridge.weights.minilm import load_minilm

    bert, tokenizer = load_minilm()
    vocab = len(tokenizer)
    qformer, config, dec = qformer_from_bert(bert, tokenizer, encoder_hidden_size=384, num_query_tokens=32)
    assert dec == vocab == 30522 and len(tokenizer) == 30523 and tokenizer.bos_token == "[DEC]"
    assert tokenizer("a cat", add_special_tokens=False)["input_ids"] == tokenizer("[DEC] a cat")["input_ids"][2:-1]
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (384, 6, 30523)
    assert [layer.crossattention is not None for layer in qformer.encoder.layer] == [True, False] * 3
    # the text path is MiniLM exactly
    batch = tokenizer(["a red square left of a blue circle", "two shapes"], padding=True, return_tensors="pt")
    qformer.eval()
    with torch.no_grad():
        got = qformer(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        want = bert(**batch).last_hidden_state
    keep = batch.attention_mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=0)
    # one stage-1 step runs with the real sizes
    model = build_blip2_stage1(qformer, dec)
    out = model(torch.randn(2, 16, 384), batch.input_ids, batch.attention_mask)
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert qformer.encoder.layer[0].crossattention.attention.key.weight.grad is not None
