"""Multiple choice: one option per question, accuracy with the ScienceQA breakdown.

The option is either parsed from a generated answer (its letter, or ``The answer is X``), or chosen directly
by a ``choose`` function, such as ranking the options' likelihoods
(:func:`vlbridge.eval.choice_likelihood.choose_by_likelihood`; ``vlbridge eval --choose-by likelihood``).

Input samples are what :func:`vlbridge.datasets.scienceqa.read_scienceqa` gives: ``meta["question"]``,
``meta["choices"]``, ``meta["answer_index"]``, the hint in ``meta["context"]`` (and the image caption in
``meta["caption"]`` when captions were read), plus subject, grade and the context flags of the
breakdown (optional: other multiple-choice data gets the overall accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence

from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.result import (Answer, Choose, TaskResult, answer_all, choose_all, prompt_only, require_images,
                                  require_items, require_meta)
from vlbridge.eval.task_prompts import check_template, render_prompt
from vlbridge.metrics.multiple_choice import PARSE_CONVENTIONS, MCQuestion, mc_accuracy, mc_scores
from vlbridge.prompts.scienceqa import context_text, options_text


def _question(s: Sample) -> MCQuestion:
    require_meta(s, "question", "choices", "answer_index")
    choices, answer_index = s.meta["choices"], s.meta["answer_index"]
    if not isinstance(answer_index, int) or not 0 <= answer_index < len(choices):
        raise DataError(f"answer_index {answer_index!r} is not an index into the {len(choices)} choices",
                        file=s.source or None, record=s.id, field="meta.answer_index")
    return MCQuestion(answer_index=answer_index, num_choices=len(choices), subject=s.meta.get("subject", ""),
                      has_text_context=bool(s.meta.get("has_text_context", False)),
                      has_image=bool(s.meta.get("has_image", s.image is not None)), grade=s.meta.get("grade", ""))


def evaluate_multiple_choice(answer: Answer | None, samples: Sequence[Sample], template: str | None = None,
                             convention: str = "auto", choose: Choose | None = None,
                             chosen_by: str = "generation") -> TaskResult:
    """Ask every question with ``template`` (default ``TASK_PROMPTS["multiple-choice"]``) and score with the
    ScienceQA breakdown: ``answer``'s generated texts parsed with ``convention`` (auto | letter | answer_is),
    or, when ``choose`` is given, the options it picks (``chosen_by`` names how, for the report)."""
    template = check_template("multiple-choice", template)
    if convention not in PARSE_CONVENTIONS:  # fail before generation, not after
        raise ConfigError(f"unknown answer convention {convention!r}; valid: {list(PARSE_CONVENTIONS)}")
    if (answer is None) == (choose is None):
        raise ValueError("give exactly one of answer (generate and parse) and choose (pick the option)")
    require_items(samples, "questions")
    truth: dict[str, MCQuestion] = {}
    for s in samples:
        if s.id in truth:
            raise DataError("question id appears twice", file=s.source or None, record=s.id, field="id")
        truth[s.id] = _question(s)
    require_images([s for s in samples if s.image is not None])
    prompts = [
        prompt_only(s, render_prompt(
            "multiple-choice", template, has_image=s.image is not None, question=s.meta["question"],
            context=context_text(s.meta.get("context") or "", s.meta.get("caption") or ""),
            options=options_text(s.meta["choices"])))
        for s in samples
    ]
    if choose is None:
        predictions = dict(zip(truth, answer_all(answer, prompts)))
        scored = {**mc_scores(predictions, truth, convention), "chosen_by": "generation"}
    else:
        chosen = dict(zip(truth, choose_all(choose, prompts)))
        predictions = {qid: str(s.meta["choices"][chosen[qid]]) for qid, s in zip(truth, samples)}
        scored = {**mc_accuracy(chosen, truth), "convention": None, "chosen_by": chosen_by}
    per_question = scored.pop("per_question")
    items = [{"id": qid, "prediction": predictions[qid], "choice": per_question[qid]["prediction"],
              "answer_index": q.answer_index, "correct": per_question[qid]["correct"]} for qid, q in truth.items()]
    return TaskResult(
        task="multiple-choice",
        prompt=template,
        metric={"name": scored.pop("metric"), "chosen_by": scored.pop("chosen_by"),
                "convention": scored.pop("convention"), "conventions": list(PARSE_CONVENTIONS),
                "breakdown": "ScienceQA (lupantech/ScienceQA get_scores): NAT SOC LAN TXT IMG NO G1-6 G7-12",
                "scale": "percent"},
        scores=scored,
        predictions=items,
    )
