"""Encode one :class:`Sample` into token ids and labels, piece by piece.

Each piece of the rendered conversation (template markup, user text, image placeholder, answer, end of
turn) is tokenized on its own and concatenated, so we know exactly which ids came from the answers:
those, and each answer's end-of-turn marker, are the only supervised tokens.
The image placeholder becomes the single id :data:`IMAGE_TOKEN_ID`, which the injection replaces by
the bridge's visual tokens (input space) or removes (memory space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.text.chat_format import ChatFormat

IMAGE_TOKEN_ID = -200  # never a real vocabulary id; replaced before the embedding lookup
IGNORE = -100  # label of an unsupervised position (PyTorch cross-entropy's ignore_index)

TruncationPolicy = Literal["reject", "truncate_prompt"]
TRUNCATION_POLICIES = ("reject", "truncate_prompt")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE except on answer tokens and their end-of-turn marker
    prompt_length: int  # tokens before the last answer (what generation is conditioned on)
    has_image: bool
    targets: list[int] | None = None  # encoder-decoder LMs: the decoder's target (answer + EOS); input_ids = prompt


def encode_sample(
    sample: Sample,
    tokenizer,
    chat_format: ChatFormat,
    *,
    with_answer: bool = True,
    max_length: int | None = None,
    image_tokens: int = 1,
    truncation: TruncationPolicy = "reject",
) -> Encoded:
    """Token ids and labels of ``sample``.

    ``with_answer=False`` encodes only the prompt (up to the generation prompt of the last answer).
    ``image_tokens`` is how many positions the image will take after injection (the sequence length
    the LM sees is ``len(input_ids) - 1 + image_tokens``), so ``max_length`` bounds what the LM sees.
    An over-long sample is rejected, or with ``truncate_prompt`` loses user-text tokens from the start
    of the first user turn; template markup, the image and the answers are never cut.
    """
    if truncation not in TRUNCATION_POLICIES:
        raise ConfigError(f"unknown truncation policy {truncation!r}; valid: {list(TRUNCATION_POLICIES)}")
    turns = list(sample.turns if with_answer else sample.prompt_turns)
    pieces: list[tuple[list[int], bool, bool]] = []  # (ids, supervised, cuttable user text)

    def add(text: str, supervised: bool = False, cuttable: bool = False) -> None:
        if text:
            pieces.append((tokenizer.encode(text, add_special_tokens=False), supervised, cuttable))

    add(chat_format.prefix)
    for i, turn in enumerate(turns):
        if turn.role == "user":
            if i > 0:
                add(chat_format.assistant_to_user)
            before, placeholder, after = turn.text.partition(IMAGE_PLACEHOLDER)
            add(before, cuttable=True)
            if placeholder:
                pieces.append(([IMAGE_TOKEN_ID], False, False))
            add(after, cuttable=True)
            add(chat_format.user_to_assistant)
        else:
            answer_piece = len(pieces)
            if not turn.text:
                raise DataError("empty answer", file=sample.source or None, record=sample.id, field="conversations")
            add(turn.text, supervised=True)
            add(chat_format.assistant_end, supervised=True)
    if turns and turns[-1].role == "assistant":
        add(chat_format.suffix)  # markup after the last answer: in the sequence, not supervised
    else:
        answer_piece = len(pieces)

    input_ids = [t for ids, _, _ in pieces for t in ids]
    has_image = IMAGE_TOKEN_ID in input_ids
    if max_length is not None:
        overflow = len(input_ids) - 1 + (image_tokens if has_image else 1) - max_length
        if overflow > 0:
            if truncation == "reject":
                raise DataError(
                    f"{overflow} tokens longer than max_length={max_length} "
                    f"(use truncation='truncate_prompt' to cut the prompt)",
                    file=sample.source or None, record=sample.id, field="conversations",
                )
            pieces = _cut_prompt(pieces, overflow, sample)
    input_ids, labels = [], []
    prompt_length = 0
    for k, (ids, supervised, _) in enumerate(pieces):
        if k == answer_piece:
            prompt_length = len(input_ids)
        input_ids += ids
        labels += ids if supervised else [IGNORE] * len(ids)
    if answer_piece == len(pieces):
        prompt_length = len(input_ids)
    return Encoded(input_ids, labels, prompt_length, has_image)


def _cut_prompt(pieces, overflow: int, sample: Sample):
    out = []
    for ids, supervised, cuttable in pieces:
        if cuttable and overflow > 0:
            cut = min(overflow, len(ids))
            ids, overflow = ids[cut:], overflow - cut
        out.append((ids, supervised, cuttable))
    if overflow > 0:
        raise DataError(
            "too long even with the whole prompt text cut (answers and image are never truncated)",
            file=sample.source or None, record=sample.id, field="conversations",
        )
    return out
