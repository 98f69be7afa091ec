"""Greedy decoding without a KV cache, the reference a cached generation is tested against."""

from __future__ import annotations

import torch

from vlbridge.models.language_model import positions_from_mask


def greedy_without_cache(lm, embeds, mask, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Re-run the whole sequence for every new token: ((B, steps) tokens, each step's (B, V) logits). ``lm`` is a
    :class:`vlbridge.models.language_model.LanguageModel`; ``embeds`` (B, T, d) and ``mask`` (B, T) left-padded."""
    tokens, logits = [], []
    for _ in range(steps):
        out = lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask),
                       use_cache=False).logits[:, -1]  # (B, V)
        logits.append(out)
        tokens.append(out.argmax(-1))
        embeds = torch.cat([embeds, lm.embed(tokens[-1][:, None])], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(tokens, 1), logits
