"""Replace each row's image placeholder by that row's visual tokens, for the whole batch at once.

Every output position is computed arithmetically (no per-sample Python loop): a real token's position is
its rank among the row's real tokens, plus ``n_b - 1`` if it comes after the row's placeholder; visual token
``j < n_b`` lands at ``placeholder + j``, where ``n_b`` is the row's number of visual tokens (``n`` for every
row, or ``visual_lengths[b]`` when images of different sizes share a batch: no padding token enters the LM).
Rows are aligned left or right in the output so left-padded batches stay left-padded for generation.
With ``n = 0`` the placeholder is simply removed (memory-space and cross-attention injections keep the
sequence text-only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID


@dataclass
class Spliced:
    inputs_embeds: Tensor  # (B, L', d)
    attention_mask: Tensor  # (B, L')
    labels: Tensor | None  # (B, L'), IGNORE on visual positions
    visual_positions: Tensor  # (B, L') bool, True where a visual token sits


def splice_visual_tokens(
    embed,  # callable: (B, L) ids -> (B, L, d); receives ids with the placeholder replaced by 0
    input_ids: Tensor,  # (B, L) with at most one IMAGE_TOKEN_ID per row
    attention_mask: Tensor,  # (B, L)
    visual: Tensor,  # (B, n, d) visual tokens; rows without a placeholder ignore theirs
    labels: Tensor | None = None,  # (B, L)
    padding_side: str = "right",
    visual_lengths: Tensor | None = None,  # (B,) visual tokens of each row (<= n); None = n for every row
) -> Spliced:
    B, L = input_ids.shape
    n = visual.shape[1]
    is_image = input_ids == IMAGE_TOKEN_ID  # (B, L)
    if (is_image.sum(1) > 1).any():
        raise ValueError("at most one image placeholder per row")
    text_embeds = embed(input_ids.masked_fill(is_image, 0))  # (B, L, d)
    has_image = is_image.any(1)  # (B,)
    real = attention_mask.bool()
    if visual_lengths is None:
        per_row = torch.full((B,), n, dtype=torch.long, device=input_ids.device)  # (B,)
    else:
        per_row = visual_lengths.to(device=input_ids.device, dtype=torch.long)
        if per_row.shape != (B,) or bool(((per_row < 0) | (per_row > n)).any()):
            raise ValueError(f"visual_lengths must be (B,) = ({B},) values in 0..{n}, got {visual_lengths.tolist()}")
    lengths = real.sum(1) + (per_row - 1) * has_image.long()  # (B,) each row's length after splicing
    width = int(lengths.max())
    # rows shorter than the widest are shifted right by the gap when left-padding
    offset = (width - lengths) if padding_side == "left" else torch.zeros_like(lengths)  # (B,)
    rank = real.long().cumsum(1) - 1  # (B, L) index of each real token within its row
    after = (is_image.long().cumsum(1) - is_image.long()).bool()  # (B, L) strictly after the placeholder
    text_pos = rank + (per_row[:, None] - 1) * after.long() + offset[:, None]  # (B, L)

    d = text_embeds.shape[-1]
    out = text_embeds.new_zeros(B, width, d)
    out_mask = attention_mask.new_zeros(B, width)
    out_labels = labels.new_full((B, width), IGNORE) if labels is not None else None
    keep = real & ~is_image  # real text tokens (the placeholder itself is replaced, padding rebuilt)
    rows = torch.arange(B, device=input_ids.device)[:, None].expand(B, L)
    out[rows[keep], text_pos[keep]] = text_embeds[keep]
    out_mask[rows[keep], text_pos[keep]] = attention_mask[keep]
    if labels is not None:
        out_labels[rows[keep], text_pos[keep]] = labels[keep]

    visual_positions = torch.zeros(B, width, dtype=torch.bool, device=input_ids.device)
    if n > 0 and has_image.any():
        start = (rank.gather(1, is_image.long().argmax(1, keepdim=True)).squeeze(1) + offset)[has_image]  # (B_img,)
        img_rows = torch.nonzero(has_image).squeeze(1)[:, None].expand(-1, n)  # (B_img, n)
        img_pos = start[:, None] + torch.arange(n, device=input_ids.device)  # (B_img, n)
        valid = torch.arange(n, device=input_ids.device) < per_row[has_image][:, None]  # (B_img, n)
        img_rows, img_pos = img_rows[valid], img_pos[valid]
        out[img_rows, img_pos] = visual[has_image][valid].to(out.dtype)
        out_mask[img_rows, img_pos] = 1
        visual_positions[img_rows, img_pos] = True
    return Spliced(out, out_mask, out_labels, visual_positions)
