"""A LLaVA JSON file as an evaluation set: each sample keeps its own prompt, ``meta["task"]`` picks its scoring.

- ``short`` and ``mc``: :func:`vlbridge.eval.scoring.score_predictions` (exact match after the VQA
  answer normalisation, the official VQA soft accuracy when a sample has 10 answers; multiple-choice
  accuracy with both answer conventions parsed) — the numbers training reports on its validation set; with a
  ``choose`` function (``vlbridge eval --choose-by likelihood``) the ``mc`` samples' options are picked by it
  instead of generating (their answer turn, such as an option's text, is ignored);
- ``caption``: BLEU-1..4 and CIDEr-D over the file's caption samples (references in ``meta["answers"]``,
  else the sample's answer), keyed by sample id.

``short`` and ``mc`` scores also hold ``by_type``: accuracy per question and answer type with counts and
standard errors, when the samples carry the types (:mod:`vlbridge.eval.by_type`; the Shapes files do). The
short answers are also given in the official VQA result format (``[{"question_id", "answer"}]``), each under
its ``meta["question_id"]`` when it has one (VQAv2-derived records), else under its record id.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlbridge.data.sample import Sample
from vlbridge.errors import DataError
from vlbridge.eval.by_type import breakdown, by_task
from vlbridge.eval.result import Answer, Choose, TaskResult, answer_all, choose_all, require_images, require_items
from vlbridge.eval.scoring import require_choices, score_predictions
from vlbridge.metrics.caption import caption_scores

SAMPLE_TASKS = ("short", "mc", "caption")
PER_SAMPLE_PROMPT = "per sample: its own user turns in the data file"


def _references(s: Sample) -> list[str]:
    return list(s.meta.get("answers") or ([s.answer] if s.answer else []))


def evaluate_llava_samples(answer: Answer, samples: Sequence[Sample], choose: Choose | None = None,
                           chosen_by: str = "generation") -> TaskResult:
    """Generate an answer to every sample's own prompt (with ``choose``: every sample but the ``mc`` ones, whose
    option ``choose`` picks; ``chosen_by`` names how, for the report) and score each task present in the file."""
    require_items(samples, "samples")
    tasks: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        task = s.meta.get("task", "short")
        if task not in SAMPLE_TASKS:
            raise DataError(f"unknown task {task!r}; valid: {list(SAMPLE_TASKS)}", file=s.source or None,
                            record=s.id, field="meta.task")
        tasks.setdefault(task, []).append(i)
    require_images([s for s in samples if s.image is not None])
    by_choice = tasks.pop("mc", []) if choose is not None else []
    generated = sorted(i for indices in tasks.values() for i in indices)
    predictions: list[str] = [""] * len(samples)
    for i, text in zip(generated, answer_all(answer, [samples[i] for i in generated]) if generated else []):
        predictions[i] = text
    scores = {}
    if by_choice:
        picked = [samples[i] for i in by_choice]
        for s in picked:
            require_choices(s)
        options = choose_all(choose, picked)
        for i, option in zip(by_choice, options):
            predictions[i] = str(samples[i].meta["choices"][option])
        right = [float(o == s.meta["answer_index"]) for s, o in zip(picked, options)]
        scores["mc"] = {"accuracy": 100 * sum(right) / len(right), "unparsed": 0.0, "count": len(right)}
        typed = breakdown([s.meta for s in picked], [{"accuracy": r} for r in right])
        if typed:
            scores["mc"]["by_type"] = typed
    for task, indices in tasks.items():
        chosen = [samples[i] for i in indices]
        if task == "caption":
            seen: set[str] = set()
            for s in chosen:  # captions are scored per id: a repeated id would silently drop one
                if s.id in seen:
                    raise DataError("caption sample id appears twice", file=s.source or None, record=s.id, field="id")
                seen.add(s.id)
            scored = caption_scores({s.id: _references(s) for s in chosen},
                                    {samples[i].id: predictions[i] for i in indices}, source=chosen[0].source)
            scores[task] = {**scored["corpus"], "count": scored["num_images"]}
        else:
            answers = [predictions[i] for i in indices]
            scores[task] = score_predictions(chosen, answers)
            typed = by_task(chosen, answers).get(task)
            if typed:
                scores[task]["by_type"] = typed
    items = [{"id": s.id, "task": s.meta.get("task", "short"), "prediction": p, "answers": _references(s)}
             for s, p in zip(samples, predictions)]
    return TaskResult(
        task="data",
        prompt=PER_SAMPLE_PROMPT,
        metric={"name": "per sample task",
                "short": "exact match after VQA answer normalisation; official VQA accuracy with 10 answers",
                "mc": ("accuracy, bare letter or 'The answer is X' parsed" if choose is None
                       else f"accuracy, the option chosen by {chosen_by}"),
                "caption": "COCO caption toolkit BLEU-1..4, CIDEr-D", "scale": "percent (caption: toolkit)"},
        scores=scores,
        predictions=items,
        **_official_answers(samples, predictions, tasks.get("short", [])),
    )


def _official_answers(samples: Sequence[Sample], predictions: list[str], short: list[int]) -> dict:
    """The short answers for the official VQA result file, keyed by question id (or record id); none when there
    are no short answers or an id repeats (the format has one answer per question)."""
    official = {samples[i].meta.get("question_id", samples[i].id): predictions[i] for i in short}
    if not official or len(official) < len(short):
        return {}
    return {"official_format": "vqa", "official": official}
