"""Encode one :class:`Sample` for an encoder-decoder LM (T5, BART): prompt -> encoder, answer -> decoder.

The encoder's input is the conversation up to the last answer, laid out by the chat format exactly as
for a decoder-only LM (:func:`vlbridge.text.tokenize.encode_sample` with ``with_answer=False``: earlier
turns, answers included, are context) and framed by the tokenizer's own special tokens. The decoder's
target is the last answer, framed the same way and ending in EOS: T5 ``answer </s>``, BART
``<s> answer </s>``, which is what ``tokenizer(text_target=answer)`` gives and what these models are
fine-tuned on in Hugging Face's seq2seq examples (and VL-T5 / VL-BART, on which MemVP's BART/T5
experiments build). Every target token is supervised. Choices that are ours: only the last answer is a
target (earlier answers are encoder context), and a tokenizer that frames no EOS gets one appended.
"""

from __future__ import annotations

from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.text.chat_format import ChatFormat
from vlbridge.text.tokenize import IGNORE, Encoded, TruncationPolicy, encode_sample

_PROBE = "a"


def special_framing(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a text (T5: ``[]``, ``[</s>]``; BART:
    ``[<s>]``, ``[</s>]``), found by encoding a probe text with and without them."""
    plain = tokenizer.encode(_PROBE, add_special_tokens=False)
    framed = tokenizer.encode(_PROBE, add_special_tokens=True)
    for start in range(len(framed) - len(plain) + 1):
        if framed[start:start + len(plain)] == plain:
            return framed[:start], framed[start + len(plain):]
    raise ConfigError(f"{type(tokenizer).__name__} changes a text's own tokens when it adds special tokens")


def encode_seq2seq(
    sample: Sample,
    tokenizer,
    chat_format: ChatFormat,
    *,
    with_answer: bool = True,
    max_length: int | None = None,
    image_tokens: int = 1,
    truncation: TruncationPolicy = "reject",
) -> Encoded:
    """Encoder ids (``input_ids``, the image placeholder included) and decoder ``targets``.

    ``labels`` are all IGNORE (no encoder position is supervised). ``max_length`` bounds the positions the
    encoder sees (``image_tokens`` for the image) and, separately, the target's length; an over-long
    prompt is rejected or cut as in :func:`encode_sample`, an over-long answer is always rejected.
    """
    before, after = special_framing(tokenizer)
    budget = None if max_length is None else max_length - len(before) - len(after)
    prompt = encode_sample(sample, tokenizer, chat_format, with_answer=False, max_length=budget,
                           image_tokens=image_tokens, truncation=truncation)
    input_ids = before + prompt.input_ids + after
    targets = None
    if with_answer:
        answer = sample.answer
        if not answer:
            raise DataError("no answer to learn (the last turn must be a non-empty assistant turn)",
                            file=sample.source or None, record=sample.id, field="conversations")
        targets = before + tokenizer.encode(answer, add_special_tokens=False) + after
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ConfigError(f"{type(tokenizer).__name__} has no EOS token to end the decoder's target")
        if targets[-1:] != [eos]:
            targets.append(eos)
        if max_length is not None and len(targets) > max_length:
            raise DataError(f"the answer takes {len(targets)} decoder tokens, more than max_length={max_length} "
                            "(answers are never truncated)", file=sample.source or None, record=sample.id,
                            field="conversations")
    return Encoded(input_ids, [IGNORE] * len(input_ids), len(input_ids), prompt.has_image, targets)
