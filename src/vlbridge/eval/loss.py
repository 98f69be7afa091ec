"""Teacher-forced validation loss: the LM loss per supervised (answer) token, as in training, with no update.

Cheaper than generating and smooth from the first step, so it draws learning curves where accuracy is still at
the floor (``train.eval_loss``; the convergence benchmarks)."""

from __future__ import annotations

import torch


@torch.no_grad()
def validation_loss(model, collator, samples, batch_size: int = 8) -> float:
    """Mean LM loss per supervised token of ``samples`` (``collator`` builds training batches, answers
    included) under ``model`` in eval mode (no dropout); the model's training mode is restored."""
    if not samples:
        raise ValueError("validation_loss needs at least one sample")
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(samples), batch_size):
            batch = collator(samples[start:start + batch_size])
            total += float(model(batch).loss_sum)
            tokens += batch.num_supervised
    finally:
        model.train(was_training)
    return total / tokens
