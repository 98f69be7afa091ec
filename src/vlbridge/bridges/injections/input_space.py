"""Input-space injection (LLaVA, BLIP-2, PaLM2-VAdapter, EVE): visual tokens join the token sequence.

Cost: every layer's attention and FFN now also run over the n visual positions (METHODS.md section 0:
``+4·n·d·(6d + n + 2L)`` per layer), which memory-space injection avoids.
"""

from __future__ import annotations

from contextlib import contextmanager

from vlbridge.bridges.injections.base import Injection
from vlbridge.bridges.injections.splice import splice_visual_tokens


class InputSpaceInjection(Injection):
    @contextmanager
    def inject(self, language_model, input_ids, attention_mask, visual, has_image, labels=None, padding_side="right"):
        yield splice_visual_tokens(language_model.embed, input_ids, attention_mask, visual, labels, padding_side)

    def visual_sequence_length(self, num_visual: int) -> int:
        return num_visual
