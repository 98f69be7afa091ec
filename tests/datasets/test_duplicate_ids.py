"""Ids carried by more than one record are found (within a file, across files, across train and val) and
reported by `vlbridge data check` as a warning; no record is lost to them."""

from __future__ import annotations

import json

from vlbridge.data.llava_json import read_llava_json
from vlbridge.datasets.duplicate_ids import describe_duplicates, find_duplicate_ids
from vlbridge_cli.main import main


def record(id_: str, answer: str = "a") -> dict:
    return {"id": id_, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": answer}]}


def write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_duplicates_within_and_across_parts(tmp_path):
    train = read_llava_json(write(tmp_path / "train.json", [record("a"), record("b"), record("a", "other"),
                                                            record("c")]))
    val = read_llava_json(write(tmp_path / "val.json", [record("c"), record("d")]))
    assert [s.id for s in train] == ["a", "b", "a", "c"]  # both "a" records are kept
    found = find_duplicate_ids({"train": train, "val": val})
    assert [(d.id, d.places) for d in found] == [
        ("a", (("train", str(tmp_path / "train.json"), 0), ("train", str(tmp_path / "train.json"), 2))),
        ("c", (("train", str(tmp_path / "train.json"), 3), ("val", str(tmp_path / "val.json"), 0)))]
    assert [d.parts for d in found] == [["train"], ["train", "val"]]
    text = describe_duplicates(found)
    assert text.startswith("2 id(s) are carried by more than one record (4 records; 1 id(s) in more than one part")
    assert f"id 'a': {tmp_path / 'train.json'}#0 (train), {tmp_path / 'train.json'}#2 (train)" in text
    assert f"id 'c': {tmp_path / 'train.json'}#3 (train), {tmp_path / 'val.json'}#0 (val)" in text


def test_unique_ids_give_nothing(tmp_path):
    samples = read_llava_json(write(tmp_path / "d.json", [record("a"), record("b")]))
    assert find_duplicate_ids({"train": samples, "val": []}) == []


def test_long_lists_are_cut(tmp_path):
    samples = read_llava_json(write(tmp_path / "d.json", [record(str(i % 7)) for i in range(7 * 6)]))
    text = describe_duplicates(find_duplicate_ids({"train": samples}), shown=5)
    assert text.count("\n  id ") == 5 and text.endswith("and 2 more id(s)") and "and 2 more\n" in text


def test_data_check_warns_about_duplicates_within_and_across_files(tmp_path, capsys):
    train = write(tmp_path / "train.json", [record("a"), record("a"), record("b")])
    val = write(tmp_path / "val.json", [record("b"), record("v")])
    assert main(["data", "check", str(train), str(val)]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert "train.json: 3 valid records, 0 bad" in out and "val.json: 2 valid records, 0 bad" in out
    assert "warning: 2 id(s) are carried by more than one record (4 records; 1 id(s) in more than one part" in out
    assert f"id 'a': {train}#0, {train}#1" in out and f"id 'b': {train}#2, {val}#0" in out
    assert main(["data", "check", str(val)]) == 0
    assert "warning" not in capsys.readouterr().out
