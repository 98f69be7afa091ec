"""How a batch becomes a loss: the objectives the one trainer runs, chosen by the recipe key ``train.objective``.

An objective is a small protocol (:class:`Objective`); the language-modelling loss is here, a method's own
objective lives in the method's folder (BLIP-2 stage 1: :mod:`vlbridge.bridges.qformer.objective`) and is one
line in :data:`OBJECTIVES`. An objective tells :func:`vlbridge.train.trainer.train` six things; the loop itself
is the same for all:

- ``set_trainable(model, groups, log)``: the recipe's parameter groups, less the parameters this objective
  never reads (frozen and logged: DDP requires every trained parameter to get a gradient, and a checkpoint
  should hold what was trained, not untouched initial values);
- ``collators(built, recipe, images)``: samples -> a training batch, and -> an evaluation batch;
- ``report(...)``: the start-of-run report (:mod:`vlbridge.train.report`'s keys);
- ``loss_module(model)``: the module the trainer wraps (DDP) and calls on a batch; its output has
  ``loss_sum``, the loss summed over the batch's ``num_supervised`` units;
- ``terms(output)``: further per-step numbers to log, summed like ``loss_sum``;
- ``evaluate(...)``: validation scores and one prediction per validation sample.

A batch has ``to(device)``, ``num_supervised`` (what ``loss_sum`` is summed over: answer tokens for ``lm``,
image-caption pairs for ``blip2_stage1``), ``attention_mask`` and ``has_image`` (for throughput) and
``sample_ids`` (for error messages).

``lm``: the LM loss on the answer tokens of LLaVA-format conversations (every bridge).
``blip2_stage1``: BLIP-2 stage 1, ITC + ITM + ITG on captions (:mod:`vlbridge.bridges.qformer.objective`).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from vlbridge.batch import Collator
from vlbridge.bridges.eve.pal import WithAlignment
from vlbridge.bridges.qformer.objective import Blip2Stage1Objective
from vlbridge.errors import ConfigError
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.eval.scoring import score_predictions
from vlbridge.train.distributed import OnDevice, full_parameters, gather, split_evenly
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge.train.report import start_report


class Objective(Protocol):
    """What the trainer asks of an objective (the module docstring says what each gives)."""

    def set_trainable(self, model, groups: list[str], log=print) -> dict[str, dict[str, int]]: ...
    def collators(self, built, recipe, images) -> tuple: ...
    def report(self, built, counts: dict, trainable_groups: list[str], collator, samples, **settings) -> dict: ...
    def loss_module(self, model) -> nn.Module: ...
    def terms(self, output) -> dict[str, Tensor]: ...
    def evaluate(self, built, collator, samples, settings: GenerationSettings, accelerator=None,
                 wrapped=None) -> dict: ...


# --- lm: the language-modelling loss on answer tokens --------------------------------------------------------------
def evaluate(built, collator: Collator, samples, settings: GenerationSettings, accelerator=None,
             wrapped=None) -> dict:
    """Scores and ``predictions`` (one per sample, in order). With several processes each generates its
    own part of ``samples``; the predictions are gathered so every process scores all of them."""
    world = accelerator.num_processes if accelerator is not None else 1
    if world == 1:
        if accelerator is not None:
            collator = OnDevice(collator, accelerator.device)
        predictions = generate_answers(built.model, built.tokenizer, collator, samples, settings)
    else:
        part = split_evenly(list(samples), accelerator.process_index, world)
        with full_parameters(accelerator, wrapped):
            local = generate_answers(built.model, built.tokenizer, OnDevice(collator, accelerator.device), part,
                                     settings)
        predictions = gather(accelerator, local)
    return score_predictions(samples, predictions) | {"predictions": predictions}


class LanguageModeling:
    """The LM loss on the answer tokens (labels built from the conversation's turns); evaluation generates. A model
    with an aligner (``model.aligner``, e.g. EVE's PAL) adds its loss, and the aligner always trains."""

    def set_trainable(self, model, groups: list[str], log=print) -> dict[str, dict[str, int]]:
        aligner = ["aligner"] if model.aligner is not None and "aligner" not in groups else []
        return apply_trainable(model, [*groups, *aligner])

    def collators(self, built, recipe, images) -> tuple[Collator, Collator]:
        from vlbridge.runs import prompt_collator

        return (prompt_collator(built, recipe, images, with_answer=True), prompt_collator(built, recipe, images))

    report = staticmethod(start_report)

    def loss_module(self, model) -> nn.Module:
        return WithAlignment(model) if model.aligner is not None else model

    def terms(self, output) -> dict[str, Tensor]:
        return {"alignment": output.alignment_sum} if output.alignment_sum is not None else {}

    evaluate = staticmethod(evaluate)


OBJECTIVES: dict[str, Objective] = {
    "lm": LanguageModeling(),
    "blip2_stage1": Blip2Stage1Objective(),
}
"""``train.objective`` -> how a batch becomes a loss (and how the run is validated)."""


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown train.objective {name!r}; valid: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def set_trainable(model, train_config, log=print) -> dict[str, dict[str, int]]:
    """What trains in a run of ``train_config`` (its groups and objective); also used to rebuild a run's model."""
    return get_objective(train_config.objective).set_trainable(model, train_config.trainable, log)
