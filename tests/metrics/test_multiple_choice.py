"""Multiple-choice parsing (both conventions) and the ScienceQA breakdown."""

from __future__ import annotations

import pytest

from vlbridge.errors import ConfigError, DataError
from vlbridge.metrics.multiple_choice import MCQuestion, mc_accuracy, mc_scores, parse_choice


@pytest.mark.parametrize("text, convention, expected", [
    ("B", "auto", 1), (" (C) ", "auto", 2), ("A.", "auto", 0), ("D. because", "auto", 3),
    ("The answer is B.", "auto", 1), ("I think... The answer is (A)", "auto", 0),
    ("The answer is B.", "letter", None), ("B", "answer_is", None), ("The answer is C", "answer_is", 2),
    ("E", "auto", None),  # outside the 4 options
    ("banana", "auto", None), ("", "auto", None), ("b", "auto", None),
])
def test_parse_choice(text, convention, expected):
    assert parse_choice(text, 4, convention) == expected


def test_unknown_convention():
    with pytest.raises(ConfigError, match="answer_is"):
        parse_choice("A", 2, "first_letter")


def test_scienceqa_breakdown_and_unparsed_answers():
    questions = {
        "1": MCQuestion(0, 2, "natural science", has_text_context=True, has_image=True, grade="grade3"),
        "2": MCQuestion(1, 3, "social science", has_image=True, grade="grade8"),
        "3": MCQuestion(2, 4, "language science", grade="grade12"),
        "4": MCQuestion(1, 2, "natural science", has_text_context=True, grade="grade1"),
    }
    scores = mc_scores({"1": "A", "2": "The answer is B.", "3": "no idea", "4": "A"}, questions)
    acc = scores["accuracy"]
    assert acc["average"] == 50.0
    assert (acc["NAT"], acc["SOC"], acc["LAN"]) == (50.0, 100.0, 0.0)
    assert (acc["TXT"], acc["IMG"], acc["NO"]) == (50.0, 100.0, 0.0)
    assert (acc["G1-6"], acc["G7-12"]) == (50.0, 50.0)
    assert scores["unparsed"] == ["3"] and scores["num_unparsed"] == 1
    assert scores["per_question"]["3"] == {"prediction": None, "correct": False}


def test_empty_subset_is_none_and_ids_must_match():
    q = {"1": MCQuestion(0, 2, "natural science", grade="grade2")}
    assert mc_scores({"1": "A"}, q)["accuracy"]["SOC"] is None
    with pytest.raises(DataError, match="1 without prediction"):
        mc_scores({"2": "A"}, q)
    with pytest.raises(DataError, match="no predictions"):
        mc_scores({}, q)


def test_chosen_indices_score_as_their_parsed_answers_would():
    questions = {"1": MCQuestion(0, 2, "natural science", has_image=True), "2": MCQuestion(2, 3, "social science"),
                 "3": MCQuestion(1, 2, "language science")}
    by_index = mc_accuracy({"1": 0, "2": 1, "3": None}, questions)
    by_text = mc_scores({"1": "A", "2": "B", "3": "?"}, questions)
    assert by_index == {k: v for k, v in by_text.items() if k != "convention"}
    with pytest.raises(DataError, match="question '2': option 3 chosen of 3"):
        mc_accuracy({"1": 0, "2": 3, "3": 0}, questions)
    with pytest.raises(DataError, match="1 without prediction"):
        mc_accuracy({"1": 0, "2": 1}, questions)
