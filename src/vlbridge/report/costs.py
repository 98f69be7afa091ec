"""What a trained bridge costs, measured on the model itself:

- LM forward FLOPs of one sample, analytic (the injection's ``lm_flops``, :mod:`vlbridge.flops`' conventions) and
  measured with torch's flop counter (:func:`vlbridge.flops.count_flops`): the whole forward pass minus the front
  end's (encoder, if it runs, and connector), so both count the LM with what the injection adds to it. The sample
  is a test question with its answer (a training sample's forward, the answer's tokens supervised), batch 1;
- 1-token latency: prefill and the first answer token of one prompt, median of ``repeats``;
- generation tokens/s: ``batch`` prompts generating exactly ``new_tokens`` tokens each (end of sequence ignored),
  with the KV cache, median of ``repeats``;
- peak memory of a training step and of that generation (:mod:`vlbridge.report.memory`).
"""

from __future__ import annotations

import statistics
import time

import torch

from vlbridge.flops import count_flops
from vlbridge.report.memory import peak_rss_above_current


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sample_flops(model, batch) -> dict:
    """Analytic and measured LM forward FLOPs of the one sample in ``batch`` (with its answer), the connector's
    measured FLOPs, and the counts the formula reads."""
    if batch.input_ids.shape[0] != 1:
        raise ValueError("FLOPs per sample are counted on a batch of one (padding would count too)")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        visual, lengths = model.visual_tokens(batch)
        front_end = count_flops(lambda: model.visual_tokens(batch))
        whole = count_flops(lambda: model(batch))
    model.train(was_training)
    vectors = int(lengths[0]) if lengths is not None else visual.shape[1]
    text = batch.input_ids.shape[1] - int(batch.has_image[0])  # the image placeholder is not a text position
    logits = batch.num_supervised  # LM-head rows: the answer's tokens (vlbridge.models.language_model)
    analytic = model.bridge.injection.lm_flops(model.language_model, text, vectors, logits)
    return {"lm_analytic": analytic, "lm_measured": whole - front_end, "ratio": (whole - front_end) / analytic,
            "front_end_measured": front_end, "text_tokens": text, "visual_vectors": vectors,
            "logit_positions": logits, "sample": batch.sample_ids[0]}


def latency(model, prompt, pad_id: int, repeats: int) -> float:
    """Median seconds from a prompt to its first new token."""
    model.eval()
    model.generate(prompt, max_new_tokens=1, pad_token_id=pad_id)  # warm-up
    return statistics.median(timed(lambda: model.generate(prompt, max_new_tokens=1, pad_token_id=pad_id))
                             for _ in range(repeats))


class ExactLength:
    """Within it, generation ignores the end of sequence, so every row generates all its tokens."""

    def __init__(self, model):
        self.config = model.language_model.model.generation_config

    def __enter__(self):
        self.eos, self.config.eos_token_id = self.config.eos_token_id, None

    def __exit__(self, *exc):
        self.config.eos_token_id = self.eos


def generation_speed(model, prompts, pad_id: int, new_tokens: int, repeats: int) -> dict:
    """Median seconds to generate ``new_tokens`` tokens for each row of ``prompts``, and the tokens per second."""
    model.eval()
    with ExactLength(model):
        model.generate(prompts, max_new_tokens=2, pad_token_id=pad_id)  # warm-up
        seconds = statistics.median(
            timed(lambda: model.generate(prompts, max_new_tokens=new_tokens, pad_token_id=pad_id))
            for _ in range(repeats))
    rows = prompts.input_ids.shape[0]
    return {"seconds": seconds, "tokens_per_second": rows * new_tokens / seconds, "rows": rows,
            "new_tokens": new_tokens}


def train_step(model, batch) -> None:
    """Forward and backward of one batch, only the trainable tensors getting gradients (no optimizer update)."""
    model.train()
    out = model(batch)
    (out.loss_sum / max(out.num_tokens, 1)).backward()
    model.zero_grad(set_to_none=True)


def peak_memory(model, train_batch, prompts, pad_id: int, new_tokens: int) -> dict:
    """Peak resident MB above the model's, during a training step (forward + backward) and during generation."""
    train_step(model, train_batch)  # warm-up: first-use allocations (autograd, thread pools) are not the step's
    step = peak_rss_above_current(lambda: train_step(model, train_batch))
    model.eval()
    with ExactLength(model), torch.no_grad():
        generation = peak_rss_above_current(
            lambda: model.generate(prompts, max_new_tokens=new_tokens, pad_token_id=pad_id))
    return {"train_step_mb": step, "generation_mb": generation}
