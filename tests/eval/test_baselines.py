"""The image-blind baselines every accuracy is read against: the majority answer and the question-type prior."""

from __future__ import annotations

import pytest

from vlbridge.data.sample import Sample, Turn
from vlbridge.eval.scoring import majority_baseline, question_type_baseline


def sample(answer: str, kind: str | None) -> Sample:
    meta = {} if kind is None else {"question_type": kind}
    return Sample(answer + (kind or ""), (Turn("user", "q"), Turn("assistant", answer)), meta=meta)


def test_question_type_prior_answers_each_type_with_its_own_majority():
    train = [sample("red", "color"), sample("red", "color"), sample("blue", "color"),
             sample("2", "count"), sample("2", "count"), sample("3", "count"), sample("circle", "shape")]
    test = [sample("red", "color"), sample("blue", "color"), sample("Two", "count"), sample("3", "count"),
            sample("circle", "shape"), sample("red", "size")]  # "size": unseen type -> the overall majority
    # color: red (1 of 2 right); count: 2 (the normalised "Two" is right, "3" wrong); shape: circle (right);
    # size -> overall majority "red" or "2" (3 each; first counted wins: red) -> right
    assert question_type_baseline(train, test) == pytest.approx(100 * 4 / 6)
    assert majority_baseline(train, test) == pytest.approx(100 * 2 / 6)  # "red" everywhere


def test_question_type_prior_needs_the_type_on_every_sample():
    assert question_type_baseline([sample("red", None)], [sample("red", "color")]) is None
    assert question_type_baseline([], [sample("red", "color")]) is None
