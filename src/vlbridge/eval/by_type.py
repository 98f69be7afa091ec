"""Accuracy by question type and by answer type, with counts and standard errors.

The official VQA evaluation reports ``perQuestionType`` and ``perAnswerType``: for each type, the mean of
the per-question accuracies of the questions annotated with it (``vqaEval.py`` ``setEvalQA``, in percent;
:func:`vlbridge.metrics.vqa.vqa_scores` rounds them as the official code does). :func:`breakdown` computes
the same means, unrounded, for any per-sample score, with the count of each type and the standard error of
its mean (sample standard deviation / sqrt(count); None for a single question). VQAv2 annotations carry both
labels; so do Shapes questions (``meta["question_type"]``: ``color_at``, ``count_all``, ...;
``meta["answer_type"]``: ``yes/no``, ``number``, ``other``, VQA's three).

With a hundred validation questions over thirteen Shapes question types, each type has a handful of
questions: a difference between two types, or before and after training, smaller than about two
standard errors is not a difference.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from vlbridge.data.sample import Sample
from vlbridge.eval.scoring import score_sample

TYPE_FIELDS = ("question_type", "answer_type")
"""The sample ``meta`` fields broken down, as the official VQA evaluation does."""

METRICS = ("vqa_accuracy", "exact_match", "accuracy")
"""Per-sample scores (in [0, 1]) that are broken down, in this order; others (``unparsed``) are not."""

SCORED_TASKS = ("short", "mc")
"""``meta["task"]`` of the samples :func:`by_task` scores (captions have no question types)."""


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation / sqrt(n); None below two values)."""
    mean = float(sum(values)) / len(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def breakdown(labels: Sequence[Mapping[str, object]], scores: Sequence[Mapping[str, float]],
              fields: Sequence[str] = TYPE_FIELDS) -> dict[str, dict[str, dict]]:
    """``{field: {type: {"count", metric, metric + "_stderr", ...}}}`` in percent, for each of ``fields`` that
    some item's ``labels`` carry (a sample's ``meta``; items without it are left out of that field's table);
    ``scores[i]`` are item ``i``'s scores in [0, 1], of which the :data:`METRICS` present in all are broken down."""
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} items but {len(scores)} scores")
    result: dict[str, dict[str, dict]] = {}
    for name in fields:
        groups: dict[str, list[Mapping[str, float]]] = {}
        for label, score in zip(labels, scores):
            if label.get(name) is not None:
                groups.setdefault(str(label[name]), []).append(score)
        if not groups:
            continue
        table = {}
        for kind, group in sorted(groups.items()):
            row: dict = {"count": len(group)}
            for metric in METRICS:
                if all(metric in score for score in group):
                    mean, error = mean_and_stderr([100 * score[metric] for score in group])
                    row[metric], row[f"{metric}_stderr"] = mean, error
            table[kind] = row
        result[name] = table
    return result


def by_task(samples: Sequence[Sample], predictions: Sequence[object]) -> dict[str, dict[str, dict]]:
    """``{task: breakdown}`` of LLaVA-style samples (``meta["task"]`` short or mc, as in the files and the
    validation during training) scored as :func:`vlbridge.eval.scoring.score_predictions` scores them; tasks
    whose samples carry no type are left out, so data without types gives ``{}``."""
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    chosen: dict[str, tuple[list[Sample], list[dict]]] = {}
    for sample, prediction in zip(samples, predictions):
        task = sample.meta.get("task", "short")
        typed = any(sample.meta.get(name) is not None for name in TYPE_FIELDS)
        if task in SCORED_TASKS and typed and isinstance(prediction, str):
            kept, scores = chosen.setdefault(task, ([], []))
            kept.append(sample)
            scores.append(score_sample(sample, prediction))
    return {task: breakdown([s.meta for s in kept], scores) for task, (kept, scores) in chosen.items()}


def _cell(row: Mapping | None, metric: str) -> str:
    if row is None or metric not in row:
        return f"{'-':>14}"
    error = row[f"{metric}_stderr"]
    return f"{row[metric]:>7.1f}" + (f" ±{error:<5.1f}" if error is not None else f"{'':7}")


def format_table(columns: Sequence[tuple[str, Mapping[str, dict], str]]) -> str:
    """A compact text table: one block per type field, a row per type with its count and, per column
    ``(header, breakdown, metric)``, the metric's mean ± standard error (e.g. two metrics of one evaluation, or
    one metric before and after training)."""
    if not columns:
        return ""
    lines = []
    fields = [name for name in TYPE_FIELDS if any(name in table for _, table, _ in columns)]
    for name in fields:
        kinds = sorted({kind for _, table, _ in columns for kind in table.get(name, {})})
        width = max(18, *(len(kind) + 2 for kind in kinds))
        headers = "".join(f"{header:>14}" for header, _, _ in columns)
        lines.append(f"{name.replace('_', ' '):<{width}}{'n':>5}{headers}")
        for kind in kinds:
            rows = [table.get(name, {}).get(kind) for _, table, _ in columns]
            count = next(row["count"] for row in rows if row is not None)
            lines.append(f"{kind:<{width}}{count:>5}" + "".join(_cell(row, metric)
                                                                  for row, (_, _, metric) in zip(rows, columns)))
    return "\n".join(line.rstrip() for line in lines)


def metrics_of(table: Mapping[str, dict]) -> list[str]:
    """The :data:`METRICS` a breakdown holds, in order."""
    present = {key for rows in table.values() for row in rows.values() for key in row}
    return [metric for metric in METRICS if metric in present]


def format_breakdown(table: Mapping[str, dict], title: str = "") -> str:
    """One breakdown as a table with a column per metric it holds (mean ± standard error, percent)."""
    body = format_table([(metric, table, metric) for metric in metrics_of(table)])
    return f"{title}\n{body}" if title and body else body


def format_by_task(tables: Mapping[str, Mapping[str, dict]]) -> str:
    """:func:`by_task`'s result as one table per task."""
    return "\n".join(format_breakdown(table, f"by type ({task} questions, percent ± standard error):")
                     for task, table in tables.items())
