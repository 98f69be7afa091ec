"""One batch of samples as tensors: padded token ids, labels, and the images' pixels or cached features."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from vlbridge.data.sample import Sample
from vlbridge.text.chat_format import ChatFormat
from vlbridge.text.seq2seq import encode_seq2seq
from vlbridge.text.tokenize import IGNORE, Encoded, TruncationPolicy, encode_sample


@dataclass
class ImageInputs:
    """What the model needs of the batch's images, for the rows with an image only (B_img of them):
    either pixels (for the vision encoder, or for a connector that reads pixels), or features a frozen encoder
    computed earlier (the cache); in training, also a teacher encoder's features for an auxiliary loss.

    A batch of clips (``num_frames`` set, every clip that long: :func:`vlbridge.data.clips.frames_per_clip`) has a
    frame axis after the batch axis in every tensor: pixels (B_img, F, C, H, W), grid (B_img, F, v, d_v), pooled
    (B_img, F, d_v), teacher (B_img, F, n_t, d_t)."""

    pixel_values: Tensor | None = None  # (B_img, C, H, W)
    grid: Tensor | None = None  # (B_img, n, d_v)
    pooled: Tensor | None = None  # (B_img, d_v)
    teacher: Tensor | None = None  # (B_img, n_t, d_t) the teacher encoder's grid features (training only)
    num_frames: int | None = None  # frames per clip when the rows are clips; None for single images

    def to(self, device) -> "ImageInputs":
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        return ImageInputs(move(self.pixel_values), move(self.grid), move(self.pooled), move(self.teacher),
                           self.num_frames)


@dataclass
class Batch:
    """A decoder-only LM reads ``input_ids`` (prompt and answers) with ``labels``; an encoder-decoder LM
    reads the prompt as ``input_ids`` (encoder) and the answer as ``targets`` (decoder), ``labels`` None."""

    input_ids: Tensor  # (B, L), IMAGE_TOKEN_ID at each row's image position
    attention_mask: Tensor  # (B, L)
    labels: Tensor | None  # (B, L), IGNORE except supervised answer tokens
    has_image: Tensor  # (B,) bool
    images: ImageInputs  # for the rows where has_image
    sample_ids: list[str] = field(default_factory=list)
    padding_side: str = "right"
    targets: Tensor | None = None  # (B, T) encoder-decoder LMs: decoder targets, right-padded with IGNORE
    sources: list[str] = field(default_factory=list)  # each row's data file ("" unknown), for error messages

    def to(self, device) -> "Batch":
        move = lambda t: t.to(device) if isinstance(t, Tensor) else t  # noqa: E731
        return replace(self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
                       labels=move(self.labels), has_image=move(self.has_image), images=self.images.to(device),
                       targets=move(self.targets))

    @property
    def num_supervised(self) -> int:
        if self.targets is not None:
            return int((self.targets != IGNORE).sum())
        return 0 if self.labels is None else int((self.labels[:, 1:] != IGNORE).sum())


def pad(sequences: Sequence[list[int]], value: int, side: str) -> Tensor:
    """Pad lists of ids into a (B, L) tensor on the given side."""
    width = max(len(s) for s in sequences)
    rows = [([value] * (width - len(s)) + s) if side == "left" else (s + [value] * (width - len(s))) for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


class Collator:
    """Samples -> :class:`Batch`. Training batches are right-padded with labels; generation batches
    (``with_answer=False``) are left-padded so every row's next token is at the last position.
    With an encoder-decoder chat format (``chat_format.encoder_decoder``) training batches carry the
    prompt as ``input_ids`` and the answer as ``targets`` (:mod:`vlbridge.text.seq2seq`)."""

    def __init__(
        self,
        tokenizer,
        chat_format: ChatFormat,
        load_images: Callable[[list[Sample]], ImageInputs],
        *,
        image_tokens: int,
        max_length: int | None = None,
        truncation: TruncationPolicy = "reject",
        with_answer: bool = True,
    ):
        self.tokenizer, self.chat_format, self.load_images = tokenizer, chat_format, load_images
        self.image_tokens, self.max_length, self.truncation = image_tokens, max_length, truncation
        self.with_answer = with_answer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def encode(self, sample: Sample) -> Encoded:
        encode = encode_seq2seq if self.chat_format.encoder_decoder else encode_sample
        return encode(sample, self.tokenizer, self.chat_format, with_answer=self.with_answer,
                      max_length=self.max_length, image_tokens=self.image_tokens, truncation=self.truncation)

    def __call__(self, samples: list[Sample]) -> Batch:
        encoded = [self.encode(s) for s in samples]
        side = "right" if self.with_answer else "left"
        input_ids = pad([e.input_ids for e in encoded], self.pad_id, side)
        attention_mask = pad([[1] * len(e.input_ids) for e in encoded], 0, side)
        seq2seq = self.with_answer and self.chat_format.encoder_decoder
        labels = pad([e.labels for e in encoded], IGNORE, side) if self.with_answer and not seq2seq else None
        targets = pad([e.targets for e in encoded], IGNORE, "right") if seq2seq else None
        has_image = torch.tensor([e.has_image for e in encoded], dtype=torch.bool)
        with_images = [s for s, e in zip(samples, encoded) if e.has_image]
        images = self.load_images(with_images) if with_images else ImageInputs()
        return Batch(input_ids, attention_mask, labels, has_image, images, [s.id for s in samples], side, targets,
                     [s.source for s in samples])
