"""Analytic FLOPs of encoder-decoder LMs (encoder over the prompt, decoder over the answer, cross-attention)
equal torch's flop counter on tiny T5, flan-T5 and BART, with and without visual tokens or memory."""

from __future__ import annotations

import pytest
import torch
from tiny_seq2seq import KINDS, tiny_seq2seq

from vlbridge.batch import Batch, ImageInputs
from vlbridge.bridges.registry import build_preset
from vlbridge.flops import LMShape, Seq2SeqShape, count_flops, projector_flops, seq2seq_flops
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
from vlbridge.text.tokenize import IMAGE_TOKEN_ID
from vlbridge.vlm import VisionLanguageModel

VISION_DIM, N_VISUAL, PROMPT, ANSWER = 24, 9, 10, 3


def one_sample(image: bool) -> Batch:
    """A PROMPT-token encoder input (plus an image placeholder when ``image``) and an ANSWER-token target."""
    text = list(range(3, 3 + PROMPT))
    ids = text[:2] + [IMAGE_TOKEN_ID] + text[2:] if image else text
    grid = torch.randn(1, N_VISUAL, VISION_DIM) if image else None
    return Batch(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), None, torch.tensor([image]),
                 ImageInputs(grid=grid), targets=torch.tensor([[40, 41, 42]]))


def model(kind: str, bridge: str, **options) -> VisionLanguageModel:
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    return VisionLanguageModel(lm, build_preset(bridge, VISION_DIM, lm, options)).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_equals_measured(kind):
    llava = model(kind, "llava")
    shape = Seq2SeqShape.of(llava.language_model)
    d = 32
    assert count_flops(lambda: llava(one_sample(image=False))) == seq2seq_flops(shape, PROMPT, ANSWER)
    projector = projector_flops(VISION_DIM, d, N_VISUAL, hidden=d)
    measured = count_flops(lambda: llava(one_sample(image=True)))
    assert measured == seq2seq_flops(shape, PROMPT + N_VISUAL, ANSWER) + projector

    memvp = model(kind, "memvp", num_slots=16)
    projector = projector_flops(VISION_DIM, d, N_VISUAL, hidden=128)
    measured = count_flops(lambda: memvp(one_sample(image=True)))
    assert measured == seq2seq_flops(shape, PROMPT, ANSWER, 16) + projector
    assert measured == memvp.bridge.injection.lm_flops(memvp.language_model, PROMPT, N_VISUAL, ANSWER) \
        + memvp.bridge.connector.flops(N_VISUAL)

    memvp = model(kind, "memvp", num_slots=16, memory_in="decoder", layers=[1])
    measured = count_flops(lambda: memvp(one_sample(image=True)))
    assert measured == seq2seq_flops(shape, PROMPT, ANSWER, 16, encoder_memory_layers=0,
                                     decoder_memory_layers=1) + projector
    assert measured == memvp.bridge.injection.lm_flops(memvp.language_model, PROMPT, N_VISUAL, ANSWER) \
        + memvp.bridge.connector.flops(N_VISUAL)


def test_shapes_from_configs():
    from transformers import BartConfig, T5Config

    t5 = Seq2SeqShape.from_config(T5Config(), gated=False)  # t5-small
    assert t5.encoder == t5.decoder == LMShape(6, 512, 2048, 8, 8, 64, 32128, False)
    flan = Seq2SeqShape.from_config(T5Config(d_model=768, d_ff=2048, num_layers=12, num_heads=12,
                                             feed_forward_proj="gated-gelu"), gated=True)  # flan-t5-base
    assert flan.decoder == LMShape(12, 768, 2048, 12, 12, 64, 32128, True)
    bart = Seq2SeqShape.from_config(BartConfig(d_model=768, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=3072,
                                               decoder_ffn_dim=3072, encoder_attention_heads=12,
                                               decoder_attention_heads=12, vocab_size=50265), gated=False)  # bart-base
    assert bart.encoder == bart.decoder == LMShape(6, 768, 3072, 12, 12, 64, 50265, False)
    with pytest.raises(ValueError, match="Seq2SeqShape"):
        LMShape.of(Seq2SeqLanguageModel(tiny_seq2seq("t5")))
