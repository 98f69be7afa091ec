"""``vlbridge score`` on official-format files, with no model involved."""

from __future__ import annotations

import json

import pytest

from vlbridge.datasets.results import write_caption_results, write_vqa_results
from vlbridge.metrics.caption import caption_scores
from vlbridge_cli.main import main


def _dump(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def coco(tmp_path):
    gt = _dump(tmp_path / "captions_val.json", {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}, {"id": 3, "file_name": "c.jpg"}],
        "annotations": [{"image_id": 1, "caption": "A dog runs on the grass."},
                        {"image_id": 1, "caption": "A brown dog running outside."},
                        {"image_id": 2, "caption": "Two cats sleep on a red sofa."},
                        {"image_id": 3, "caption": "A man rides a bike (in the rain)."}],
    })
    return gt


def test_caption_scores_printed_and_written(coco, tmp_path, capsys):
    pred = tmp_path / "res.json"
    write_caption_results({1: "A dog runs on grass.", 2: "Two cats on a sofa.", 3: "A man on a bike."}, pred)
    assert main(["score", "--task", "caption", "--gt", str(coco), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    assert "CIDEr:" in out and "Bleu_4:" in out
    written = json.loads((tmp_path / "res.scores.json").read_text())
    expected = caption_scores({1: ["A dog runs on the grass.", "A brown dog running outside."],
                               2: ["Two cats sleep on a red sofa."], 3: ["A man rides a bike (in the rain)."]},
                              {1: "A dog runs on grass.", 2: "Two cats on a sofa.", 3: "A man on a bike."})
    assert written["corpus"] == pytest.approx(expected["corpus"])
    assert set(written["per_image"]) == {"1", "2", "3"} and set(written["per_image"]["1"]) == {
        "Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"}


def test_caption_ids_must_match_unless_subset(coco, tmp_path, capsys):
    pred = tmp_path / "res.json"
    write_caption_results({1: "A dog.", 2: "Cats."}, pred)
    assert main(["score", "--task", "caption", "--gt", str(coco), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert "1 image ids have no prediction (first: [3])" in err and "field 'image_id'" in err
    out = tmp_path / "scores.json"
    assert main(["score", "--task", "caption", "--gt", str(coco), "--pred", str(pred), "--subset",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_images"] == 2


def test_vqa_scores_printed_and_written(tmp_path, capsys):
    q = _dump(tmp_path / "q.json", {"questions": [{"question_id": 5, "image_id": 1, "question": "Color?"},
                                                  {"question_id": 6, "image_id": 1, "question": "Count?"}]})
    a = _dump(tmp_path / "a.json", {"annotations": [
        {"question_id": 5, "image_id": 1, "question_type": "what color", "answer_type": "other",
         "answers": [{"answer": "red"}] * 2 + [{"answer": "blue"}] * 8},
        {"question_id": 6, "image_id": 1, "question_type": "how many", "answer_type": "number",
         "answers": [{"answer": "2"}] * 10}]})
    pred = tmp_path / "res.json"
    write_vqa_results({5: "Red", 6: "two"}, pred)
    assert main(["score", "--task", "vqa", "--questions", str(q), "--annotations", str(a), "--pred", str(pred)]) == 0
    out = capsys.readouterr().out
    assert "overall: 30.00" in out  # 60 (red: 2 humans) and 0 ("two" vs ten identical "2": nothing normalised)
    written = json.loads((tmp_path / "res.scores.json").read_text())
    assert written["per_question"] == {"5": 60.0, "6": 0.0} and written["version"] == "current"
    assert written["per_answer_type"] == {"other": 60.0, "number": 0.0}
    assert main(["score", "--task", "vqa", "--questions", str(q), "--annotations", str(a), "--pred", str(pred),
                 "--vqa-version", "2017", "--out", str(tmp_path / "s17.json")]) == 0
    assert json.loads((tmp_path / "s17.json").read_text())["per_question"] == {"5": 60.0, "6": 100.0}


def test_missing_arguments_and_bad_files(tmp_path, capsys):
    pred = _dump(tmp_path / "res.json", [{"question_id": 1}])
    assert main(["score", "--task", "vqa", "--pred", str(pred)]) == 2
    assert "--questions" in capsys.readouterr().err
    assert main(["score", "--task", "caption", "--pred", str(pred)]) == 2
    assert "--gt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--task", "retrieval", "--pred", str(pred)])
