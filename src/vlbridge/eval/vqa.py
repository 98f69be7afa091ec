"""VQA: one short answer per question, scored with the official VQA accuracy (current or 2017 code).

Input samples are what :func:`vlbridge.datasets.vqav2.read_vqav2` gives with an annotations file:
``meta["question_id"]``, ``meta["question"]``, the 10 human answers in ``meta["answers"]`` and the
official question and answer types. The answer is scored exactly as generated (stripped): the official
"current" code does not normalise at all when the 10 human answers agree, so ``Yes`` scores 0 against
ten ``yes`` there (see :mod:`vlbridge.metrics.vqa`). Beside the official per-type numbers, ``scores["by_type"]``
gives each question and answer type's count and standard error (:mod:`vlbridge.eval.by_type`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vlbridge.data.sample import Sample
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.by_type import breakdown
from vlbridge.eval.result import (Answer, TaskResult, answer_all, prompt_only, require_images, require_items,
                                  require_meta)
from vlbridge.eval.task_prompts import check_template, render_prompt
from vlbridge.metrics.vqa import VQA_EVAL_VERSIONS, VQAQuestion, VQAScores, vqa_scores


def vqa_breakdown(scores: VQAScores, truth: Mapping[object, VQAQuestion]) -> dict:
    """The official per-type means (question and answer type as annotated, "" when not) with counts and
    standard errors (:func:`vlbridge.eval.by_type.breakdown`)."""
    labels = [{"question_type": q.question_type, "answer_type": q.answer_type} for q in truth.values()]
    return breakdown(labels, [{"vqa_accuracy": scores.per_question_unrounded[qid] / 100} for qid in truth])


def evaluate_vqa(answer: Answer, samples: Sequence[Sample], template: str | None = None,
                 version: str = "current") -> TaskResult:
    """Answer every question with ``template`` (default ``TASK_PROMPTS["vqa"]``) and score with the
    official VQA accuracy of ``version`` (``current`` or ``2017``)."""
    template = check_template("vqa", template)
    if version not in VQA_EVAL_VERSIONS:  # fail before generation, not after
        raise ConfigError(f"unknown VQA evaluation version {version!r}; valid: {sorted(VQA_EVAL_VERSIONS)}")
    require_items(samples, "questions")
    truth: dict[int, VQAQuestion] = {}
    for s in samples:
        if s.meta.get("answers") is None:
            raise DataError("no human answers: VQA scoring needs the annotations file", file=s.source or None,
                            record=s.id, field="meta.answers")
        require_meta(s, "question_id", "question")
        qid = s.meta["question_id"]
        if qid in truth:
            raise DataError(f"question id {qid} appears twice", file=s.source or None, record=s.id,
                            field="meta.question_id")
        truth[qid] = VQAQuestion(tuple(s.meta["answers"]), s.meta.get("question_type", ""),
                                 s.meta.get("answer_type", ""))
    require_images(samples)
    prompts = [prompt_only(s, render_prompt("vqa", template, has_image=True, question=s.meta["question"]))
               for s in samples]
    predictions = dict(zip(truth, answer_all(answer, prompts)))
    official = vqa_scores(predictions, truth, version)
    scored = official.to_dict()
    per_question = scored.pop("per_question")
    scored["by_type"] = vqa_breakdown(official, truth)
    items = [{"question_id": qid, "image_id": s.meta.get("image_id"), "question": s.meta["question"],
              "prediction": predictions[qid], "answers": list(truth[qid].answers),
              "accuracy": per_question[str(qid)]} for qid, s in zip(truth, samples)]
    return TaskResult(
        task="vqa",
        prompt=template,
        metric={"name": scored.pop("metric"), "version": scored.pop("version"),
                "version_description": scored.pop("version_description"),
                "versions": sorted(VQA_EVAL_VERSIONS), "scale": "percent"},
        scores=scored,
        predictions=items,
        official_format="vqa",
        official=predictions,
    )
