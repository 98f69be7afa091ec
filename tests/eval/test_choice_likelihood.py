"""Multiple choice by option likelihood: per-row losses are the single-sample losses whatever the batch's
padding, for decoder-only and encoder-decoder LMs, with the image in the input or in the memory; the chosen
option is the most likely one."""

from __future__ import annotations

import pytest
import torch
from tiny_vlm import build_tiny_vlm

from vlbridge.batch import Collator
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.choice_likelihood import choose_by_likelihood, option_log_likelihoods, option_samples
from vlbridge.runs import prompt_collator

CHOICES = ["red", "dark blue square", "top left corner of the image", "no"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "a.png"
    pixels = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def question(image, answer_index: int = 1) -> Sample:
    return Sample("q7", (Turn("user", "<image>\nWhat is it?\nAnswer with the option's text."),
                         Turn("assistant", CHOICES[answer_index])),
                  image=image, source="test.json", meta={"choices": CHOICES, "answer_index": answer_index})


@pytest.fixture(scope="module", params=["llava", "memvp", "memvp-t5"])
def built(request, tiny_llama_dir, tiny_seq2seq_dirs, tiny_dinov2_dir):
    bridge, _, seq2seq = request.param.partition("-")
    return build_tiny_vlm(tiny_seq2seq_dirs[seq2seq] if seq2seq else tiny_llama_dir, tiny_dinov2_dir, bridge)


def answer_collator(built) -> Collator:
    return prompt_collator(built, with_answer=True)


def test_option_samples_replace_the_answer_with_each_option(image):
    options = option_samples(question(image))
    assert [s.answer for s in options] == CHOICES
    assert [s.id for s in options] == ["q7#0", "q7#1", "q7#2", "q7#3"]
    assert all(s.prompt_turns == question(image).prompt_turns and s.image == image for s in options)
    prompt_only = Sample("p", (Turn("user", "Which?"),), meta={"choices": ["a", "b"]})
    assert [s.answer for s in option_samples(prompt_only)] == ["a", "b"]


def test_a_question_without_options_names_its_record_and_field(image):
    with pytest.raises(DataError, match=r"q7.*meta\.choices|meta\.choices.*q7") as error:
        option_samples(Sample("q7", question(image).turns, source="test.json"))
    assert "test.json" in str(error.value)


def test_row_losses_are_each_rows_own_loss_and_sum_to_the_batch_loss(built, image):
    collator = answer_collator(built)
    options = option_samples(question(image))  # answers of 1 to 6 tokens: padded rows
    with torch.no_grad():
        out = built.model(collator(options), row_losses=True)
        alone = torch.stack([built.model(collator([s])).loss_sum for s in options])
    assert out.row_loss.shape == (len(CHOICES),)
    assert torch.allclose(out.row_loss, alone, rtol=1e-4, atol=1e-4)
    assert torch.allclose(out.row_loss.sum(), out.loss_sum, rtol=1e-5)
    with torch.no_grad():
        assert built.model(collator(options)).row_loss is None  # only when asked for


def test_the_chosen_option_is_the_most_likely_and_mean_divides_by_answer_tokens(built, image):
    collator = answer_collator(built)
    sample = question(image)
    summed = option_log_likelihoods(built.model, collator, sample)
    mean = option_log_likelihoods(built.model, collator, sample, reduce="mean")
    tokens = [collator([s]).num_supervised for s in option_samples(sample)]
    assert len(set(tokens)) > 1  # the options differ in length, so the two reductions differ
    assert mean == pytest.approx([s / n for s, n in zip(summed, tokens)], rel=1e-5)
    best = max(range(len(CHOICES)), key=summed.__getitem__)
    best_mean = max(range(len(CHOICES)), key=mean.__getitem__)
    assert choose_by_likelihood(built.model, collator, [sample, question(image, 0)]) == [best, best]
    assert choose_by_likelihood(built.model, collator, [sample], reduce="mean") == [best_mean]
    assert not built.model.training  # evaluation mode restored


def test_option_likelihoods_need_an_answer_collator_and_a_known_reduction(built, image):
    prompts = prompt_collator(built)
    with pytest.raises(ValueError, match="answer collator"):
        option_log_likelihoods(built.model, prompts, question(image))
    with pytest.raises(ConfigError, match="unknown reduction 'max'"):
        option_log_likelihoods(built.model, answer_collator(built), question(image), reduce="max")
