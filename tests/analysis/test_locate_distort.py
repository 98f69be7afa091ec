"""Visual knowledge locating and distortion on a tiny MemVP model."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "bridges" / "memvp"))
from tiny_memvp import GRID, make_batch, memvp_model, randomise_memory, tiny_llama  # noqa: E402

from vlbridge.analysis import distort, grid_shape, lm_positions, locate, save_overlay  # noqa: E402
from vlbridge.text.tokenize import IMAGE_TOKEN_ID  # noqa: E402

PROMPT = [5, 6, IMAGE_TOKEN_ID, 7, 8, 9, 10]


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = memvp_model(tiny_llama(layers=3), lam=1.0, scale=1.0)
    randomise_memory(model)
    return model


def test_positions_skip_the_placeholder_and_padding():
    right = make_batch([PROMPT], [True])
    assert lm_positions(right, [0, 1, 3, 6]) == [0, 1, 2, 5]
    left = make_batch([PROMPT, PROMPT + [11, 12]], [True, True], side="left")
    one = replace(left, input_ids=left.input_ids[:1], attention_mask=left.attention_mask[:1])
    assert lm_positions(one, [2, 3, 5]) == [0, 1, 2]  # two padding columns first
    with pytest.raises(ValueError, match="placeholder"):
        lm_positions(right, [2])
    with pytest.raises(ValueError, match="not a real token"):
        lm_positions(one, [0])


def test_locate_is_phi_of_x_with_the_visual_keys(model):
    batch = make_batch([PROMPT], [True])
    lm, injection = model.language_model, model.bridge.injection
    captured = {}
    hooks = [lm.ffn(i).register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0][0]))
             for i in range(3)]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    f_z = injection.lam * model.bridge.connector(batch.images.grid)[0]  # (n, d)
    # LM positions 3 and 5 are columns 4 and 6 of the prompt (the placeholder was column 2)
    expected = torch.stack([F.silu(captured[i][[3, 5]] @ f_z.T) for i in range(3)]).mean(0)
    got = locate(model, batch, [4, 6])
    assert got.shape == (2, GRID)
    torch.testing.assert_close(got, expected)
    assert injection._captured is None and injection._memory is None


def test_locate_respects_the_layer_subset():
    torch.manual_seed(0)
    model = memvp_model(tiny_llama(layers=3), lam=1.0, layers=[1])
    randomise_memory(model)
    batch = make_batch([PROMPT], [True])
    lm = model.language_model
    captured = {}
    hook = lm.ffn(1).register_forward_pre_hook(lambda m, a: captured.__setitem__(1, a[0][0]))
    with torch.no_grad():
        model(batch)
    hook.remove()
    f_z = model.bridge.injection.lam * model.bridge.connector(batch.images.grid)[0]
    torch.testing.assert_close(locate(model, batch, [0]), F.silu(captured[1][[0]] @ f_z.T))


def test_locate_needs_one_sample_with_an_image(model):
    with pytest.raises(ValueError, match="one sample"):
        locate(model, make_batch([PROMPT, PROMPT], [True, True]), [0])
    with pytest.raises(ValueError, match="no image"):
        locate(model, make_batch([[5, 6, 7]], [False]), [0])


def test_distort_zeroes_the_most_responsive_entries(model):
    batch = make_batch([PROMPT], [True])
    options = dict(max_new_tokens=5, pad_token_id=0)
    result = distort(model, batch, top_k=3, **options)
    expected = locate(model, batch, [0, 1, 3, 4, 5, 6]).mean(0)
    torch.testing.assert_close(result.responses, expected)
    assert result.zeroed == sorted(expected.topk(3).indices.tolist())
    assert torch.equal(result.original, model.generate(replace(batch, labels=None, padding_side="left"), **options)[0])
    # zeroing every visual entry leaves only the position embeddings: the answer of the text-only prompt
    everything = distort(model, batch, top_k=GRID, **options)
    text_only = make_batch([[t for t in PROMPT if t != IMAGE_TOKEN_ID]], [False], side="left")
    assert torch.equal(everything.distorted, model.generate(text_only, **options)[0])
    assert everything.changed
    assert len(model.bridge._forward_hooks) == 0


def test_overlay_png(tmp_path):
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    path = save_overlay(image, torch.rand(2, 9), ["red", "circle"], tmp_path / "heat.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (900, 320)  # three 3-inch panels at 100 dpi
    assert grid_shape(256) == (16, 16)
    with pytest.raises(ValueError, match="square"):
        grid_shape(50)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_locate_and_distort_on_an_encoder_decoder_lm(kind):
    """The prompt is the encoder's input: responses come from the encoder's memory layers only."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tiny_seq2seq import tiny_seq2seq

    from vlbridge.bridges.registry import build_preset
    from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
    from vlbridge.vlm import VisionLanguageModel

    torch.manual_seed(0)
    lm = Seq2SeqLanguageModel(tiny_seq2seq(kind))
    model = VisionLanguageModel(lm, build_preset("memvp", 24, lm, {"num_slots": 12, "memory_in": "both",
                                                                  "lam": 1.0})).eval()
    randomise_memory(model)
    injection = model.bridge.injection
    batch = make_batch([PROMPT], [True])
    encoder_sites = [site for site in lm.ffn_sites() if site.stack == "encoder"]
    captured = {}
    hooks = [site.input.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0][0]))
             for i, site in enumerate(encoder_sites)]
    with torch.no_grad(), injection.inject(lm, batch.input_ids, batch.attention_mask, model.visual_vectors(batch),
                                           batch.has_image, None, "right") as inputs:
        lm(inputs.inputs_embeds, inputs.attention_mask)  # the encoder alone
    for h in hooks:
        h.remove()
    f_z = injection.lam * model.bridge.connector(batch.images.grid)[0]  # (n, d)
    # encoder positions 3 and 5 are prompt columns 4 and 6 (the placeholder was column 2)
    expected = torch.stack([injection.phi(i)(captured[i][[3, 5]] @ f_z.T) for i in range(len(encoder_sites))]).mean(0)
    torch.testing.assert_close(locate(model, batch, [4, 6]), expected)

    # zeroing every visual entry leaves only the position embeddings: the answer of the text-only prompt
    result = distort(model, batch, top_k=GRID, max_new_tokens=4, pad_token_id=0)
    text_only = make_batch([[t for t in PROMPT if t != IMAGE_TOKEN_ID]], [False])
    assert result.zeroed == list(range(GRID))
    assert torch.equal(result.distorted, model.generate(text_only, max_new_tokens=4, pad_token_id=0)[0])

    injection.detach()
    decoder_only = VisionLanguageModel(lm, build_preset("memvp", 24, lm, {"num_slots": 12, "memory_in": "decoder"}))
    with pytest.raises(ValueError, match="only in the decoder"):
        locate(decoder_only.eval(), batch, [4])
