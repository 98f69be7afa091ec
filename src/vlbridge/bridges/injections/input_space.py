"""Input-space injection (LLaVA, BLIP-2, PaLM2-VAdapter, EVE): visual tokens join the token sequence.

Cost: every layer's attention and FFN now also run over the n visual positions (METHODS.md section 0:
``+4·n·d·(6d + n + 2L)`` per layer), which memory-space injection avoids. Rows may carry different numbers
of visual tokens (``visual_lengths``: images of different aspect ratios); no padding token enters the LM.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from vlbridge.bridges.injections.base import Injection
from vlbridge.bridges.injections.splice import splice_visual_tokens


@dataclass(frozen=True)
class InputSpaceOptions:
    """No options: the visual vectors replace the image placeholder, one position each."""


class InputSpaceInjection(Injection):
    @contextmanager
    def inject(self, language_model, input_ids, attention_mask, visual, has_image, labels=None, padding_side="right",
               visual_lengths=None):
        yield splice_visual_tokens(language_model.embed, input_ids, attention_mask, visual, labels, padding_side,
                                   visual_lengths)

    def visual_sequence_length(self, num_visual: int) -> int:
        return num_visual


def build_input_space(language_model, options: InputSpaceOptions) -> InputSpaceInjection:
    return InputSpaceInjection()
