"""`vlbridge eval` on bad records (data.on_bad_record, as training), an --out it cannot write (refused before
any work), the official results file of a LLaVA JSON file's short answers, and --threads."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from vlbridge.data.llava_json import read_llava_json, write_llava_json
from vlbridge.datasets.results import read_vqa_results
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge_cli import evaluate
from vlbridge_cli.main import main


@pytest.fixture
def bad_file(shapes, tmp_path):
    """Five Shapes short-answer records: the second malformed, the third's image missing, the fourth's image not an
    image."""
    records = json.loads((shapes / "train_short.json").read_text())[:5]
    (tmp_path / "images").mkdir()
    for record in records:
        shutil.copy(shapes / record["image"], tmp_path / record["image"])
    del records[1]["conversations"]
    records[2]["image"] = "images/missing.png"
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    records[3]["image"] = "images/broken.png"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    return path, [r["id"] for r in records]


def test_bad_records_are_skipped_and_listed_under_skip(bad_file, recipe_file, tmp_path, capsys):
    path, ids = bad_file
    out = tmp_path / "report.json"
    assert main(["eval", "--recipe", str(recipe_file), "--data", str(path), "--set", "data.on_bad_record=skip",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(e.get("id", e["record"]) for e in report["skipped_records"]) == ids[1:4]
    assert [p["id"] for p in report["predictions"]] == [ids[0], ids[4]]
    assert report["scores"]["short"]["count"] == 2
    assert "skipped 3 bad record(s)" in capsys.readouterr().out


@pytest.mark.parametrize("limit, evaluated, listed", [(1, [0], []), (2, [0], [1, 2]), (3, [0], [1, 2, 3])])
def test_limit_lists_only_the_bad_records_within_its_range(bad_file, recipe_file, tmp_path, limit, evaluated,
                                                           listed):
    """--limit N evaluates the first N readable records; the malformed record (read position 1) is listed only
    when a record after it is among them, the records with bad images (found when evaluating) only when they are."""
    path, ids = bad_file
    out = tmp_path / "report.json"
    assert main(["eval", "--recipe", str(recipe_file), "--data", str(path), "--set", "data.on_bad_record=skip",
                 "--limit", str(limit), "--max-new-tokens", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [p["id"] for p in report["predictions"]] == [ids[i] for i in evaluated]
    assert sorted(e.get("id", e["record"]) for e in report["skipped_records"]) == [ids[i] for i in listed]


def test_sample_list_head_keeps_the_skipped_records_before_its_end():
    from vlbridge.data.llava_json import SampleList, SkippedRecord

    # read order: kept a (0), skipped (1), kept b (2), skipped (3), skipped (4), kept c (5)
    samples = SampleList(["a", "b", "c"], [SkippedRecord(i, f"bad{i}", "why") for i in (1, 3, 4)])
    assert [s.index for s in samples.head(1).skipped] == [] and list(samples.head(1)) == ["a"]
    assert [s.index for s in samples.head(2).skipped] == [1] and list(samples.head(2)) == ["a", "b"]
    assert [s.index for s in samples.head(0).skipped] == []
    assert [s.index for s in samples.head(5).skipped] == [1, 3, 4] and list(samples.head(5)) == ["a", "b", "c"]


def test_a_bad_record_raises_by_default_and_a_bad_policy_is_refused(bad_file, recipe_file, tmp_path, capsys,
                                                                      monkeypatch):
    path, ids = bad_file
    monkeypatch.setattr(evaluate, "load_model", lambda args: pytest.fail("the model must not be built"))
    argv = ["eval", "--recipe", str(recipe_file), "--data", str(path), "--out", str(tmp_path / "report.json")]
    assert main(argv) == 2
    assert f"record '{ids[1]}'" in capsys.readouterr().err
    assert main([*argv, "--set", "data.on_bad_record=bogus"]) == 2
    assert "data.on_bad_record='bogus'" in capsys.readouterr().err


def test_an_image_outside_the_image_folder_is_refused_unless_the_recipe_allows_it(shapes, recipe_file, tmp_path,
                                                                                   capsys):
    record = json.loads((shapes / "train_short.json").read_text())[0]
    record["image"] = str((shapes / record["image"]).resolve())  # an absolute path
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "outside.json"
    path.write_text(json.dumps([record]))
    argv = ["eval", "--recipe", str(recipe_file), "--data", str(path), "--images", str(tmp_path / "data"),
            "--max-new-tokens", "1", "--out", str(tmp_path / "report.json")]
    assert main(argv) == 2
    assert "image" in capsys.readouterr().err
    assert main([*argv, "--set", "data.allow_outside_images=true"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["scores"]["short"]["count"] == 1


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_an_out_it_cannot_write_is_refused_before_any_work(where, shapes, recipe_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "load_model", lambda args: pytest.fail("the model must not be built"))
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "report.json" if where == "under_a_file" else tmp_path
    assert main(["eval", "--recipe", str(recipe_file), "--data", str(shapes / "train_short.json"),
                 "--out", str(out)]) == 2
    assert f"cannot write the report to {out}" in capsys.readouterr().err


def test_a_llava_file_gets_an_official_results_file_that_vlbridge_score_reads(shapes, manifest, run_dir, tmp_path):
    # records with a VQA question id (here: the Shapes VQAv2 questions as LLaVA JSON) keep it
    files = manifest["files"]["vqav2"]
    questions, annotations = shapes / files["questions"]["train"], shapes / files["annotations"]["train"]
    samples = read_vqav2(questions, annotations, image_dir=shapes / "images", image_pattern=files["image_file_pattern"])
    data = tmp_path / "vqa_as_llava.json"
    write_llava_json(samples, data, image_root=shapes)
    out = tmp_path / "report.json"
    assert main(["eval", "--run", str(run_dir), "--data", str(data), "--images", str(shapes),
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["results_file"] == "report.results.json" and report["results_format"] == "vqa"
    answers = read_vqa_results(tmp_path / "report.results.json")
    assert answers == {s.meta["question_id"]: p["prediction"] for s, p in zip(samples, report["predictions"])}
    assert main(["score", "--task", "vqa", "--questions", str(questions), "--annotations", str(annotations),
                 "--pred", str(tmp_path / "report.results.json")]) == 0
    # Shapes short answers carry the VQAv2 layout's question ids too
    shapes_short = read_llava_json(shapes / "train_short.json")[:3]
    assert main(["eval", "--run", str(run_dir), "--data", str(shapes / "train_short.json"), "--limit", "3",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    written = json.loads((tmp_path / "report.results.json").read_text())
    assert [r["question_id"] for r in written] == [s.meta["question_id"] for s in shapes_short]
    # records without one are listed under their record ids
    no_ids = tmp_path / "no_ids.json"
    write_llava_json([replace(s, meta={k: v for k, v in s.meta.items() if k != "question_id"}) for s in shapes_short],
                     no_ids, image_root=shapes)
    assert main(["eval", "--run", str(run_dir), "--data", str(no_ids), "--images", str(shapes),
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    written = json.loads((tmp_path / "report.results.json").read_text())
    assert [r["question_id"] for r in written] == [s.id for s in shapes_short]


def test_threads_option_sets_torchs_threads(shapes, run_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["eval", "--run", str(run_dir), "--data", str(shapes / "train_short.json"), "--limit", "1",
                     "--max-new-tokens", "1", "--threads", "1", "--out", str(tmp_path / "r.json")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["train", "eval", "demo"])
def test_help_says_what_all_cores_cost_on_a_busy_machine(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--threads N" in text and "8-27 s" in text
