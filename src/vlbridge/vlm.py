"""The assembled model: visual front end (a vision encoder, or none) + bridge + language model.

The language model is decoder-only (:class:`LanguageModel`) or encoder-decoder
(:class:`vlbridge.models.seq2seq_language_model.Seq2SeqLanguageModel`): for the latter the injection
works on the encoder's input (the prompt), which is always right-aligned as Hugging Face's encoders
expect (BART's learned absolute positions would shift under left padding), and the answer is the
decoder's target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from vlbridge.batch import Batch
from vlbridge.bridges.bridge import Bridge
from vlbridge.errors import DataError
from vlbridge.models.language_model import LanguageModel, LMOutput, positions_from_mask
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID


def prompt_tokens(batch: Batch) -> tuple[Tensor, Tensor]:
    """The text prompt of each row with an image, for a connector that reads it: (B_img, T) ids and mask,
    left-padded, the image placeholder left out. In training (labels) the prompt is what precedes the first
    supervised token, so the connector never sees the answer; in generation it is the whole input."""
    keep = batch.attention_mask.bool() & (batch.input_ids != IMAGE_TOKEN_ID)
    if batch.labels is not None:
        keep &= (batch.labels != IGNORE).long().cumsum(-1) == 0
    rows = [ids[mask] for ids, mask in zip(batch.input_ids[batch.has_image], keep[batch.has_image])]
    T = max((len(r) for r in rows), default=0)
    ids = batch.input_ids.new_zeros(len(rows), T)
    mask = batch.attention_mask.new_zeros(len(rows), T)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, T - len(row):], mask[i, T - len(row):] = row, 1
    return ids, mask


class VisionLanguageModel(nn.Module):
    """``forward`` gives the answer-token loss; ``generate`` answers a left-padded prompt batch.

    The vision encoder is None when the bridge's connector reads pixels itself (encoder-free models); a
    feature connector may also run without it on batches of precomputed features (frozen encoder + cache).
    Preprocessing and the number of visual tokens belong to the front end and the connector:
    :meth:`preprocess`, :attr:`num_connector_inputs`, :attr:`image_positions`. ``teacher`` (training only, or
    None) is a frozen encoder whose features ``aligner`` (training only too: EVE's patch aligning layer) learns to
    predict from the LM's hidden states, an auxiliary loss (:class:`vlbridge.bridges.eve.pal.WithAlignment`); the
    forward pass runs neither: batches carry the teacher's features (``ImageInputs.teacher``).
    """

    def __init__(self, language_model: LanguageModel, bridge: Bridge, vision_encoder: nn.Module | None = None,
                 teacher: nn.Module | None = None, aligner: nn.Module | None = None):
        super().__init__()
        self.language_model = language_model
        self.bridge = bridge
        self.vision_encoder = vision_encoder
        self.teacher = teacher  # a frozen encoder for auxiliary losses, in training only (its features come cached)
        self.aligner = aligner  # what learns from the teacher (EVE's PAL), in training only, never saved for inference
        bridge.injection.attach(language_model)

    # --- the front end ---------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images -> the pixel tensor the front end reads: the encoder's preprocessing, or the pixel
        connector's own."""
        if self.vision_encoder is not None:
            return self.vision_encoder.preprocess(images)
        return self.bridge.connector.preprocess(images)

    @property
    def num_connector_inputs(self) -> int:
        """Vectors (encoder grid cells, or patches of the largest image) reaching the bridge per image."""
        if self.vision_encoder is not None:
            return self.vision_encoder.num_tokens
        if self.bridge.consumes != "pixels":
            raise ValueError("a feature connector without a vision encoder: its input count is unknown")
        return self.bridge.connector.max_inputs

    @property
    def image_positions(self) -> int:
        """Sequence positions one image takes in the LM at most (for length limits)."""
        bridge = self.bridge
        return bridge.injection.visual_sequence_length(bridge.num_visual_tokens(self.num_connector_inputs))

    def visual_vectors(self, batch: Batch) -> Tensor:
        """(B, n', d) visual vectors (:meth:`visual_tokens` without the counts)."""
        return self.visual_tokens(batch)[0]

    def visual_tokens(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """(B, n', d) visual vectors and each row's count of them (B,), or None when every image gives n';
        rows without an image are zeros (never read by input-space injection; MemVP's indicator zeroes them
        as in its code) with count 0.

        Clips (``batch.images.num_frames``): the encoder reads each frame alone, and the connector, if it takes
        clips (:meth:`~vlbridge.bridges.connectors.base.Connector.frames_refused`), reads the frames' grids
        together, (B_img, F, v, d_v), and gives its n' vectors per clip, as for an image."""
        images = batch.images
        frames = images.num_frames
        if frames is not None:
            self._check_clips(batch, frames)
        grid, pooled, pixels = images.grid, images.pooled, None
        if self.bridge.consumes == "pixels":
            pixels = images.pixel_values
        elif grid is None and images.pixel_values is not None:
            if self.vision_encoder is None:
                raise ValueError("the batch holds pixels but the model has no vision encoder")
            pixel_values = images.pixel_values
            if frames is not None:
                pixel_values = pixel_values.flatten(0, 1)  # (B_img * F, C, H, W): each frame alone
            features = self.vision_encoder(pixel_values)
            grid, pooled = features.grid, features.pooled
            if frames is not None:  # (B_img, F, v, d_v) and (B_img, F, d_v)
                grid = grid.unflatten(0, (-1, frames))
                pooled = pooled.unflatten(0, (-1, frames)) if pooled is not None else None
        B = batch.input_ids.shape[0]
        d = self.bridge.injection.input_width(self.language_model)
        if grid is None and pixels is None:  # a text-only batch: no image anywhere
            n = self.bridge.injection.visual_sequence_length(0)
            return self.language_model.embed(batch.input_ids[:, :0]).new_zeros(B, n, d), None
        prompt = prompt_tokens(batch) if self.bridge.connector.reads_prompt else None
        visual, lengths = self.bridge(grid, pooled, pixels, prompt)  # (B_img, n', d), (B_img,) or None
        out = visual.new_zeros(B, visual.shape[1], d)
        out[batch.has_image] = visual
        if lengths is None:
            return out, None
        counts = lengths.new_zeros(B)
        counts[batch.has_image] = lengths
        return out, counts

    def _check_clips(self, batch: Batch, frames: int) -> None:
        """Refuse a batch of clips the connector cannot read, naming the first clip's record."""
        why = self.bridge.connector.frames_refused(frames)
        if why is None:
            return
        rows = batch.has_image.nonzero().flatten().tolist()
        row = rows[0] if rows else 0
        record = batch.sample_ids[row] if row < len(batch.sample_ids) else None
        source = batch.sources[row] if row < len(batch.sources) else ""
        raise DataError(why, file=source or None, record=record, field="image")

    def forward(self, batch: Batch, output_hidden_states: bool = False, row_losses: bool = False) -> LMOutput:
        """The answer-token loss; with ``output_hidden_states`` also the LM's hidden states (embedding output
        first) and ``visual_positions`` (B, L') where the image's vectors sit in the sequence the LM saw
        (input-space injection; all False for the others), for auxiliary losses on the image positions."""
        visual, lengths = self.visual_tokens(batch)
        lm = self.language_model
        side = "right" if lm.is_encoder_decoder else batch.padding_side
        with self.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual,
                                          batch.has_image, batch.labels, side, lengths) as inputs:
            labels = batch.targets if lm.is_encoder_decoder else inputs.labels
            out = lm(inputs.inputs_embeds, inputs.attention_mask, labels, output_hidden_states=output_hidden_states,
                     row_losses=row_losses)
        if output_hidden_states:
            out.visual_positions = inputs.visual_positions
        return out

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, seed: int | None = None) -> Tensor:
        """Batched generation with the LM's KV cache (Hugging Face ``generate`` on input embeddings).

        ``batch`` must be left-padded (a Collator with ``with_answer=False``) for a decoder-only LM; an
        encoder-decoder LM takes the prompt padded on either side (its encoder input is right-aligned here).
        Returns (B, T) new token ids, padded with ``pad_token_id`` after each row's end of sequence.
        ``eos_token_id`` / ``pad_token_id`` left as None take the LM's generation config's (so generation
        still stops at the model's end of sequence); to generate exactly ``max_new_tokens``, set
        ``language_model.model.generation_config.eos_token_id = None``.
        """
        seq2seq = self.language_model.is_encoder_decoder
        if batch.padding_side != "left" and not seq2seq:
            raise ValueError("generation needs a left-padded batch (Collator(with_answer=False))")
        if seed is not None:
            torch.manual_seed(seed)
        visual, lengths = self.visual_tokens(batch)
        model = self.language_model.model
        with self.bridge.injection.inject(self.language_model, batch.input_ids, batch.attention_mask, visual,
                                          batch.has_image, None, "right" if seq2seq else "left", lengths) as inputs:
            # the encoder has no position ids to pass (T5: relative, BART: from 0 on the right-aligned input)
            positions = {} if seq2seq else {"position_ids": positions_from_mask(inputs.attention_mask)}
            out = model.generate(
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=inputs.attention_mask,
                **positions,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_p=top_p if do_sample else None,
                top_k=None,
                # None must not reach generate(): it would override the generation config's ids
                **{name: value for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id))
                   if value is not None},
            )
        # an encoder-decoder's output starts with the decoder's start token, which was not generated
        return out[:, 1:] if seq2seq else out

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only what trains: the bridge (and adapters or LoRA, if any) — a few MB, not the whole LM."""
        return {name: p.detach().clone() for name, p in self.trainable_parameters().items()}
