"""VQA accuracy: normalisation quirks, both official versions, rounding, errors, and parity with the
2017 official code as shipped in LAVIS (``salesforce-lavis``).

The current official code (GT-Vision-Lab/VQA ``vqaEval.py`` @ a013f00) is Python 2 only and on no
package registry, so its behaviour is pinned by tables whose expected values were derived by reading
that code line by line. Its normalisation functions are character-for-character those of the 2017
code, which the LAVIS parity tests run for real.
"""

from __future__ import annotations

import json
import random

import pytest
from lavis_vqa import load as lavis_load
from lavis_vqa import skip_without_lavis

from vlbridge.errors import ConfigError, DataError
from vlbridge.metrics.vqa import VQAQuestion, vqa_accuracy, vqa_scores
from vlbridge.metrics.vqa_normalize import normalize_answer, process_digit_article, process_punctuation

needs_lavis = skip_without_lavis()

# (raw answer, official normalisation) -- derived by hand from processPunctuation/processDigitArticle.
NORMALISATION_TABLE = [
    ("Yes", "yes"),
    ("yes.", "yes"),  # the period rule removes periods not followed by a digit
    ("2.5", "2.5"),
    ("5.", "5"),
    ("1.a", "1a"),
    ("a.m.", "am"),
    ("mr. smith", "mr smith"),
    ("one", "1"), ("none", "0"), ("ten", "10"), ("eleven", "eleven"), ("ONE", "1"),
    ("two dogs", "2 dogs"),
    ("the cat", "cat"), ("a dog", "dog"), ("an apple", "apple"), ("The Cat", "cat"),
    ("dont", "don't"), ("whats", "what's"), ("yall", "y'all"),
    ("Im", "im"),  # the table's capitalised keys never match after lower-casing
    ("somebody'd", "somebodyd"),  # the table's reversed entry
    ("red, white", "red white"),  # ", " in the text: the comma is deleted
    ("red,white", "red white"),  # no space beside it: the comma becomes a space
    ("1,000", "1000"),  # digit,digit anywhere: every listed mark is deleted
    ("1,000 (approx)", "1000 approx"),
    ("(approx)", "approx"),
    ("(x) b", "x b"),
    ("(a) b", "b"),  # "a" is then an article
    ("yes!", "yes"), ("yes?", "yes"),
    ("left - right", "left right"), ("t-shirt", "t shirt"),
    ("it's", "it's"), ("don't", "don't"), ("what's", "what's"),
    ("50%", "50%"), ("3:00", "3:00"), ("#1", "#1"), ("$5", "$5"),
    ("x/y", "x y"), ("x / y", "x y"), ("a/b", "b"), ("x_y", "x y"), ("<3", "3"), ("@home", "home"),
    ("." * 40, "." * 8),  # re.UNICODE passed as `count`: only 32 periods are removed
    ("  yes  ", "yes"),
    ("\tyes\n", "yes"),
]


@pytest.mark.parametrize("raw, expected", NORMALISATION_TABLE)
def test_normalisation_table(raw, expected):
    assert normalize_answer(raw) == expected


@needs_lavis
def test_normalisation_functions_match_the_official_2017_code():
    vqa_eval = lavis_load("vqa_eval")
    reference = vqa_eval.VQAEval.__new__(vqa_eval.VQAEval)
    # __init__ needs data objects; the tables it sets up are what we need, so build it on a stub.
    stub = type("Stub", (), {"getQuesIds": lambda self: []})()
    reference.__init__(stub, stub)
    pool = [raw for raw, _ in NORMALISATION_TABLE] + _tricky_answers()
    for text in pool:
        assert process_punctuation(text) == reference.processPunctuation(text), text
        assert process_digit_article(text) == reference.processDigitArticle(text), text
        assert process_digit_article(process_punctuation(text)) == reference.processDigitArticle(
            reference.processPunctuation(text)), text


