"""What every evaluation task returns, and the checks all tasks share.

A generative task gets an ``answer`` function (prompt-only samples -> one generated text each), so the
tasks are pure functions of the model's outputs: the CLI passes batched generation
(:func:`vlbridge.eval.generate_answers.generate_answers`), a test can pass anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError

Answer = Callable[[list[Sample]], list[str]]
"""prompt-only samples -> one generated text per sample, in order."""

Choose = Callable[[list[Sample]], list[int]]
"""multiple-choice samples (``meta["choices"]``; what is asked is their prompt, an answer turn is ignored) -> the
index of the option chosen for each, in order
(:func:`vlbridge.eval.choice_likelihood.choose_by_likelihood` ranks the options' likelihoods)."""

OFFICIAL_FORMATS = ("caption", "vqa")
"""Official result formats a task may produce: COCO ``[{image_id, caption}]``, VQA ``[{question_id, answer}]``."""


@dataclass
class TaskResult:
    """Scores and per-item predictions of one task run."""

    task: str  # caption | vqa | multiple-choice | retrieval | data
    prompt: str | None  # the template used (None: retrieval, or per-sample prompts of a data file)
    metric: dict[str, Any]  # metric name, version and conventions
    scores: dict[str, Any]  # headline scores and their breakdowns
    predictions: Any  # per item: list of dicts (retrieval: {"images": [...], "texts": [...]})
    official_format: str | None = None  # one of OFFICIAL_FORMATS, or None
    official: dict[Any, str] = field(default_factory=dict)  # id -> text, for the official result file


def prompt_only(sample: Sample, user_text: str) -> Sample:
    """``sample`` asked ``user_text`` instead of its own conversation (what generation conditions on): the same
    image or clip, record and position."""
    return replace(sample, turns=(Turn("user", user_text),))


def require_items(samples: Sequence[Sample], what: str) -> None:
    if not samples:
        raise DataError(f"no {what} to evaluate (an empty split, or --limit 0?)")


def require_meta(sample: Sample, *keys: str) -> None:
    """Every key in ``sample.meta``, else an error naming the record and the field."""
    for key in keys:
        if sample.meta.get(key) is None:
            raise DataError("missing", file=sample.source or None, record=sample.id, field=f"meta.{key}")


def require_images(samples: Sequence[Sample], hint: str = "") -> None:
    """Every sample has an image file that exists; checked before any generation starts."""
    no_image = [s for s in samples if s.image is None]
    if no_image:
        s = no_image[0]
        raise DataError(f"{len(no_image)} items have no image{hint}", file=s.source or None, record=s.id,
                        field="image")
    missing = [s for s in samples if not s.image.is_file()]
    if missing:
        s = missing[0]
        raise DataError(f"image file {s.image} not found ({len(missing)} of {len(samples)} items' images are "
                        f"missing){hint}", file=s.source or None, record=s.id, field="image")


def answer_all(answer: Answer, prompts: list[Sample]) -> list[str]:
    """``answer(prompts)``, checked to give one string per prompt."""
    texts = list(answer(prompts))
    if len(texts) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} answers")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"answers must be strings, got {bad[0]}")
    return texts


def choose_all(choose: Choose, prompts: list[Sample]) -> list[int]:
    """``choose(prompts)``, checked to give one option index of each prompt's choices."""
    chosen = list(choose(prompts))
    if len(chosen) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(chosen)} choices")
    for prompt, index in zip(prompts, chosen):
        if not isinstance(index, int) or not 0 <= index < len(prompt.meta["choices"]):
            raise ValueError(f"{prompt.id}: chose {index!r}, not an index into its {len(prompt.meta['choices'])} "
                             "options")
    return chosen
