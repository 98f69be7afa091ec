"""The interface every injection implements: where visual vectors enter the LM, and what that costs."""

from __future__ import annotations

from contextlib import AbstractContextManager

from torch import Tensor, nn

from vlbridge.bridges.injections.splice import Spliced
from vlbridge.cost import lm_forward_flops


class Injection(nn.Module):
    """Decides where visual vectors enter the LM.

    ``attach`` is called once when the model is assembled (an injection that wraps LM modules installs
    its hooks there). ``inject`` is a context manager around every LM call of one batch (a forward pass
    or a whole generation): it yields the LM's inputs, and any per-batch state it sets (a memory, visual
    keys and values) lives exactly as long as the context.

    What it takes, for the build-time handshake with the connector: :meth:`input_width` (the visual
    vectors' width) and ``max_visual_tokens`` (None = any number). What it costs: :meth:`lm_flops` and
    :meth:`activation_bytes`, read by ``vlbridge info``, the start-of-run report and the benchmarks.
    """

    max_visual_tokens: int | None = None  # most visual vectors per image it has room for; None = any

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
        visual_lengths: Tensor | None = None,  # (B,) valid vectors of each row (images of different sizes)
    ) -> AbstractContextManager[Spliced]:
        raise NotImplementedError

    def visual_sequence_length(self, num_visual: int) -> int:
        """How many sequence positions an image of ``num_visual`` vectors takes in the LM."""
        raise NotImplementedError

    def input_width(self, language_model) -> int:
        """The width of the visual vectors this injection reads (default: the LM's hidden size)."""
        return language_model.hidden_size

    # --- cost ------------------------------------------------------------------------------------------
    def lm_flops(self, language_model, text_tokens: int, num_visual: int, logit_positions: int) -> int:
        """Analytic forward FLOPs of the LM with this injection on one sample: ``text_tokens`` text
        positions, an image of ``num_visual`` visual vectors (0: none), LM-head logits at
        ``logit_positions`` (:mod:`vlbridge.flops` conventions). Default: the image's sequence positions
        (:meth:`visual_sequence_length`) join the text."""
        positions = self.visual_sequence_length(num_visual) if num_visual else 0
        return lm_forward_flops(language_model, text_tokens + positions, logit_positions)

    def describe_cost(self) -> str:
        """What the injection adds to the LM, in a few words for ``vlbridge info`` (default: nothing)."""
        return ""

    def activation_bytes(self, language_model, tokens: int, num_visual: int, rows: int,
                         bytes_per_value: int = 4) -> int:
        """Bytes this injection's own modules keep for the backward pass in a micro-batch of ``rows`` rows
        and ``tokens`` positions in all, beyond the LM's (:func:`vlbridge.train.report.activation_bytes`)."""
        return 0
