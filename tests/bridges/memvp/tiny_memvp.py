"""Tiny random LMs and hand-made batches for the MemVP tests (no tokenizer needed: ids are small ints)."""

from __future__ import annotations

import torch

from vlbridge.batch import Batch, ImageInputs
from vlbridge.bridges.registry import build_preset
from vlbridge.models.language_model import LanguageModel
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID
from vlbridge.vlm import VisionLanguageModel

VOCAB = 97
VISION_DIM = 24
GRID = 9  # 3 x 3 visual features per image


def tiny_llama(layers: int = 2) -> LanguageModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return LanguageModel(LlamaForCausalLM(config).eval())


def tiny_gpt2(layers: int = 2) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=256,
                        pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return LanguageModel(GPT2LMHeadModel(config).eval())


def memvp_model(lm: LanguageModel, **options) -> VisionLanguageModel:
    options.setdefault("num_slots", 12)
    return VisionLanguageModel(lm, build_preset("memvp", VISION_DIM, lm, options)).eval()


def randomise_memory(model: VisionLanguageModel, seed: int = 1) -> None:
    """Give p_k, p_v and the projector values that make the branch matter (p_v starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.bridge.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def make_batch(rows: list[list[int]], images: list[bool], *, side: str = "right", answers: list[list[int]] | None = None,
               seed: int = 0) -> Batch:
    """``rows`` of prompt ids (IMAGE_TOKEN_ID marks the image), padded on ``side``; with ``answers`` the
    answer ids are appended and supervised. Image rows get seeded random grid features."""
    ids, labels = [], []
    for k, row in enumerate(rows):
        answer = answers[k] if answers else []
        ids.append(row + answer)
        labels.append([IGNORE] * len(row) + answer)
    width = max(len(r) for r in ids)

    def pad(seq, value):
        fill = [value] * (width - len(seq))
        return fill + seq if side == "left" else seq + fill

    input_ids = torch.tensor([pad(r, 0) for r in ids])
    mask = torch.tensor([pad([1] * len(r), 0) for r in ids])
    label_tensor = torch.tensor([pad(r, IGNORE) for r in labels]) if answers else None
    g = torch.Generator().manual_seed(seed)
    grids = torch.randn(len(rows), GRID, VISION_DIM, generator=g)
    has_image = torch.tensor(images)
    grid = grids[has_image] if any(images) else None
    pooled = grid.mean(1) if grid is not None else None
    return Batch(input_ids, mask, label_tensor, has_image, ImageInputs(grid=grid, pooled=pooled),
                 [str(k) for k in range(len(rows))], side)


PROMPTS = [
    [5, IMAGE_TOKEN_ID, 7, 8, 9, 10],
    [11, 12, 13, 14, 15, 16, 17, 18],  # text only
    [IMAGE_TOKEN_ID, 20, 21],
]
HAS_IMAGE = [True, False, True]
