"""``vlbridge score``'s files: the scores land beside the predictions as X.scores.json (not
X.results.json.scores.json), a predictions file that is not UTF-8 is named in a clear error, and the VQA
scores carry each type's count and standard error."""

from __future__ import annotations

import json

import pytest

from vlbridge.datasets.results import write_vqa_results
from vlbridge_cli.main import main
from vlbridge_cli.score import default_out


@pytest.fixture
def vqa_truth(tmp_path):
    q = tmp_path / "q.json"
    q.write_text(json.dumps({"questions": [{"question_id": 5, "image_id": 1, "question": "Colour?"},
                                           {"question_id": 6, "image_id": 1, "question": "Count?"}]}))
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"annotations": [
        {"question_id": 5, "image_id": 1, "question_type": "what color", "answer_type": "other",
         "answers": [{"answer": "red"}] * 10},
        {"question_id": 6, "image_id": 1, "question_type": "how many", "answer_type": "number",
         "answers": [{"answer": "2"}] * 10}]}))
    return ["--questions", str(q), "--annotations", str(a)]


@pytest.mark.parametrize("name, written", [("eval-vqa.results.json", "eval-vqa.scores.json"),
                                           ("answers.json", "answers.scores.json"),
                                           ("answers.txt", "answers.txt.scores.json")])
def test_scores_are_written_beside_the_predictions_without_their_suffix(name, written, vqa_truth, tmp_path, capsys):
    assert default_out(tmp_path / name) == tmp_path / written
    pred = tmp_path / name
    write_vqa_results({5: "red", 6: "3"}, pred)
    assert main(["score", "--task", "vqa", *vqa_truth, "--pred", str(pred)]) == 0
    scores = json.loads((tmp_path / written).read_text())
    assert scores["overall"] == 50.0
    assert scores["by_type"]["answer_type"]["other"] == {"count": 1, "vqa_accuracy": 100.0,
                                                          "vqa_accuracy_stderr": None}
    assert "what color" in capsys.readouterr().out


def test_a_predictions_file_that_is_not_utf8_is_named(vqa_truth, tmp_path, capsys):
    pred = tmp_path / "latin1.json"
    pred.write_bytes('[{"question_id": 5, "answer": "rouge fonc\u00e9"}]'.encode("latin-1"))
    assert main(["score", "--task", "vqa", *vqa_truth, "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert f"file {pred}: not UTF-8 text (byte 41: 0xe9)" in err
