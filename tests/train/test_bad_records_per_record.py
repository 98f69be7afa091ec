"""Under data.on_bad_record=skip a record is told apart by its file and position, never by its id alone: a good
record that shares its id with a bad one is kept, and every record left out is reported once, with file,
position, id and reason."""

from __future__ import annotations

import json
import shutil

import pytest

from vlbridge.build import build_model
from vlbridge.data.llava_json import SkippedRecord
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError
from vlbridge.train.guards import BadRecords
from vlbridge.train.trainer import train


def sample(id_: str, position: int, file: str = "train.json", bad: bool = False) -> Sample:
    return Sample(id_, (Turn("user", "q"), Turn("assistant", "a")), source=file, position=position, meta={"bad": bad})


def collate(samples):
    """A collator that fails on bad samples the way the real ones do: naming the record by id and file."""
    for s in samples:
        if s.meta["bad"]:
            raise DataError("cannot read image", file=s.source, record=s.id, field="image")
    return [(s.source, s.position) for s in samples]


def places(bad: BadRecords) -> list[tuple]:
    return [(e["file"], e["position"], e["id"]) for e in bad.entries]


def test_a_good_record_sharing_its_id_with_a_bad_one_is_kept():
    bad = BadRecords("skip")
    batch, kept = bad.keep_going(collate, [sample("a", 0), sample("b", 1), sample("a", 2, bad=True)], "step 1")
    assert batch == [("train.json", 0), ("train.json", 1)]
    assert [s.position for s in kept] == [0, 1]
    assert places(bad) == [("train.json", 2, "a")]
    assert bad.entries[0]["stage"] == "step 1" and "cannot read image" in bad.entries[0]["reason"]


def test_bad_records_sharing_an_id_are_each_reported():
    bad = BadRecords("skip")
    batch, _ = bad.keep_going(collate, [sample("a", 0, bad=True), sample("a", 1, bad=True), sample("b", 2)], "step 1")
    assert batch == [("train.json", 2)]
    assert places(bad) == [("train.json", 0, "a"), ("train.json", 1, "a")]
    assert bad.summary().startswith("skipped 2 bad record(s) (data.on_bad_record=skip):")
    assert "train.json position 0, id 'a' (step 1): " in bad.summary()
    assert "train.json position 1, id 'a' (step 1): " in bad.summary()


def test_the_same_id_in_train_and_val_are_two_records():
    bad = BadRecords("skip")
    bad.keep_going(collate, [sample("a", 3, "train.json", bad=True), sample("a", 3, "val.json")], "encoding images")
    bad.keep_going(collate, [sample("a", 3, "val.json", bad=True)], "validation")
    assert places(bad) == [("train.json", 3, "a"), ("val.json", 3, "a")]


def test_an_error_that_names_no_file_is_traced_to_the_failing_record():
    def collate_without_file(samples):
        for s in samples:
            if s.meta["bad"]:
                raise DataError("truncated", record=s.id)
        return [s.position for s in samples]

    bad = BadRecords("skip")
    batch, _ = bad.keep_going(collate_without_file, [sample("a", 0, bad=True), sample("a", 1), sample("a", 2)], "s")
    assert batch == [1, 2] and places(bad) == [("train.json", 0, "a")]


def test_records_skipped_on_read_are_kept_apart_by_file_and_position():
    bad = BadRecords("skip")
    bad.add_skipped_on_read("train", [SkippedRecord(0, "a", "bad 1", file="t1.json"),
                                      SkippedRecord(0, "a", "bad 2", file="t2.json"),
                                      SkippedRecord(4, None, "no id", file="t1.json")])
    bad.add_skipped_on_read("val", [SkippedRecord(7, "p", "bad", file="problems.json", position="val[7]")])
    assert places(bad) == [("t1.json", 0, "a"), ("t2.json", 0, "a"), ("t1.json", 4, None),
                           ("problems.json", "val[7]", "p")]
    assert [e["stage"] for e in bad.entries] == ["read train"] * 3 + ["read val"]


def test_the_same_record_met_twice_is_reported_once_and_state_round_trips():
    bad = BadRecords("skip")
    for _ in range(2):
        bad.keep_going(collate, [sample("a", 5, bad=True)], "step 1")
    assert len(bad.entries) == 1
    again = BadRecords("skip")
    again.load_state_dict(json.loads(json.dumps(bad.state_dict())))  # through a checkpoint's JSON
    assert again.entries == bad.entries
    again.keep_going(collate, [sample("a", 5, bad=True), sample("a", 6, bad=True)], "step 2")
    assert places(again) == [("train.json", 5, "a"), ("train.json", 6, "a")]


def test_entries_of_an_older_checkpoint_still_load():
    bad = BadRecords("skip")
    bad.load_state_dict([{"record": "x", "stage": "step 3", "message": "broken"}])
    assert bad.entries == [{"record": "x", "file": None, "position": None, "id": "x", "stage": "step 3",
                            "reason": "broken"}]


def test_raise_policy_still_raises_on_the_first_bad_record():
    with pytest.raises(DataError, match="record 'a'"):
        BadRecords("raise").keep_going(collate, [sample("a", 0), sample("a", 1, bad=True)], "step 1")


@pytest.fixture
def shared_ids(tmp_path, shapes_dir):
    """train.json: 4 records, the 2nd and 4th both id "dup", the 4th with a truncated image; val.json: 2 records, one
    of them id "dup" too."""
    records = json.loads((shapes_dir / "train_short.json").read_text())[:4]
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images", images)
    (images / "broken.png").write_bytes((images / records[0]["image"].split("/", 1)[1]).read_bytes()[:100])
    records[1]["id"] = records[3]["id"] = "dup"
    records[3]["image"] = "images/broken.png"
    (tmp_path / "train.json").write_text(json.dumps(records))
    (tmp_path / "val.json").write_text(json.dumps(records[:2]))
    return tmp_path, [r["id"] for r in records]


def test_training_keeps_the_good_record_of_a_shared_id_and_warns_about_duplicates(shared_ids, make_recipe):
    folder, ids = shared_ids
    recipe = make_recipe(f"data.train={folder / 'train.json'}", f"data.val={folder / 'val.json'}",
                         f"data.image_root={folder}", "data.on_bad_record=skip", "train.steps=1",
                         "train.batch_size=4", "train.eval_samples=0")
    built = build_model(recipe.model)
    seen: list[list[str]] = []
    built.model.register_forward_hook(lambda module, args, output: seen.append(list(args[0].sample_ids)))
    messages: list[str] = []
    result = train(recipe, built=built, log=messages.append)
    assert sorted(seen[0]) == sorted(ids[:3])  # the one step's batch: the good "dup" is in it, the bad one is not
    assert [(e["file"], e["position"], e["id"]) for e in result["skipped_records"]] == [
        (str(folder / "train.json"), 3, "dup")]
    assert "cannot read image" in result["skipped_records"][0]["reason"]
    warning = next(m for m in messages if m.startswith("warning: "))
    assert "more than one record" in warning and "id 'dup'" in warning
    assert f"{folder / 'train.json'}#1 (train)" in warning and f"{folder / 'val.json'}#1 (val)" in warning
    assert "both train and val" in warning
