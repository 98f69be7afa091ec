"""Our Q-Former against Hugging Face's Blip2QFormerModel with the same random tiny config and weights."""

import pytest
import torch
from transformers import Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from vlbridge.bridges.qformer import QFormerConfig, build_qformer, itg_mask, itm_mask
from vlbridge.errors import ConfigError

Q, B, L, N, DV = 5, 3, 7, 11, 24


def tiny_config(**overrides):
    base = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
                encoder_hidden_size=DV, num_query_tokens=Q, max_position_embeddings=16)
    base.update(overrides)
    return QFormerConfig(**base)


def pair(config):
    """Our Q-Former and Hugging Face's with our random weights, plus HF text embeddings."""
    torch.manual_seed(0)
    ours = build_qformer(config).eval()
    for p in ours.parameters():  # break symmetries of the BERT init (zero biases, unit norms)
        p.data.add_(0.05 * torch.randn_like(p))
    hf = Blip2QFormerModel(config.to_hf()).eval()
    state = ours.state_dict()
    hf.load_state_dict({k: v for k, v in state.items() if not k.startswith(("embeddings.", "query_tokens"))})
    emb = None
    if config.use_qformer_text_input:
        emb = Blip2TextEmbeddings(config.to_hf()).eval()
        emb.load_state_dict({k[len("embeddings."):]: v for k, v in state.items() if k.startswith("embeddings.")})
    return ours, hf, emb


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids, mask, torch.randn(B, N, DV, generator=g)


def test_query_only_matches_hf_blip2_layout():
    ours, hf, _ = pair(tiny_config(use_qformer_text_input=False))
    assert set(ours.state_dict()) - set(hf.state_dict()) == {"query_tokens"}
    _, _, image = inputs()
    got = ours(image).last_hidden_state
    want = hf(query_embeds=ours.query_tokens.expand(B, -1, -1), encoder_hidden_states=image).last_hidden_state
    assert got.shape == (B, Q, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_joint_itm_pass_matches_hf_with_gradients():
    ours, hf, emb = pair(tiny_config())
    ids, mask, image = inputs()
    got = ours(image, ids, itm_mask(Q, mask)).last_hidden_state
    full = torch.cat([torch.ones(B, Q, dtype=torch.long), mask], 1)
    want = hf(query_embeds=emb(ids, query_embeds=ours.query_tokens.expand(B, -1, -1)), query_length=Q,
              attention_mask=full, encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    got.square().sum().backward()
    want.square().sum().backward()
    for name, p in hf.named_parameters():
        torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, atol=1e-4, rtol=1e-4)


def test_text_only_and_itg_passes_match_hf():
    ours, hf, emb = pair(tiny_config())
    ids, mask, image = inputs()
    got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    want = hf(query_embeds=emb(ids), query_length=0, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # ITG: a prepared 4D mask goes to Hugging Face as-is
    m = itg_mask(Q, mask)
    got = ours(image, ids, m).last_hidden_state
    want = hf(query_embeds=emb(ids, query_embeds=ours.query_tokens.expand(B, -1, -1)), query_length=Q,
              attention_mask=m[:, None], encoder_hidden_states=image).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_image_padding_mask_matches_hf():
    ours, hf, _ = pair(tiny_config())
    _, _, image = inputs()
    image_mask = torch.ones(B, N, dtype=torch.long)
    image_mask[0, 6:] = 0
    got = ours(image, image_mask=image_mask).last_hidden_state
    want = hf(query_embeds=ours.query_tokens.expand(B, -1, -1), encoder_hidden_states=image,
              encoder_attention_mask=image_mask).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # masked image tokens really are ignored
    changed = image.clone()
    changed[0, 6:] = 100.0
    torch.testing.assert_close(ours(changed, image_mask=image_mask).last_hidden_state[0], got[0])


def test_structure_cross_attention_every_other_layer():
    config = tiny_config(num_hidden_layers=6)
    model = build_qformer(config)
    assert config.cross_attention_layers == [0, 2, 4]
    assert [layer.crossattention is not None for layer in model.encoder.layer] == [True, False] * 3
    assert model.query_tokens.shape == (1, Q, 32)
    assert 0.01 < model.query_tokens.std().item() < 0.03  # N(0, 0.02^2), LAVIS


def test_errors():
    with pytest.raises(ConfigError, match="multiple"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(ConfigError, match="valid"):
        build_qformer(tiny_config(hidden_act="gelu_fast_and_wrong"))
    query_only = build_qformer(tiny_config(use_qformer_text_input=False))
    with pytest.raises(ValueError, match="no text"):
        query_only(input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than"):
        build_qformer(tiny_config())(input_ids=torch.ones(1, 17, dtype=torch.long))
