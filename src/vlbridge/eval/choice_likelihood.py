"""Multiple choice by option likelihood: each option's own text is scored as the answer and the most likely
option is the model's choice ("cloze" multiple choice, as lm-evaluation-harness scores small LMs).

Generating the option's letter needs the LM to map an answer to its letter, which small LMs rarely do: the
frozen SmolLM2-135M, asked a Shapes question with the answer written into it, gives the right letter no
more often than the most frequent letter (``benchmarks/mc_letter_probe.py``). Ranking the options' texts
asks only which answer the model finds most likely, whatever it can or cannot do with letters.

An option's score is the summed log-probability of its answer tokens, end of turn included (so "red" is not
preferred over "red square" for stopping early), or their mean per token (``reduce="mean"``).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from vlbridge.batch import Collator
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import ConfigError, DataError
from vlbridge.text.tokenize import IGNORE

REDUCTIONS = ("sum", "mean")


def option_samples(sample: Sample) -> list[Sample]:
    """One sample per option of a multiple-choice ``sample`` (``meta["choices"]``), each answered with that
    option's text in place of the sample's last answer (or as a new answer when it has none)."""
    choices = sample.meta.get("choices")
    if not choices:
        raise DataError("multiple choice by likelihood needs the options", file=sample.source or None,
                        record=sample.id, field="meta.choices")
    prompt = sample.prompt_turns
    return [replace(sample, id=f"{sample.id}#{i}", turns=(*prompt, Turn("assistant", str(choice))))
            for i, choice in enumerate(choices)]


@torch.no_grad()
def option_log_likelihoods(model, collator: Collator, sample: Sample, reduce: str = "sum") -> list[float]:
    """The log-likelihood of each option of ``sample`` as its answer (all options in one batch)."""
    if reduce not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduce!r}; valid: {list(REDUCTIONS)}")
    if not collator.with_answer:
        raise ValueError("option likelihoods need an answer collator (with_answer=True)")
    batch = collator(option_samples(sample))
    out = model(batch, row_losses=True)
    scores = -out.row_loss  # (options,)
    if reduce == "mean":
        supervised = batch.targets if batch.targets is not None else batch.labels[:, 1:]  # (options, T)
        scores = scores / (supervised != IGNORE).sum(1).clamp(min=1)
    return scores.tolist()


def choose_by_likelihood(model, collator: Collator, samples: list[Sample], reduce: str = "sum",
                         progress=None) -> list[int]:
    """The index of the most likely option of each multiple-choice sample (the first on a tie)."""
    was_training = model.training
    model.eval()
    chosen = []
    for sample in samples:
        scores = option_log_likelihoods(model, collator, sample, reduce)
        chosen.append(max(range(len(scores)), key=scores.__getitem__))
        if progress is not None:
            progress(1)
    model.train(was_training)
    return chosen
