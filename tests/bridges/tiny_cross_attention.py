"""Tiny LMs with gated cross-attention blocks attached, and the batches, visual vectors and forward passes the
cross-attention tests share."""

from __future__ import annotations

import torch

from vlbridge.bridges.injections.cross_attention import (
    CrossAttentionOptions,
    GatedCrossAttentionInjection,
    build_cross_attention,
)
from vlbridge.bridges.injections.splice import splice_visual_tokens
from vlbridge.models.language_model import LanguageModel, positions_from_mask
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID

VOCAB, WIDTH, LAYERS, N = 100, 64, 4, 5
IMG = IMAGE_TOKEN_ID
OPTIONS = CrossAttentionOptions(every=2, heads=2, head_dim=16, ff_mult=2)  # blocks before layers 0 and 2
PROMPTS = [  # left-padded in batches: rows of different lengths, text before the image, a text-only row
    [5, 6, 7, IMG, 8, 9],
    [10, 11, 12, 13, 14, 15, 16, 17],
    [IMG, 20, 21],
]
HAS_IMAGE = [True, False, True]
NEW_TOKENS = 5


def tiny_lm(kind: str) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if kind == "llama":
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=128, num_hidden_layers=LAYERS,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=LAYERS, n_head=4, n_positions=128,
                            pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = GPT2LMHeadModel(config)
    model.generation_config.eos_token_id = None  # always NEW_TOKENS steps
    return LanguageModel(model.eval())


def attached(kind: str, options: CrossAttentionOptions = OPTIONS, gates: float | None = None):
    torch.manual_seed(0)
    lm = tiny_lm(kind)
    injection = build_cross_attention(lm, options).eval()
    injection.attach(lm)
    if gates is not None:
        open_gates(injection, gates)
    return lm, injection


def open_gates(injection: GatedCrossAttentionInjection, value: float = 1.0) -> None:
    with torch.no_grad():
        for block in injection.blocks:
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)


def batch(prompts, side: str = "left", answers=None):
    """(ids, mask, labels) padded on ``side``; with ``answers`` they are appended and supervised."""
    rows = [p + (answers[k] if answers else []) for k, p in enumerate(prompts)]
    width = max(map(len, rows))

    def pad(seq, value):
        fill = [value] * (width - len(seq))
        return fill + seq if side == "left" else seq + fill

    ids = torch.tensor([pad(r, 0) for r in rows])
    mask = torch.tensor([pad([1] * len(r), 0) for r in rows])
    labels = None
    if answers:
        labels = torch.tensor([pad([IGNORE] * len(p) + answers[k], IGNORE) for k, p in enumerate(prompts)])
    return ids, mask, labels


def visual_for(rows: int, seed: int = 0, n: int = N) -> torch.Tensor:
    return torch.randn(rows, n, WIDTH, generator=torch.Generator().manual_seed(seed))


def logits(lm, injection, ids, mask, visual, has_image, side="left", visual_lengths=None):
    """(B, W, V) logits of the spliced (placeholder-free) sequence, through the injection."""
    with injection.inject(lm, ids, mask, visual, torch.tensor(has_image), None, side,
                          visual_lengths=visual_lengths) as inputs:
        out = lm.model(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                       position_ids=positions_from_mask(inputs.attention_mask), use_cache=False)
    return out.logits, inputs.attention_mask


def bare_logits(lm, ids, mask, side="left"):
    """The LM alone on the same text with the placeholder removed."""
    spliced = splice_visual_tokens(lm.embed, ids, mask, torch.zeros(ids.shape[0], 0, WIDTH), None, side)
    out = lm.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask,
                   position_ids=positions_from_mask(spliced.attention_mask), use_cache=False)
    return out.logits
