"""The one place where multiple-choice prompts are built, so training, evaluation and exporters agree.

Format (ScienceQA style, as in the MemVP/LLaVA ScienceQA prompts, without their chain-of-thought)::

    Question: Which shape is at the bottom right?
    Context: ...                          (only when a context is given)
    Options: (A) circle (B) star (C) cross
    Answer with the option's letter.

The expected answer is the bare letter ("B").
"""

from __future__ import annotations

from collections.abc import Sequence

from vlbridge.errors import DataError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Option letters; ScienceQA has at most 5 options, the format allows 26."""

MC_INSTRUCTION = "Answer with the option's letter."
OPTION_TEXT_INSTRUCTION = "Answer with the option's text."
"""For answers given as the option's own text, ranked by likelihood (``vlbridge.eval.choice_likelihood``)."""


def choice_letter(index: int) -> str:
    """The letter of option ``index`` (0 -> "A")."""
    if not 0 <= index < len(LETTERS):
        raise DataError(f"option index {index} is outside 0..{len(LETTERS) - 1}")
    return LETTERS[index]


def format_multiple_choice(question: str, choices: Sequence[str], context: str | None = None,
                           instruction: str = MC_INSTRUCTION) -> str:
    """Build the user text of a multiple-choice sample (without the image placeholder), ending with
    ``instruction`` (the option's letter, or :data:`OPTION_TEXT_INSTRUCTION`)."""
    if not question.strip():
        raise DataError("multiple-choice question is empty")
    if not 2 <= len(choices) <= len(LETTERS):
        raise DataError(f"multiple-choice question needs 2..{len(LETTERS)} options, got {len(choices)}")
    options = " ".join(f"({choice_letter(i)}) {choice}" for i, choice in enumerate(choices))
    lines = [f"Question: {question}"]
    if context and context.strip():
        lines.append(f"Context: {context}")
    lines += [f"Options: {options}", instruction]
    return "\n".join(lines)
