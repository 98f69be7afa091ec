"""Multiple-choice accuracy with the ScienceQA breakdown, and answer parsing.

Breakdown as the ScienceQA evaluation (``get_scores`` in lupantech/ScienceQA): by subject (NAT natural
science, SOC social science, LAN language science), by context (TXT: the problem has a text hint,
IMG: it has an image, NO: neither), by grade (G1-6, G7-12), and the average. A subset with no
questions is reported as ``None`` (the reference divides by zero there).

Answer parsing, in the two common conventions (``parse_choice``):

- ``"letter"``: the answer is the bare option letter ("B", "(B)", "B." or "B. text"), as in LLaVA's
  ScienceQA evaluation;
- ``"answer_is"``: the answer contains ``The answer is B`` (MemVP, LLaVA's fallback);
- ``"auto"`` (default): ``"letter"``, then ``"answer_is"`` (LLaVA's order).

A letter outside the options or an unparseable answer counts as wrong and is listed in ``unparsed``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlbridge.errors import ConfigError, DataError

_BARE_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")
_LETTER_PERIOD_SPACE = re.compile(r"^([A-Z])\. ")
_ANSWER_IS = re.compile(r"The answer is \(?([A-Z])\)?")

PARSE_CONVENTIONS = ("auto", "letter", "answer_is")


def parse_choice(text: str, num_choices: int, convention: str = "auto") -> int | None:
    """Index of the chosen option, or None when the text names no valid option."""
    if convention not in PARSE_CONVENTIONS:
        raise ConfigError(f"unknown answer convention {convention!r}; valid: {list(PARSE_CONVENTIONS)}")
    text = text.replace("\n", ". ").strip()  # LLaVA's evaluation replaces newlines the same way
    match = None
    if convention in ("auto", "letter"):
        match = _BARE_LETTER.match(text) or _LETTER_PERIOD_SPACE.match(text)
    if match is None and convention in ("auto", "answer_is"):
        match = _ANSWER_IS.search(text)
    if match is None:
        return None
    index = ord(match.group(1)) - ord("A")
    return index if index < num_choices else None


@dataclass(frozen=True)
class MCQuestion:
    """Ground truth of one multiple-choice question and the ScienceQA attributes of the breakdown."""

    answer_index: int
    num_choices: int
    subject: str = ""  # "natural science" | "social science" | "language science"
    has_text_context: bool = False  # a non-empty hint
    has_image: bool = False
    grade: str = ""  # "grade1" .. "grade12"


_SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
_LOW_GRADES = {f"grade{i}" for i in range(1, 7)}
_HIGH_GRADES = {f"grade{i}" for i in range(7, 13)}


def _subsets(q: MCQuestion) -> list[str]:
    names = [key for key, subject in _SUBJECTS.items() if q.subject == subject]
    if q.has_text_context:
        names.append("TXT")
    if q.has_image:
        names.append("IMG")
    if not q.has_text_context and not q.has_image:
        names.append("NO")
    if q.grade in _LOW_GRADES:
        names.append("G1-6")
    if q.grade in _HIGH_GRADES:
        names.append("G7-12")
    return names


SUBSET_NAMES = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")


def mc_scores(predictions: Mapping[Any, str], questions: Mapping[Any, MCQuestion], convention: str = "auto",
              source: object = None) -> dict[str, Any]:
    """Accuracy (percent) overall and per ScienceQA subset, counts, and the unparsed question ids, of
    generated answers parsed with ``convention``.

    Every question needs a prediction (a missing one is an error naming the ids; ScienceQA's own
    script silently counts it wrong, which hides broken runs).
    """
    if convention not in PARSE_CONVENTIONS:
        raise ConfigError(f"unknown answer convention {convention!r}; valid: {list(PARSE_CONVENTIONS)}")
    _same_ids(predictions, questions, source)
    chosen = {qid: parse_choice(predictions[qid], q.num_choices, convention) for qid, q in questions.items()}
    return {**mc_accuracy(chosen, questions, source), "convention": convention}


def mc_accuracy(chosen: Mapping[Any, int | None], questions: Mapping[Any, MCQuestion],
                source: object = None) -> dict[str, Any]:
    """:func:`mc_scores` of option indices chosen directly (None: no valid option, listed in ``unparsed``),
    e.g. by ranking the options' likelihoods."""
    _same_ids(chosen, questions, source)
    correct: dict[str, int] = {name: 0 for name in ("average", *SUBSET_NAMES)}
    total: dict[str, int] = dict.fromkeys(correct, 0)
    unparsed, per_question = [], {}
    for qid, question in questions.items():
        choice = chosen[qid]
        if choice is not None and not 0 <= choice < question.num_choices:
            raise DataError(f"question {qid!r}: option {choice} chosen of {question.num_choices}", file=source)
        if choice is None:
            unparsed.append(qid)
        right = choice == question.answer_index
        per_question[qid] = {"prediction": choice, "correct": right}
        for name in ("average", *_subsets(question)):
            total[name] += 1
            correct[name] += int(right)
    accuracy = {name: (100.0 * correct[name] / total[name] if total[name] else None) for name in correct}
    return {
        "metric": "multiple_choice_accuracy",
        "accuracy": accuracy,
        "accuracy_rounded": {k: (round(v, 2) if v is not None else None) for k, v in accuracy.items()},
        "correct": correct,
        "count": total,
        "unparsed": unparsed,
        "num_unparsed": len(unparsed),
        "per_question": per_question,
    }


def _same_ids(predictions: Mapping[Any, Any], questions: Mapping[Any, MCQuestion], source: object) -> None:
    if not predictions:
        raise DataError("no predictions to score", file=source)
    missing = [qid for qid in questions if qid not in predictions]
    extra = [qid for qid in predictions if qid not in questions]
    if missing or extra:
        raise DataError(f"predictions and ground truth have different ids: {len(missing)} without prediction "
                        f"(first: {missing[:5]}), {len(extra)} unknown (first: {extra[:5]})", file=source)
