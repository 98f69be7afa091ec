"""Exactly the answer tokens (and each answer's end-of-turn marker) are supervised, for SmolLM2's chat
template and for a plain template without chat markup."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import ConfigError, DataError
from vlbridge.text.chat_format import chat_format_for, format_from_template
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID, encode_sample

CONVERSATION = Sample("s1", (
    Turn("user", "<image>\nWhat color is the circle?"), Turn("assistant", "red"),
    Turn("user", "And where is it?"), Turn("assistant", "top left"),
), image=None)


def supervised_runs(encoded):
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def test_chat_format_renders_like_the_tokenizer_template(smol_tokenizer):
    fmt = format_from_template(smol_tokenizer)
    turns = [(t.role, t.text) for t in CONVERSATION.turns]
    messages = [{"role": r, "content": t} for r, t in turns]
    assert fmt.render(turns) == smol_tokenizer.apply_chat_template(messages, tokenize=False)
    assert fmt.render(turns[:1]) == smol_tokenizer.apply_chat_template(messages[:1], tokenize=False,
                                                                       add_generation_prompt=True)


def test_smollm2_only_answers_and_end_of_turn_supervised(smol_tokenizer):
    fmt = chat_format_for(smol_tokenizer)
    encoded = encode_sample(CONVERSATION, smol_tokenizer, fmt)
    runs = [smol_tokenizer.decode(run) for run in supervised_runs(encoded)]
    assert runs == ["red<|im_end|>", "top left<|im_end|>"]
    assert encoded.input_ids.count(IMAGE_TOKEN_ID) == 1
    # the sequence is the template's rendering with the image placeholder in place
    text = smol_tokenizer.decode([t for t in encoded.input_ids if t != IMAGE_TOKEN_ID])
    assert text == fmt.render([(t.role, t.text.replace("<image>", "")) for t in CONVERSATION.turns])


def test_prompt_encoding_ends_with_generation_prompt(smol_tokenizer):
    fmt = chat_format_for(smol_tokenizer)
    full = encode_sample(CONVERSATION, smol_tokenizer, fmt)
    prompt = encode_sample(CONVERSATION, smol_tokenizer, fmt, with_answer=False)
    assert smol_tokenizer.decode([t for t in prompt.input_ids if t >= 0]).endswith("<|im_start|>assistant\n")
    assert full.input_ids[: full.prompt_length] == prompt.input_ids
    assert smol_tokenizer.decode(full.input_ids[full.prompt_length:]).startswith("top left")


def test_plain_template_for_a_gpt2_style_lm(tiny_gpt2_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    assert not tokenizer.chat_template
    fmt = chat_format_for(tokenizer)
    encoded = encode_sample(CONVERSATION, tokenizer, fmt)
    runs = [tokenizer.decode(run) for run in supervised_runs(encoded)]
    eos = tokenizer.eos_token
    assert runs == [f"red{eos}", f"top left{eos}"]
    with pytest.raises(ConfigError, match="no chat_template"):
        chat_format_for(tokenizer, "template")


def test_over_long_sample_rejected_or_prompt_truncated(smol_tokenizer):
    fmt = chat_format_for(smol_tokenizer)
    long = Sample("long-1", (Turn("user", "<image>\n" + "word " * 200 + "What color?"), Turn("assistant", "blue")),
                  source="train.json")
    with pytest.raises(DataError, match=r"file train.json, record 'long-1', field 'conversations'"):
        encode_sample(long, smol_tokenizer, fmt, max_length=120, image_tokens=16)
    cut = encode_sample(long, smol_tokenizer, fmt, max_length=120, image_tokens=16, truncation="truncate_prompt")
    assert len(cut.input_ids) - 1 + 16 == 120
    assert [smol_tokenizer.decode(r) for r in supervised_runs(cut)] == ["blue<|im_end|>"]
    assert IMAGE_TOKEN_ID in cut.input_ids
    # markup survives: the system prompt and the generation prompt are intact
    assert smol_tokenizer.decode([t for t in cut.input_ids if t != IMAGE_TOKEN_ID]).startswith("<|im_start|>system")
    huge_answer = Sample("long-2", (Turn("user", "hi"), Turn("assistant", "no " * 300)))
    with pytest.raises(DataError, match="never truncated"):
        encode_sample(huge_answer, smol_tokenizer, fmt, max_length=100, truncation="truncate_prompt")


def test_empty_answer_is_rejected(smol_tokenizer):
    bad = Sample("e1", (Turn("user", "hi"), Turn("assistant", "")), source="x.json")
    with pytest.raises(DataError, match="empty answer"):
        encode_sample(bad, smol_tokenizer, chat_format_for(smol_tokenizer))


def test_system_prompt_replaces_the_template_default(smol_tokenizer):
    fmt = chat_format_for(smol_tokenizer, system_prompt="Answer briefly.")
    turns = [(t.role, t.text) for t in CONVERSATION.turns]
    messages = [{"role": "system", "content": "Answer briefly."}] + [{"role": r, "content": t} for r, t in turns]
    assert fmt.render(turns) == smol_tokenizer.apply_chat_template(messages, tokenize=False)
    assert "SmolLM" not in fmt.prefix
