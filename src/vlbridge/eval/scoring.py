"""Score generated answers against a sample's references, by the sample's task.

A multiple-choice answer (``meta["task"] == "mc"``) names its option by letter (``B``, ``The answer is B``:
:func:`vlbridge.metrics.multiple_choice.parse_choice`) or, failing that, by the option's own text (the Shapes
``mc-text`` split's answers), matched after the VQA answer normalisation.
"""

from __future__ import annotations

from collections import Counter

from vlbridge.data.sample import Sample
from vlbridge.errors import DataError
from vlbridge.metrics.multiple_choice import parse_choice
from vlbridge.metrics.vqa import vqa_accuracy
from vlbridge.metrics.vqa_normalize import normalize_answer


def normalised(text: str) -> str:
    """Lower-case, then the official VQA answer normalisation (punctuation, number words, articles)."""
    return normalize_answer(text.lower())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(normalised(prediction) in {normalised(a) for a in answers})


def require_choices(sample: Sample) -> list[str]:
    """A multiple-choice sample's options (``meta["choices"]``, with ``meta["answer_index"]``), else an error."""
    if sample.meta.get("choices") is None or "answer_index" not in sample.meta:
        raise DataError("multiple choice needs choices and answer_index", file=sample.source or None,
                        record=sample.id, field="meta")
    return sample.meta["choices"]


def option_by_text(prediction: str, choices: list[str]) -> int | None:
    """The index of the one option whose text the prediction is (normalised), else None."""
    said = normalised(prediction)
    matches = [i for i, choice in enumerate(choices) if normalised(str(choice)) == said]
    return matches[0] if len(matches) == 1 else None


def _answers(sample: Sample) -> list[str]:
    answers = sample.meta.get("answers") or ([sample.answer] if sample.answer else [])
    if not answers:
        raise DataError("no reference answer", file=sample.source or None, record=sample.id, field="meta.answers")
    return list(answers)


def score_sample(sample: Sample, prediction: str) -> dict[str, float]:
    task = sample.meta.get("task", "short")
    if task == "mc":
        choices = require_choices(sample)
        chosen = parse_choice(prediction, len(choices))
        if chosen is None:
            chosen = option_by_text(prediction, choices)
        return {"accuracy": float(chosen == sample.meta["answer_index"]), "unparsed": float(chosen is None)}
    answers = _answers(sample)
    scores = {"exact_match": exact_match(prediction, answers)}
    if len(answers) == 10:  # VQA's 10 human answers: the official soft score
        scores["vqa_accuracy"] = vqa_accuracy(prediction.lower(), answers)
    return scores


def score_predictions(samples: list[Sample], predictions: list[str]) -> dict[str, float]:
    """Mean of each per-sample score in percent, plus the count."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    totals: Counter = Counter()
    for sample, prediction in zip(samples, predictions):
        totals.update(score_sample(sample, prediction))
    n = max(len(samples), 1)
    return {**{k: 100 * v / n for k, v in totals.items()}, "count": len(samples)}


def question_type_baseline(train: list[Sample], test: list[Sample], field: str = "question_type") -> float | None:
    """Accuracy (%) of answering each test question with its question type's most frequent training answer
    (``meta[field]``; the overall most frequent for a type training never saw): what the question alone,
    without the image, reaches (the VQA literature's "prior per question type"). None when the samples
    carry no such field."""
    if not train or not test or any(field not in s.meta for s in (*train, *test)):
        return None
    by_type: dict[str, Counter] = {}
    for s in train:
        by_type.setdefault(s.meta[field], Counter())[normalised(s.answer or "")] += 1
    overall = Counter(normalised(s.answer or "") for s in train).most_common(1)[0][0]
    guess = {kind: counts.most_common(1)[0][0] for kind, counts in by_type.items()}
    return 100 * sum(exact_match(guess.get(s.meta[field], overall), _answers(s)) for s in test) / len(test)


def majority_baseline(train: list[Sample], test: list[Sample]) -> float:
    """Accuracy (%) of always giving the training set's most frequent answer: the floor to beat."""
    if not train or not test:
        return 0.0
    most_common = Counter(normalised(s.answer or "") for s in train).most_common(1)[0][0]
    return 100 * sum(exact_match(most_common, _answers(s)) for s in test) / len(test)
