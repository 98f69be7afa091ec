"""`vlbridge data shapes` and `vlbridge data check` end to end on a temporary folder."""

from __future__ import annotations

import json

import pytest

from vlbridge_cli.main import main


def test_shapes_then_check(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "shapes", "--out", str(out), "--n", "12", "--seed", "3", "--formats", "llava,vqav2"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "majority baseline" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["formats"] == ["llava", "vqav2"]
    assert (out / "vqav2").is_dir() and not (out / "coco").exists()
    assert len(list((out / "images").glob("*.png"))) == 12

    assert main(["data", "check", str(out / "train_short.json")]) == 0
    printed = capsys.readouterr().out
    assert f"{manifest['counts']['short']['train']} valid records, 0 bad" in printed


def test_check_reports_bad_records_and_missing_images(tmp_path, capsys):
    records = [
        {"id": "ok", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "no-image-file", "image": "gone.png",
         "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]},
        {"id": "bad-role", "conversations": [{"from": "bot", "value": "x"}]},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(records))
    assert main(["data", "check", str(path), "--images", str(tmp_path)]) == 1
    printed = capsys.readouterr().out
    assert "1 valid records, 2 bad" in printed and "gone.png" in printed and "'bad-role'" in printed
    assert main(["data", "check", str(path), "--no-image-check"]) == 1
    assert "2 valid records, 1 bad" in capsys.readouterr().out


def test_errors_are_reported_cleanly(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "x"), "--n", "5", "--formats", "llava,pdf"]) == 2
    assert "valid" in capsys.readouterr().err
    assert main(["data", "shapes", "--out", str(tmp_path / "x"), "--n", "2"]) == 2
    assert main(["data", "check", str(tmp_path / "missing.json")]) == 2
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "shapes", "--n", "5"])  # --out is required
