"""ScienceQA's QCM-A prompt as MemVP's released code builds it (``util/base_prompt.py``, ``eval.py``).

Prompt (user text)::

    Question: Which of these states is farthest north?
    Context: N/A
    Options: (A) West Virginia (B) Louisiana (C) Arizona (D) Oklahoma
    Response:

Target (the supervised answer): ``The answer is A.``. The context is the problem's hint followed by the
image caption when captions are used, or ``N/A`` when both are empty; double spaces become single ones
and the prompt is stripped, as in the code. Evaluation there is greedy, one token after ``The answer
is``, and the prediction is the first capital letter generated (:func:`parse_answer`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from vlbridge.data.prompts import choice_letter
from vlbridge.errors import DataError

ANSWER_PREFIX = "The answer is"


def context_text(hint: str, caption: str = "") -> str:
    """The hint and the caption joined by a space, or ``N/A`` when both are empty."""
    return " ".join([hint, caption]).strip() or "N/A"


def options_text(choices: Sequence[str]) -> str:
    """``(A) first (B) second ...``"""
    return " ".join(f"({choice_letter(i)}) {choice}" for i, choice in enumerate(choices))


def qcm_prompt(question: str, choices: Sequence[str], context: str = "N/A") -> str:
    """The QCM input: question, context, options, then ``Response:``."""
    if not question.strip():
        raise DataError("the question is empty", field="question")
    if len(choices) < 2:
        raise DataError(f"a multiple-choice question needs at least 2 choices, got {len(choices)}", field="choices")
    text = f"Question: {question}\nContext: {context}\nOptions: {options_text(choices)}\nResponse:"
    return text.replace("  ", " ").strip()


def answer_text(answer_index: int) -> str:
    """The A target: ``The answer is X.``"""
    return f"{ANSWER_PREFIX} {choice_letter(answer_index)}."


def prompt_and_target(problem: Mapping, caption: str = "", record: str | None = None) -> tuple[str, str]:
    """(prompt, target) of one record of ScienceQA's ``problems.json`` (fields question, choices, answer,
    hint); ``caption`` is the image caption when captions are used (MemVP's evaluation uses them)."""
    for field in ("question", "choices", "answer"):
        if field not in problem:
            raise DataError("missing field", record=record, field=field)
    choices, answer = problem["choices"], problem["answer"]
    if not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(f"answer {answer!r} is not an index into the {len(choices)} choices", record=record,
                        field="answer")
    context = context_text(problem.get("hint") or "", caption)
    return qcm_prompt(problem["question"], choices, context), answer_text(answer)


_AFTER_PREFIX = re.compile(re.escape(ANSWER_PREFIX) + r"\s*\(?([A-Z])\b")
_CAPITAL = re.compile(r"[A-Z]")


def parse_answer(text: str, num_choices: int) -> int:
    """The chosen option's index from generated text, or -1 when there is none among the choices.

    ``The answer is X`` anywhere in the text gives X; otherwise (the text continues a prompt that
    already ends with ``The answer is``) the first capital letter, as MemVP's ``eval.py`` reads it."""
    match = _AFTER_PREFIX.search(text) or _CAPITAL.search(text)
    if match is None:
        return -1
    index = ord(match.group(match.lastindex or 0)) - ord("A")
    return index if 0 <= index < num_choices else -1
