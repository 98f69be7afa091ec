"""Visual knowledge locating (MemVP paper, analyses): which image regions a text token reads.

For text token t at memory layer l, the response to visual slot j is ``phi(<x_t, lam f(z_j)>)``: the
activation of slot j's key in the FFN's memory, with x the FFN's (normalised) input, keeping only the
visual part of the key (the position embedding p_k is left out). Averaged over the memory layers it is
a heat map over the image grid.

On an encoder-decoder LM (T5, BART) the prompt is the encoder's input: the responses are read in the
encoder's memory layers (``memory_in`` encoder or both); a memory only in the decoder never meets the
prompt's tokens, and locating there is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vlbridge.batch import Batch
from vlbridge.bridges.injections.memory_space import MemorySpaceInjection
from vlbridge.text.tokenize import IMAGE_TOKEN_ID


def memory_injection(model) -> MemorySpaceInjection:
    injection = model.bridge.injection
    if not isinstance(injection, MemorySpaceInjection):
        raise ValueError(f"the analyses need a memory-space bridge (MemVP), not {type(injection).__name__}")
    return injection


def _single_image_row(batch: Batch) -> None:
    if batch.input_ids.shape[0] != 1:
        raise ValueError(f"the analyses take one sample at a time, got a batch of {batch.input_ids.shape[0]}")
    if not bool(batch.has_image[0]):
        raise ValueError("the sample has no image")


def lm_positions(batch: Batch, token_positions: Sequence[int]) -> list[int]:
    """Columns of a one-row ``batch.input_ids`` -> positions in the LM's sequence, from which the
    memory-space injection removed the image placeholder and the padding (see ``splice.py``)."""
    real = batch.attention_mask[0].bool()
    rank = real.long().cumsum(0) - 1  # (L,) index among the real tokens
    is_image = batch.input_ids[0] == IMAGE_TOKEN_ID
    after = (is_image.long().cumsum(0) - is_image.long()).bool()  # strictly after the placeholder
    out = []
    for p in token_positions:
        if not 0 <= p < len(real) or not real[p]:
            raise ValueError(f"token position {p} is not a real token of the prompt (length {len(real)})")
        if is_image[p]:
            raise ValueError(f"token position {p} is the image placeholder, not a text token")
        out.append(int(rank[p]) - int(after[p]))
    return out


@torch.no_grad()
def locate(model, batch: Batch, token_positions: Sequence[int]) -> Tensor:
    """Responses (T, n) of the T chosen prompt tokens (columns of ``batch.input_ids``) to the image's n
    visual vectors, averaged over the memory layers. ``batch`` holds one sample with an image."""
    _single_image_row(batch)
    injection = memory_injection(model)
    lm = model.language_model
    visual = model.visual_vectors(batch)  # (1, n, d)
    n = visual.shape[1]
    content = injection.visual_part(visual, batch.has_image)[0, :n]  # (n, d_c) lam * f(z)
    positions = lm_positions(batch, token_positions)
    seq2seq = lm.is_encoder_decoder
    if seq2seq and not injection.layers_in("encoder"):
        raise ValueError("the memory is only in the decoder, which never reads the prompt's tokens; locating "
                         "needs memory in the encoder (memvp memory_in: encoder or both)")
    # the LM alone runs: a decoder-only LM over the prompt, an encoder-decoder LM's encoder (no targets)
    with injection.inject(lm, batch.input_ids, batch.attention_mask, visual, batch.has_image, None,
                          "right" if seq2seq else batch.padding_side) as inputs, \
            injection.capture_inputs() as captured:
        lm(inputs.inputs_embeds, inputs.attention_mask)
    responses = []
    for layer in sorted(captured):  # the memory layers the prompt went through
        x = captured[layer][0, positions, : content.shape[-1]]  # (T, d_c); concat mode: the content features
        responses.append(injection.phi(layer)(x @ content.to(x.dtype).T))  # (T, n)
    return torch.stack(responses).mean(0).float()


def grid_shape(num_visual: int) -> tuple[int, int]:
    """(rows, columns) of a square grid of ``num_visual`` patches (ViT: 16 x 16 = 256, CNN: 7 x 7 = 49)."""
    side = math.isqrt(num_visual)
    if side * side != num_visual:
        raise ValueError(f"{num_visual} visual vectors do not form a square grid")
    return side, side
