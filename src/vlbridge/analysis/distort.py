"""Visual knowledge distortion (MemVP paper, analyses): zero the memory entries the question responds to
most, and see whether the answer changes.

"Zero an entry" is ours in detail: the visual part f(z_j) of slot j becomes 0 in both its key and value,
so the slot keeps only its position embeddings, exactly like an extra slot without a visual vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from vlbridge.analysis.locate import _single_image_row, locate
from vlbridge.batch import Batch
from vlbridge.text.tokenize import IMAGE_TOKEN_ID


@dataclass
class DistortionResult:
    original: Tensor  # (T,) generated token ids with the full memory
    distorted: Tensor  # (T',) generated token ids with the top-k visual entries zeroed
    zeroed: list[int]  # indices of the zeroed visual vectors (row-major over the image grid)
    responses: Tensor  # (n,) mean response of the chosen tokens to each visual vector

    @property
    def changed(self) -> bool:
        return not torch.equal(self.original, self.distorted)


@torch.no_grad()
def distort(model, batch: Batch, top_k: int = 2, token_positions: Sequence[int] | None = None,
            **generate_options) -> DistortionResult:
    """Generate an answer, zero the ``top_k`` visual vectors the chosen prompt tokens (default: every text
    token of the prompt) respond to most (:func:`locate`), and generate again. ``generate_options`` go
    to :meth:`VisionLanguageModel.generate` (``max_new_tokens``, ``eos_token_id``, ``pad_token_id``...)."""
    _single_image_row(batch)
    if token_positions is None:
        text = batch.attention_mask[0].bool() & (batch.input_ids[0] != IMAGE_TOKEN_ID)
        token_positions = text.nonzero().flatten().tolist()
    responses = locate(model, batch, token_positions).mean(0)  # (n,)
    if not 0 < top_k <= responses.numel():
        raise ValueError(f"top_k must be in 1..{responses.numel()}, got {top_k}")
    zeroed = responses.topk(top_k).indices.sort().values.tolist()
    real = batch.attention_mask[0].bool()  # one row without its padding fits either padding side
    prompt = replace(batch, input_ids=batch.input_ids[:, real], attention_mask=batch.attention_mask[:, real],
                     labels=None, padding_side="left")
    original = model.generate(prompt, **generate_options)[0]

    def zero_entries(module, args, output: tuple[Tensor, Tensor | None]):  # bridge output (B_img, n, d), counts
        vectors = output[0].clone()
        vectors[:, zeroed] = 0
        return vectors, output[1]

    handle = model.bridge.register_forward_hook(zero_entries)
    try:
        distorted = model.generate(prompt, **generate_options)[0]
    finally:
        handle.remove()
    return DistortionResult(original, distorted, zeroed, responses)