def _tricky_answers() -> list[str]:
    pieces = ["yes", "No", "two", "2", "the", "a", "An", "cat", "dont", "can't", "1,000", "1.5", "5.", ".", ",",
              "(", ")", "-", "/", "!", "?", "'", '"', ";", ":", "@", "#", "$", "%", "none", "Ten", "it's", "Im",
              "y'all", "ow's'at", "t-shirt", "red,white", " ", "  ", "...", "a.b.c", "x_y", "<", ">", "[", "]",
              "{", "}", "\\", "+", "=", "`", "somebody'd", "café", "½", "٣,٤"]
    rng = random.Random(0)
    out = []
    for _ in range(400):
        n = rng.randint(1, 5)
        out.append("".join(rng.choice(pieces) + rng.choice(["", " ", ""]) for _ in range(n)))
    return out


def _acc(m_matches: int) -> float:
    """Official soft score when m of the 10 human answers equal the prediction."""
    return (m_matches * min(1, (m_matches - 1) / 3) + (10 - m_matches) * min(1, m_matches / 3)) / 10


@pytest.mark.parametrize("version", ["current", "2017"])
@pytest.mark.parametrize("m, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_soft_score_by_number_of_matching_humans(version, m, expected):
    answers = ["red"] * m + ["blue"] * (10 - m) if m < 10 else ["red"] * 10
    assert vqa_accuracy("red", answers, version) == pytest.approx(expected, abs=1e-12)
    assert _acc(m) == pytest.approx(expected, abs=1e-12)


# (prediction, human answers, accuracy with the current code, accuracy with the 2017 code), derived by
# reading both versions' evaluate().
VERSION_TABLE = [
    ("yes", ["yes"] * 10, 1.0, 1.0),
    ("Yes", ["yes"] * 10, 0.0, 1.0),  # identical humans: the current code normalises nothing
    ("yes.", ["yes"] * 10, 0.0, 1.0),
    (" yes ", ["yes"] * 10, 1.0, 1.0),  # white space is always stripped
    ("two", ["two"] * 10, 1.0, 0.0),  # 2017: prediction becomes "2", humans stay "two"
    ("2", ["two"] * 10, 0.0, 0.0),
    ("two", ["two"] * 9 + ["2"], 1.0, 0.3),  # current: humans normalised too, all "2"
    ("cat", ["The cat"] * 8 + ["cat"] * 2, 1.0, 0.6),  # 2017: humans keep their article
    ("The Cat", ["the cat"] * 8 + ["dog"] * 2, 1.0, 0.0),
    ("dont", ["don't"] * 5 + ["no"] * 5, 1.0, 1.0),
    ("t-shirt", ["t shirt"] * 3 + ["T-Shirt"] * 7, 1.0, 0.9),  # 2017 humans are not lower-cased
    ("red,white", ["red white"] * 3 + ["red"] * 7, 0.9, 0.9),
    ("1,000", ["1000"] * 2 + ["1,000"] * 2 + ["many"] * 6, 1.0, 1.0),  # 2017 humans: "1,000" -> "1000" too
    ("1,000", ["1000"] * 2 + ["1,000."] * 2 + ["many"] * 6, 1.0, 1.0),
]


@pytest.mark.parametrize("prediction, answers, current, v2017", VERSION_TABLE)
def test_versions_disagree_exactly_where_the_official_codes_do(prediction, answers, current, v2017):
    assert vqa_accuracy(prediction, answers, "current") == pytest.approx(current, abs=1e-12)
    assert vqa_accuracy(prediction, answers, "2017") == pytest.approx(v2017, abs=1e-12)


def test_rounding_as_the_official_set_accuracy():
    gt = {1: VQAQuestion(("red",) + ("blue",) * 9, "what color", "other"),
          2: VQAQuestion(("red",) * 2 + ("blue",) * 8, "what color", "other"),
          3: VQAQuestion(("yes",) * 10, "is this", "yes/no")}
    scores = vqa_scores({1: "red", 2: "red", 3: "yes"}, gt)
    assert scores.per_question == {1: 30.0, 2: 60.0, 3: 100.0}
    assert scores.overall == 63.33 and scores.overall_unrounded == pytest.approx(190 / 3)
    assert scores.per_question_type == {"what color": 45.0, "is this": 100.0}
    assert scores.per_answer_type == {"other": 45.0, "yes/no": 100.0}
    assert scores.version == "current" and scores.to_dict()["version_description"].startswith("official")


def test_unknown_version_lists_valid_ones():
    with pytest.raises(ConfigError, match="2017"):
        vqa_accuracy("a", ["a"] * 10, "2019")


def test_bad_input_errors_name_ids_and_fields():
    gt = {1: VQAQuestion(("a",) * 10), 2: VQAQuestion(("b",) * 10)}
    with pytest.raises(DataError, match="no predictions"):
        vqa_scores({}, gt, source="res.json")
    with pytest.raises(DataError, match=r"question_id.*1 question ids have no prediction \(first: \[2\]\)"):
        vqa_scores({1: "a"}, gt)
    with pytest.raises(DataError, match=r"not in the ground truth \(first: \[3\]\)"):
        vqa_scores({1: "a", 2: "b", 3: "c"}, gt)
    with pytest.raises(DataError, match=r"record 2.*'answers'.*found 9"):
        vqa_scores({1: "a", 2: "b"}, {1: gt[1], 2: VQAQuestion(("b",) * 9)})
    with pytest.raises(DataError, match=r"record 2.*'answer'"):
        vqa_scores({1: "a", 2: 5}, gt)


def _write_official_files(tmp_path, rng: random.Random, n: int = 300):
    pool = ["yes", "no", "Yes", "2", "two", "the cat", "cat", "red, white", "red white", "1,000", "1000",
            "dont", "don't", "t-shirt", "t shirt", "5.", "5", "a.m.", "am", "(approx)", "approx"]
    questions, annotations, results = [], [], []
    for qid in range(1, n + 1):
        if rng.random() < 0.3:
            humans = [rng.choice(pool)] * 10
        else:
            humans = [rng.choice(pool[:8] if rng.random() < 0.5 else pool) for _ in range(10)]
        qtype, atype = rng.choice(["what is", "how many", "is the"]), rng.choice(["other", "number", "yes/no"])
        questions.append({"question_id": qid, "image_id": qid // 3, "question": f"q{qid}?"})
        annotations.append({"question_id": qid, "image_id": qid // 3, "question_type": qtype, "answer_type": atype,
                            "multiple_choice_answer": humans[0],
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                        for i, a in enumerate(humans)]})
        results.append({"question_id": qid, "answer": rng.choice(pool + [" yes ", "YES", "The Cat"])})
    header = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014", "license": {}}
    (tmp_path / "q.json").write_text(json.dumps({**header, "questions": questions}))
    (tmp_path / "a.json").write_text(json.dumps({**header, "annotations": annotations}))
    (tmp_path / "r.json").write_text(json.dumps(results))
    return tmp_path / "q.json", tmp_path / "a.json", tmp_path / "r.json"


@needs_lavis
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_official_2017_evaluation(tmp_path, seed):
    from vlbridge.datasets.results import read_vqa_results
    from vlbridge.datasets.vqav2 import vqav2_ground_truth

    q_file, a_file, r_file = _write_official_files(tmp_path, random.Random(seed))
    vqa_api, vqa_eval = lavis_load("vqa"), lavis_load("vqa_eval")
    vqa = vqa_api.VQA(str(a_file), str(q_file))
    reference = vqa_eval.VQAEval(vqa, vqa.loadRes(str(r_file), str(q_file)), n=2)
    reference.evaluate()
    ours = vqa_scores(read_vqa_results(r_file), vqav2_ground_truth(q_file, a_file), version="2017")
    assert ours.overall == reference.accuracy["overall"]
    assert ours.per_question_type == reference.accuracy["perQuestionType"]
    assert ours.per_answer_type == reference.accuracy["perAnswerType"]
    assert ours.per_question == reference.evalQA
    # and the current version really differs on these inputs
    assert vqa_scores(read_vqa_results(r_file), vqav2_ground_truth(q_file, a_file)).per_question != reference.evalQA
