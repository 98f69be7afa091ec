"""ScienceQA QCM-A prompts as MemVP's code writes them, and answer parsing as its eval.py reads them."""

from __future__ import annotations

import pytest

from vlbridge.errors import DataError
from vlbridge.prompts.scienceqa import (answer_text, context_text, parse_answer, prompt_and_target, qcm_prompt)

PROBLEM = {
    "question": "Which of these states is farthest north?",
    "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"],
    "answer": 0,
    "hint": "",
    "image": "image.png",
}


def test_prompt_and_target_of_a_problem():
    prompt, target = prompt_and_target(PROBLEM)
    assert prompt == ("Question: Which of these states is farthest north?\nContext: N/A\n"
                      "Options: (A) West Virginia (B) Louisiana (C) Arizona (D) Oklahoma\nResponse:")
    assert target == "The answer is A."


def test_context_joins_hint_and_caption():
    assert context_text("", "") == "N/A"
    assert context_text("A hint.", "") == "A hint."
    assert context_text("", "A map of the US.") == "A map of the US."
    assert context_text("A hint.", "A map.") == "A hint. A map."
    prompt, _ = prompt_and_target(dict(PROBLEM, hint="Look  at the map."), caption="A map.")
    assert "\nContext: Look at the map. A map.\n" in prompt  # double spaces collapsed, as in the code


def test_answer_letters():
    assert answer_text(3) == "The answer is D."
    assert qcm_prompt("Q?", ["x", "y"]).endswith("Options: (A) x (B) y\nResponse:")


@pytest.mark.parametrize("text, expected", [
    ("The answer is B.", 1),
    ("The answer is (C)", 2),
    ("Because of the map. The answer is A.", 0),
    (" D", 3),  # one token after a prompt ending in "The answer is"
    ("E", -1),  # not among the 4 choices
    ("The answer is Bob", -1),  # no option letter after the prefix; the first capital is T
    ("", -1),
    ("no capitals here", -1),
])
def test_parse_answer(text, expected):
    assert parse_answer(text, 4) == expected


def test_bad_problems_name_the_field():
    with pytest.raises(DataError, match="record 'q1', field 'answer'"):
        prompt_and_target(dict(PROBLEM, answer=7), record="q1")
    bad = dict(PROBLEM)
    del bad["choices"]
    with pytest.raises(DataError, match="field 'choices'"):
        prompt_and_target(bad)
    with pytest.raises(DataError, match="at least 2 choices"):
        qcm_prompt("Q?", ["only"])
