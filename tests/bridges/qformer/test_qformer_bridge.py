"""The BLIP-2 bridge preset: Q-Former connector -> (B, 32, d) soft tokens for input-space injection."""

from types import SimpleNamespace

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.qformer import build_blip2_stage1
from vlbridge.bridges.qformer.bridge import Blip2Options, build_blip2
from vlbridge.errors import ConfigError

LM = SimpleNamespace(hidden_size=20)


def test_random_init_bridge_shapes_and_shared_stage1():
    torch.manual_seed(0)
    bridge = build_blip2(12, LM, Blip2Options(init="random", num_query_tokens=4))
    assert isinstance(bridge.injection, InputSpaceInjection)
    out = bridge(torch.randn(2, 9, 12))
    assert out.shape == (2, 4, 20)
    connector = bridge.connector
    assert isinstance(connector.ln_vision, torch.nn.LayerNorm)
    stage1 = build_blip2_stage1(connector.qformer, 30522, ln_vision=connector.ln_vision)
    assert stage1.qformer is connector.qformer and stage1.ln_vision is connector.ln_vision
    assert build_blip2(12, LM, Blip2Options(init="random", ln_vision=False)).connector.ln_vision.__class__ is torch.nn.Identity
    with pytest.raises(ConfigError, match="valid"):
        build_blip2(12, LM, Blip2Options(init="bert-large"))


def test_bridge_from_hf_checkpoint(tmp_path):
    config = Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40),
        text_config=dict(model_type="opt", vocab_size=50, hidden_size=20, num_hidden_layers=1,
                         num_attention_heads=2, ffn_dim=32, max_position_embeddings=64, word_embed_proj_dim=20),
        num_query_tokens=3,
    )
    hf = Blip2ForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    bridge = build_blip2(24, LM, Blip2Options(checkpoint=str(tmp_path), ln_vision=False)).eval()
    features = torch.randn(2, 5, 24)
    want = hf.language_projection(
        hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1), encoder_hidden_states=features).last_hidden_state
    )
    torch.testing.assert_close(bridge(features), want, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="24-wide"):
        build_blip2(16, LM, Blip2Options(checkpoint=str(tmp_path)))


@pytest.mark.slow
def test_minilm_bridge_and_tokenizer():
    from vlbridge.bridges.qformer.bridge import qformer_tokenizer

    bridge = build_blip2(384, LM, Blip2Options())
    tokenizer, dec = qformer_tokenizer()
    assert dec == 30522 and bridge.connector.qformer.embeddings.word_embeddings.num_embeddings == len(tokenizer)
    assert bridge(torch.randn(1, 16, 384)).shape == (1, 32, 20)
