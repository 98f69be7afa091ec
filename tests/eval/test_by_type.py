"""Accuracy by question type and answer type: the official definitions (mean per type), counts and standard
errors, in the VQA task, a LLaVA JSON file, `vlbridge eval`'s report and printout, and training's evaluation."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.sample import Sample, Turn
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.eval.by_type import breakdown, by_task, format_breakdown, format_table
from vlbridge.eval.llava_data import evaluate_llava_samples
from vlbridge.eval.vqa import evaluate_vqa
from vlbridge_cli.main import main


def sample(i: int, question_type: str | None, answer_type: str | None = None) -> Sample:
    meta = {k: v for k, v in (("question_type", question_type), ("answer_type", answer_type)) if v is not None}
    return Sample(str(i), (Turn("user", "q"), Turn("assistant", "a")), meta=meta)


def test_breakdown_is_the_mean_per_type_with_count_and_standard_error():
    samples = [sample(0, "color", "other"), sample(1, "color", "other"), sample(2, "color", "other"),
               sample(3, "count", "number"), sample(4, None, "yes/no")]
    scores = [{"exact_match": 1.0, "unparsed": 0.0}, {"exact_match": 0.0}, {"exact_match": 1.0},
              {"exact_match": 0.0}, {"exact_match": 1.0}]
    table = breakdown([s.meta for s in samples], scores)
    color = table["question_type"]["color"]
    assert color["count"] == 3 and color["exact_match"] == pytest.approx(200 / 3)
    # sample standard deviation of (100, 0, 100) over sqrt(3)
    assert color["exact_match_stderr"] == pytest.approx(math.sqrt(((100 / 3) ** 2 * 2 + (200 / 3) ** 2) / 2) / math.sqrt(3))
    assert table["question_type"]["count"] == {"count": 1, "exact_match": 0.0, "exact_match_stderr": None}
    assert set(table["question_type"]) == {"color", "count"}  # the sample without a question type is left out
    assert table["answer_type"]["yes/no"]["exact_match"] == 100.0 and table["answer_type"]["other"]["count"] == 3
    assert "unparsed" not in color  # not an accuracy
    assert breakdown([{}], [{"exact_match": 1.0}]) == {}


def test_the_vqa_task_gives_the_official_per_type_means_with_counts(shapes, manifest):
    files = manifest["files"]["vqav2"]
    questions = read_vqav2(shapes / files["questions"]["train"], shapes / files["annotations"]["train"],
                           image_dir=shapes / files["image_dir"], image_pattern=files["image_file_pattern"])
    result = evaluate_vqa(lambda ps: ["yes" if i % 2 else "red" for i, _ in enumerate(ps)], questions)
    by_type = result.scores["by_type"]
    for field, official in (("question_type", "per_question_type_unrounded"),
                            ("answer_type", "per_answer_type_unrounded")):
        assert {k: v["vqa_accuracy"] for k, v in by_type[field].items()} == pytest.approx(result.scores[official])
        assert {k: v["count"] for k, v in by_type[field].items()} == Counter(q.meta[field] for q in questions)
    assert sum(row["count"] for row in by_type["answer_type"].values()) == result.scores["num_questions"]


def test_a_llava_file_breaks_short_and_mc_answers_down_by_type(shapes):
    short = list(read_llava_json(shapes / "train_short.json"))
    mc = list(read_llava_json(shapes / "train_mc.json"))
    # right only on colour questions: 100 % there, 0 % elsewhere
    result = evaluate_llava_samples(
        lambda ps: [p.answer if p.meta["question_type"].startswith("color") else "zebra" for p in ps], short + mc)
    table = result.scores["short"]["by_type"]["question_type"]
    assert set(table) == {s.meta["question_type"] for s in short}
    for kind, row in table.items():
        assert row["exact_match"] == (100.0 if kind.startswith("color") else 0.0)
        assert row["count"] == sum(s.meta["question_type"] == kind for s in short)
    assert set(result.scores["mc"]["by_type"]) == {"question_type", "answer_type"}
    assert by_task(short, [s.answer for s in short])["short"]["answer_type"]["number"]["vqa_accuracy"] == 100.0
    assert by_task([sample(0, None)], ["a"]) == {}  # no types: nothing to break down


def test_the_table_is_compact_and_shows_each_column():
    labels = [{"question_type": "color", "answer_type": "other"}] * 2
    before = breakdown(labels, [{"exact_match": 0.0}, {"exact_match": 1.0}])
    after = breakdown(labels, [{"exact_match": 1.0}, {"exact_match": 1.0}])
    text = format_table([("before", before, "exact_match"), ("after", after, "exact_match")])
    lines = text.splitlines()
    assert lines[0].split() == ["question", "type", "n", "before", "after"]
    assert lines[1].split() == ["color", "2", "50.0", "±50.0", "100.0", "±0.0"]
    assert lines[2].split() == ["answer", "type", "n", "before", "after"]
    assert format_breakdown(before, "title").splitlines()[0] == "title"


def test_vlbridge_eval_reports_and_prints_the_tables(shapes, manifest, run_dir, tmp_path, capsys):
    files = manifest["files"]["vqav2"]
    out = tmp_path / "vqa.json"
    assert main(["eval", "--run", str(run_dir), "--task", "vqa", "--questions", str(shapes / files["questions"]["train"]),
                 "--annotations", str(shapes / files["annotations"]["train"]), "--images", str(shapes / "images"),
                 "--image-pattern", files["image_file_pattern"], "--limit", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(out.read_text())["scores"]
    types = scores["by_type"]["question_type"]
    assert sum(row["count"] for row in types.values()) == 8 and all("vqa_accuracy_stderr" in r for r in types.values())
    assert "question type" in printed and "answer type" in printed
    assert all(any(line.split()[:1] == [kind] for line in printed.splitlines()) for kind in types)

    out = tmp_path / "data.json"
    assert main(["eval", "--run", str(run_dir), "--data", str(shapes / "train_short.json"), "--limit", "6",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    short = json.loads(out.read_text())["scores"]["short"]
    assert sum(row["count"] for row in short["by_type"]["answer_type"].values()) == 6
    assert "short questions" in printed and '"by_type"' not in printed  # a table, not a JSON dump

