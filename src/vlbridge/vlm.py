"""The assembled model: vision encoder (optional) + bridge + language model.

The language model is decoder-only (:class:`LanguageModel`) or encoder-decoder
(:class:`vlbridge.models.seq2seq_language_model.Seq2SeqLanguageModel`): for the latter the injection
works on the encoder's input (the prompt), which is always right-aligned as Hugging Face's encoders
expect (BART's learned absolute positions would shift under left padding), and the answer is the
decoder's target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlbridge.batch import Batch
from vlbridge.bridges.bridge import Bridge
from vlbridge.models.language_model import LanguageModel, LMOutput, positions_from_mask


class VisionLanguageModel(nn.Module):
    """``forward`` gives the answer-token loss; ``generate`` answers a left-padded prompt batch.

    The vision encoder may be None when batches carry precomputed features (frozen encoder + cache)
    or when the bridge reads pixels itself (EVE).
    """

    def __init__(self, language_model: LanguageModel, bridge: Bridge, vision_encoder: nn.Module | None = None):
        super().__init__()
        self.language_model = language_model
        self.bridge = bridge
        self.vision_encoder = vision_encoder
        bridge.injection.attach(language_model)

    def visual_vectors(self, batch: Batch) -> Tensor:
        """(B, n', d) visual vectors; rows without an image are zeros (never read by input-space
        injection; MemVP's indicator zeroes them as in its code)."""
        images = batch.images
        grid, pooled = images.grid, images.pooled
        if grid is None and images.pixel_values is not None:
            if self.vision_encoder is None:
                raise ValueError("the batch holds pixels but the model has no vision encoder")
            features = self.vision_encoder(images.pixel_values)
            grid, pooled = features.grid, features.pooled
        B = batch.input_ids.shape[0]
        d = self.language_model.hidden_size
        if grid is None:  # a text-only batch: no image anywhere
            n = self.bridge.injection.visual_sequence_length(0)
            return self.language_model.embed(batch.input_ids[:, :0]).new_zeros(B, n, d)
        visual = self.bridge(grid, pooled)  # (B_img, n', d)
        out = visual.new_zeros(B, visual.shape[1], d)
        out[batch.has_image] = visual
        return out

    def forward(self, batch: Batch, output_hidden_states: bool = False, row_losses: bool = False) -> LMOutput:
        visual = self.visual_vectors(batch)
        lm = self.language_model
        side = "right" if lm.is_encoder_decoder else batch.padding_side
        with self.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask, visual,
                                          batch.has_image, batch.labels, side) as inputs:
            labels = batch.targets if lm.is_encoder_decoder else inputs.labels
            return lm(inputs.inputs_embeds, inputs.attention_mask, labels, output_hidden_states=output_hidden_states,
                      row_losses=row_losses)

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
        visual = self.visual_vectors(batch)
        model = self.language_model.model
        with self.bridge.injection.inject(self.language_model, batch.input_ids, batch.attention_mask, visual,
                                          batch.has_image, None, "right" if seq2seq else "left") as inputs:
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
