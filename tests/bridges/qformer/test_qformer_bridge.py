"""The BLIP-2 bridge preset: Q-Former connector -> (B, 32, d) soft tokens for input-space injection."""

from types import SimpleNamespace

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.bridges.qformer import Blip2Stage1
from vlbridge.bridges.registry import build_preset
from vlbridge.errors import ConfigError

LM = SimpleNamespace(hidden_size=20)


TINY = dict(init="random", num_query_tokens=4, embed_dim=8,
            sizes=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24))


def test_random_init_bridge_shapes_and_shared_stage1():
    torch.manual_seed(0)
    bridge = build_preset("blip2", 12, LM, dict(init="random", num_query_tokens=4))
    assert isinstance(bridge.injection, InputSpaceInjection)
    out, lengths = bridge(torch.randn(2, 9, 12))
    assert out.shape == (2, 4, 20) and lengths is None
    connector = bridge.connector
    assert isinstance(connector.ln_vision, torch.nn.LayerNorm)
    without = build_preset("blip2", 12, LM, dict(init="random", ln_vision=False))
    assert isinstance(without.connector.ln_vision, torch.nn.Identity)
    with pytest.raises(ConfigError, match="valid"):
        build_preset("blip2", 12, LM, dict(init="bert-large"))


def test_stage1_option_carries_the_stage1_model_on_the_connectors_qformer():
    torch.manual_seed(0)
    bridge = build_preset("blip2", 12, LM, dict(**TINY, stage1=True))
    stage1, connector = bridge.connector.stage1, bridge.connector
    assert isinstance(stage1, Blip2Stage1)
    assert stage1.qformer is connector.qformer and stage1.ln_vision is connector.ln_vision
    assert stage1.dec_token_id == 30522 and stage1.vision_projection.out_features == 8
    # every parameter once, under the bridge: the stage-1 heads are trained and saved with it
    names = [n for n, _ in bridge.named_parameters()]
    assert "connector.stage1.temp" in names and "connector.qformer.query_tokens" in names
    assert not any(n.startswith("connector.stage1.qformer.") for n in names)
    # the retrieval protocol of `vlbridge eval --task retrieval`, found among the bridge's modules
    from vlbridge.eval.retrieval import find_embedder

    assert find_embedder(bridge, "blip2") is stage1
    features, ids = torch.randn(3, 9, 12), torch.tensor([[101, 2417, 4418, 102], [101, 2630, 102, 0]])
    mask = (ids != 0).long()
    stage1.eval()
    assert stage1.embed_images(features).shape == (3, 4, 8) and stage1.embed_texts(ids, mask).shape == (2, 8)
    torch.testing.assert_close(stage1.embed_images(features).norm(dim=-1), torch.ones(3, 4))
    assert torch.isfinite(stage1(features[:2], ids, mask)["loss"])


def test_without_stage1_the_text_side_is_dropped_and_the_queries_are_unchanged():
    torch.manual_seed(0)
    with_text = build_preset("blip2", 12, LM, dict(**TINY, stage1=True)).eval()
    torch.manual_seed(0)
    bridge = build_preset("blip2", 12, LM, dict(**TINY)).eval()
    qformer = bridge.connector.qformer
    assert bridge.connector.stage1 is None and qformer.embeddings is None
    assert not any(hasattr(layer, "intermediate") or hasattr(layer, "output") for layer in qformer.encoder.layer)
    assert set(dict(bridge.named_parameters())) < set(dict(with_text.named_parameters()))
    features = torch.randn(2, 9, 12)
    torch.testing.assert_close(bridge(features)[0], with_text(features)[0])  # same init, same visual tokens


def test_bad_stage1_and_size_options_are_refused():
    with pytest.raises(ConfigError, match=r"unknown Q-Former size\(s\) \['layers'\].*valid: \[.*'num_hidden_layers'"):
        build_preset("blip2", 12, LM, dict(init="random", sizes={"layers": 2}))
    with pytest.raises(ConfigError, match=r"unknown Q-Former size\(s\) \['num_query_tokens'\]"):
        build_preset("blip2", 12, LM, dict(init="random", sizes={"num_query_tokens": 2}))
    with pytest.raises(ConfigError, match="sizes is for init=random"):
        build_preset("blip2", 12, LM, dict(sizes={"hidden_size": 16}))
    with pytest.raises(ConfigError, match="stage 1 reads the grid"):
        build_preset("blip2", 12, LM, dict(**TINY, stage1=True, features="pooled"))


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
    bridge = build_preset("blip2", 24, LM, dict(checkpoint=str(tmp_path), ln_vision=False)).eval()
    features = torch.randn(2, 5, 24)
    want = hf.language_projection(
        hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1), encoder_hidden_states=features).last_hidden_state
    )
    torch.testing.assert_close(bridge(features)[0], want, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="24-wide"):
        build_preset("blip2", 16, LM, dict(checkpoint=str(tmp_path)))


@pytest.mark.slow
def test_minilm_bridge_and_tokenizer():
    from vlbridge.bridges.qformer.bridge import qformer_tokenizer

    bridge = build_preset("blip2", 384, LM, dict(stage1=True))
    tokenizer, dec = qformer_tokenizer()
    assert dec == 30522 and bridge.connector.qformer.embeddings.word_embeddings.num_embeddings == len(tokenizer)
    assert bridge(torch.randn(1, 16, 384))[0].shape == (1, 32, 20)
