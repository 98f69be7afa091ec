"""The interface every injection implements."""

from __future__ import annotations

from contextlib import AbstractContextManager

from torch import Tensor, nn

from vlbridge.bridges.injections.splice import Spliced


class Injection(nn.Module):
    """Decides where visual vectors enter the LM.

    ``attach`` is called once when the model is assembled (an injection that wraps LM modules installs
    its hooks there). ``inject`` is a context manager around every LM call of one batch (a forward pass
    or a whole generation): it yields the LM's inputs, and any per-batch state it sets (a memory) lives
    exactly as long as the context.
    """

    def attach(self, language_model) -> None:
        """Install whatever the injection needs inside the LM (default: nothing)."""

    def inject(
        self,
        language_model,
        input_ids: Tensor,  # (B, L) with the image placeholder id
        attention_mask: Tensor,  # (B, L)
        visual: Tensor,  # (B, n, d) visual vectors (zeros on rows without an image)
        has_image: Tensor,  # (B,) bool
        labels: Tensor | None = None,  # (B, L)
        padding_side: str = "right",
    ) -> AbstractContextManager[Spliced]:
        raise NotImplementedError

    def visual_sequence_length(self, num_visual: int) -> int:
        """How many sequence positions an image takes in the LM (for length limits and FLOPs)."""
        raise NotImplementedError
