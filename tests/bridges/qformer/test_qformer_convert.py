"""Hugging Face BLIP-2 checkpoints in and out, and initialisation from a BERT."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
)

from vlbridge.bridges.qformer import (
    QFormerConfig,
    QFormerConnector,
    build_blip2_stage1,
    build_qformer,
    init_from_bert,
    load_blip2_checkpoint,
    load_hf_blip2_state_dict,
    qformer_config_from_bert,
    to_hf_state_dict,
)
from vlbridge.errors import ConfigError, DataError

Q = 5


def blip2_config(text_input=False):
    return Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        qformer_config=dict(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=40, max_position_embeddings=20, use_qformer_text_input=text_input),
        text_config=dict(model_type="opt", vocab_size=50, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, ffn_dim=32, max_position_embeddings=64, word_embed_proj_dim=16),
        num_query_tokens=Q,
        image_text_hidden_size=12,
    )


def randomize(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


def test_conditional_generation_state_dict_round_trip():
    hf = randomize(Blip2ForConditionalGeneration(blip2_config()))
    config = QFormerConfig.from_hf(hf.config)
    assert (config.num_query_tokens, config.encoder_hidden_size, config.embed_dim) == (Q, 24, 12)
    assert not config.use_qformer_text_input
    qformer, projection = build_qformer(config), torch.nn.Linear(32, 16)
    missing = load_hf_blip2_state_dict(hf.state_dict(), qformer, projection)
    assert missing == []
    # same visual tokens as Hugging Face: qformer on the vision features, then the language projection
    pixels = torch.randn(2, 3, 28, 28)
    features = hf.vision_model(pixel_values=pixels).last_hidden_state  # (2, 5, 24), post-LayerNorm
    want = hf.language_projection(
        hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1), encoder_hidden_states=features).last_hidden_state
    )
    got = QFormerConnector(qformer.eval(), projection)(features)
    assert got.shape == (2, Q, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # and back: exactly Hugging Face's Q-Former, query tokens and projection tensors
    back = to_hf_state_dict(qformer, projection)
    hf_state = hf.state_dict()
    wanted = {k for k in hf_state if k.startswith(("qformer.", "query_tokens", "language_projection."))}
    assert set(back) == wanted
    for key in wanted:
        assert torch.equal(back[key], hf_state[key]), key


def test_image_text_retrieval_model_scores_match_hf():
    hf = randomize(Blip2ForImageTextRetrieval(blip2_config(text_input=True)))
    config = QFormerConfig.from_hf(hf.config)
    model = build_blip2_stage1(build_qformer(config), 59, embed_dim=config.embed_dim, ln_vision=torch.nn.Identity())
    missing = load_hf_blip2_state_dict(hf.state_dict(), model.qformer, stage1=model)
    assert missing == []
    model.eval()
    pixels = torch.randn(2, 3, 28, 28)
    ids = torch.randint(1, 60, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    features = hf.vision_model(pixel_values=pixels).last_hidden_state
    itc = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits_per_image  # (2 images, 2 texts)
    got = torch.einsum("iqe,je->ijq", model.embed_images(features), model.embed_texts(ids, mask)).amax(-1)
    torch.testing.assert_close(got, itc, atol=1e-5, rtol=0)
    itm = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
    torch.testing.assert_close(model.itm_scores(features, ids, mask), itm.logits_per_image[:, 1], atol=1e-5, rtol=0)


def test_load_blip2_checkpoint_folder(tmp_path):
    hf = randomize(Blip2ForConditionalGeneration(blip2_config()))
    hf.save_pretrained(tmp_path)
    qformer, projection, config = load_blip2_checkpoint(tmp_path)
    assert config.num_query_tokens == Q and projection.out_features == 16
    for key, value in to_hf_state_dict(qformer, projection).items():
        assert torch.equal(value, hf.state_dict()[key]), key
    with pytest.raises(DataError, match="config.json"):
        load_blip2_checkpoint(tmp_path / "nowhere")


def test_converter_rejects_mismatched_weights():
    hf = Blip2ForConditionalGeneration(blip2_config())
    config = QFormerConfig.from_hf(hf.config)
    config.num_hidden_layers = 2  # HF has 3
    with pytest.raises(ValueError, match="keys not in the model"):
        load_hf_blip2_state_dict(hf.state_dict(), build_qformer(config))
    with pytest.raises(ValueError, match="no Q-Former weights"):
        load_hf_blip2_state_dict({"vision_model.x": torch.zeros(1)}, build_qformer(config))


def tiny_bert():
    torch.manual_seed(0)
    bert_config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                             intermediate_size=24, max_position_embeddings=20)
    return randomize(BertModel(bert_config))


def test_init_from_bert_copies_exactly_and_reproduces_bert():
    bert = tiny_bert()
    config = qformer_config_from_bert(bert.config, encoder_hidden_size=8, vocab_size=41, num_query_tokens=3)
    qformer = build_qformer(config)
    cross_before = {k: v.clone() for k, v in qformer.state_dict().items() if "crossattention" in k}
    init_from_bert(qformer, bert)
    state, bert_state = qformer.state_dict(), bert.state_dict()
    for i in range(4):
        for ours, theirs in [("attention.attention.query", "attention.self.query"),
                             ("attention.output.LayerNorm", "attention.output.LayerNorm"),
                             ("intermediate.dense", "intermediate.dense"), ("output.dense", "output.dense"),
                             ("intermediate_query.dense", "intermediate.dense"),
                             ("output_query.dense", "output.dense"), ("output_query.LayerNorm", "output.LayerNorm")]:
            for p in ("weight", "bias"):
                assert torch.equal(state[f"encoder.layer.{i}.{ours}.{p}"], bert_state[f"encoder.layer.{i}.{theirs}.{p}"])
    words = state["embeddings.word_embeddings.weight"]
    assert torch.equal(words[:40], bert_state["embeddings.word_embeddings.weight"])
    torch.testing.assert_close(words[40], bert_state["embeddings.word_embeddings.weight"].mean(0))
    for key, value in cross_before.items():  # cross-attention stays new
        assert torch.equal(state[key], value)
    # text-only Q-Former == the BERT (token-type-0 embedding folded into positions)
    ids = torch.randint(1, 40, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    got = qformer.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    want = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=0)


def test_init_from_bert_checks_sizes():
    bert = tiny_bert()
    config = qformer_config_from_bert(bert.config, encoder_hidden_size=8)
    config.num_hidden_layers = 3
    with pytest.raises(ConfigError, match="layers"):
        init_from_bert(build_qformer(config), bert)
    config = qformer_config_from_bert(bert.config, encoder_hidden_size=8, vocab_size=30)
    with pytest.raises(ConfigError, match="word embeddings"):
        init_from_bert(build_qformer(config), bert)
