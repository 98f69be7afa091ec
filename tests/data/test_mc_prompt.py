"""The one multiple-choice prompt format."""

from __future__ import annotations

import pytest

from vlbridge.data.prompts import choice_letter, format_multiple_choice
from vlbridge.errors import DataError


def test_format_without_and_with_context():
    assert format_multiple_choice("Which shape is at the top?", ["circle", "star", "cross"]) == (
        "Question: Which shape is at the top?\nOptions: (A) circle (B) star (C) cross\n"
        "Answer with the option's letter.")
    assert format_multiple_choice("Q?", ("x", "y"), context="The sky.") == (
        "Question: Q?\nContext: The sky.\nOptions: (A) x (B) y\nAnswer with the option's letter.")
    assert format_multiple_choice("Q?", ("x", "y"), context="  ") == format_multiple_choice("Q?", ("x", "y"))


def test_letters_and_errors():
    assert [choice_letter(i) for i in range(5)] == list("ABCDE")
    with pytest.raises(DataError):
        choice_letter(26)
    with pytest.raises(DataError, match="2..26 options"):
        format_multiple_choice("Q?", ["only one"])
    with pytest.raises(DataError, match="empty"):
        format_multiple_choice(" ", ["a", "b"])
