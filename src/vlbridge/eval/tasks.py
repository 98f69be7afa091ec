"""The evaluation tasks by name: what each measures, its default generation length, and its function.

=================  =========================================  ==========================  ==============
task               data (readers)                             metric                      max new tokens
=================  =========================================  ==========================  ==============
caption            COCO captions or a Karpathy split          BLEU-1..4, CIDEr-D          30
vqa                VQAv2 questions + annotations              VQA accuracy (current|2017) 10
multiple-choice    ScienceQA folder                           accuracy, ScienceQA subsets 10
retrieval          COCO captions or a Karpathy split          Recall@1/5/10 both ways     (no generation)
=================  =========================================  ==========================  ==============

Generation lengths follow LAVIS's BLIP-2 evaluation configs (captions ``max_len: 30``, VQA
``max_len: 10``); ``The answer is X.`` takes about 6 tokens. Prompts: :mod:`vlbridge.eval.task_prompts`.
A LLaVA JSON file (every sample with its own prompt and ``meta["task"]``) is evaluated by
:func:`vlbridge.eval.llava_data.evaluate_llava_samples`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlbridge.errors import ConfigError
from vlbridge.eval.caption import evaluate_captions
from vlbridge.eval.multiple_choice import evaluate_multiple_choice
from vlbridge.eval.retrieval import evaluate_retrieval
from vlbridge.eval.vqa import evaluate_vqa


@dataclass(frozen=True)
class TaskSpec:
    description: str  # one line: what is asked and how it is scored
    max_new_tokens: int | None  # default generation length; None = the task generates nothing
    evaluate: Callable  # the task's function (generative tasks: (answer, samples, template, ...))


TASKS: dict[str, TaskSpec] = {
    "caption": TaskSpec("one caption per image; BLEU-1..4 and CIDEr-D (COCO caption toolkit)", 30,
                        evaluate_captions),
    "vqa": TaskSpec("one short answer per question; official VQA accuracy", 10, evaluate_vqa),
    "multiple-choice": TaskSpec("one option per question; accuracy with the ScienceQA breakdown", 10,
                                evaluate_multiple_choice),
    "retrieval": TaskSpec("image<->text ranking by the bridge's embeddings; Recall@1/5/10 both ways", None,
                          evaluate_retrieval),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"unknown evaluation task {name!r}; valid: {sorted(TASKS)}")
    return TASKS[name]
