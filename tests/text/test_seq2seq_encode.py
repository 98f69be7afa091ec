"""Samples for encoder-decoder LMs: the prompt goes to the encoder, the last answer (+ EOS) is the decoder's
target, both framed by the tokenizer's own special tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_seq2seq import tiny_tokenizer

from vlbridge.batch import Collator, ImageInputs
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError
from vlbridge.text.chat_format import plain_format
from vlbridge.text.seq2seq import encode_seq2seq, special_framing
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID

QUESTION = Sample("q", (Turn("user", "<image>\nWhat colour is the circle?"), Turn("assistant", "red")))
TWO_TURNS = Sample("m", (Turn("user", "How many shapes?"), Turn("assistant", "3"), Turn("user", "<image>\nAnd stars?"),
                         Turn("assistant", "no stars")))


@pytest.fixture(scope="module", params=["t5", "bart"])
def tokenizer(request):
    return tiny_tokenizer(request.param)


def seq2seq_format(tokenizer):
    return replace(plain_format(tokenizer.eos_token), encoder_decoder=True)


def test_framing_is_the_tokenizers_own(tokenizer):
    before, after = special_framing(tokenizer)
    assert after == [tokenizer.eos_token_id]
    assert before == ([tokenizer.bos_token_id] if tokenizer.bos_token == "<s>" else [])


def test_prompt_to_the_encoder_answer_to_the_decoder(tokenizer):
    before, after = special_framing(tokenizer)
    encoded = encode_seq2seq(QUESTION, tokenizer, seq2seq_format(tokenizer))
    # the target is what Hugging Face's seq2seq fine-tuning uses: T5 "red </s>", BART "<s> red </s>"
    assert encoded.targets == tokenizer(text_target="red")["input_ids"]
    text = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert encoded.input_ids == before + [IMAGE_TOKEN_ID] + text("\nWhat colour is the circle?") + text("\n") + after
    assert encoded.labels == [IGNORE] * len(encoded.input_ids) and encoded.has_image
    prompt = encode_seq2seq(QUESTION, tokenizer, seq2seq_format(tokenizer), with_answer=False)
    assert prompt.input_ids == encoded.input_ids and prompt.targets is None


def test_earlier_answers_are_encoder_context(tokenizer):
    encoded = encode_seq2seq(TWO_TURNS, tokenizer, seq2seq_format(tokenizer))
    prompt = tokenizer.decode([t for t in encoded.input_ids if t != IMAGE_TOKEN_ID], skip_special_tokens=True)
    assert prompt == "How many shapes?\n3\n\nAnd stars?\n"  # the plain format: question \n answer <eos> \n ...
    assert tokenizer.decode(encoded.targets, skip_special_tokens=True) == "no stars"


def test_length_limits(tokenizer):
    fmt = seq2seq_format(tokenizer)
    long_answer = Sample("a", (Turn("user", "Hi"), Turn("assistant", "a very long answer " * 5)))
    with pytest.raises(DataError, match="more than max_length=8 .*never truncated"):
        encode_seq2seq(long_answer, tokenizer, fmt, max_length=8)
    long_prompt = Sample("p", (Turn("user", "<image>\n" + "describe every shape " * 4), Turn("assistant", "ok")))
    with pytest.raises(DataError, match="longer than max_length"):
        encode_seq2seq(long_prompt, tokenizer, fmt, max_length=12, image_tokens=4)
    cut = encode_seq2seq(long_prompt, tokenizer, fmt, max_length=12, image_tokens=4, truncation="truncate_prompt")
    assert len(cut.input_ids) - 1 + 4 == 12  # the image's 4 positions included; markup and answer kept


def test_a_tokenizer_without_eos_framing_gets_eos_appended(smol_tokenizer):
    assert special_framing(smol_tokenizer) == ([], [])
    encoded = encode_seq2seq(QUESTION, smol_tokenizer, seq2seq_format(smol_tokenizer))
    assert encoded.targets == smol_tokenizer.encode("red", add_special_tokens=False) + [smol_tokenizer.eos_token_id]


def test_collator_gives_targets_and_no_labels(tokenizer):
    grids = lambda samples: ImageInputs(grid=torch.zeros(len(samples), 4, 8))  # noqa: E731
    fmt = seq2seq_format(tokenizer)
    batch = Collator(tokenizer, fmt, grids, image_tokens=4)([QUESTION, TWO_TURNS])
    first, second = (encode_seq2seq(s, tokenizer, fmt) for s in (QUESTION, TWO_TURNS))
    assert batch.labels is None and batch.padding_side == "right"
    width = max(len(first.targets), len(second.targets))
    assert batch.targets.tolist() == [t.targets + [IGNORE] * (width - len(t.targets)) for t in (first, second)]
    assert batch.num_supervised == len(first.targets) + len(second.targets)
    assert batch.input_ids[0, : len(first.input_ids)].tolist() == first.input_ids
    assert torch.equal(batch.to("cpu").targets, batch.targets)
    prompts = Collator(tokenizer, fmt, grids, image_tokens=4, with_answer=False)([QUESTION, TWO_TURNS])
    assert prompts.targets is None and prompts.labels is None and prompts.padding_side == "left"
