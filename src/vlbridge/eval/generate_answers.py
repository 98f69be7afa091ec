"""Generate answers for a list of samples, batched and left-padded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch

from vlbridge.batch import Collator
from vlbridge.data.sample import Sample


@dataclass(frozen=True)
class GenerationSettings:
    """Recorded next to every score so a number can be reproduced."""

    max_new_tokens: int = 10
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def batched(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def generate_answers(model, tokenizer, collator: Collator, samples: list[Sample],
                     settings: GenerationSettings = GenerationSettings(), progress=None) -> list[str]:
    """One decoded answer per sample (prompt = all turns before the last answer)."""
    if collator.with_answer:
        raise ValueError("generate_answers needs a prompt collator (with_answer=False)")
    was_training = model.training
    model.eval()
    eos = tokenizer.convert_tokens_to_ids(collator.chat_format.assistant_end) \
        if collator.chat_format.assistant_end in tokenizer.get_vocab() else tokenizer.eos_token_id
    answers: list[str] = []
    for chunk in batched(samples, settings.batch_size):
        batch = collator(chunk)
        new_tokens = model.generate(batch, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                                    temperature=settings.temperature, top_p=settings.top_p,
                                    eos_token_id=eos, pad_token_id=collator.pad_id,
                                    seed=settings.seed if settings.do_sample else None)
        answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        if progress is not None:
            progress(len(chunk))
    model.train(was_training)
    return answers
