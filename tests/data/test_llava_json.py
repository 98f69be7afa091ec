"""LLaVA JSON: valid files become Samples; every malformed record is named; write/read round-trips."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from vlbridge.data.llava_json import read_llava_json, write_llava_json
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError


def record(rid="r1", image="img/a.png", first="<image>\nWhat is it?", answer="A cat.", **extra):
    out = {"id": rid, "conversations": [{"from": "human", "value": first}, {"from": "gpt", "value": answer}]}
    if image is not None:
        out["image"] = image
    out.update(extra)
    return out


def dump(tmp_path: Path, data, name="data.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_reads_samples_with_roles_images_and_meta(tmp_path):
    records = [
        record(meta={"task": "short", "answers": ["cat"] * 10}),
        {"id": "r2", "conversations": [
            {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
            {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye"}]},
        {"id": "r3", "image": "b.png", "conversations": [{"from": "human", "value": "Caption: <image>"}]},
    ]
    path = dump(tmp_path, records)
    samples = read_llava_json(path)
    assert [s.id for s in samples] == ["r1", "r2", "r3"] and samples.skipped == []
    first = samples[0]
    assert first.turns == (Turn("user", "<image>\nWhat is it?"), Turn("assistant", "A cat."))
    assert first.image == tmp_path / "img/a.png"  # relative to the file's folder by default
    assert first.meta == {"task": "short", "answers": ["cat"] * 10}
    assert first.source == str(path) and first.answer == "A cat."
    assert samples[1].image is None and len(samples[1].turns) == 4 and samples[1].meta == {}
    assert samples[2].answer is None  # prompt-only sample (ends with a human turn)
    assert read_llava_json(path, image_root="/data/imgs")[0].image == Path("/data/imgs/img/a.png")


BAD_RECORDS = [
    ("not an object", ["just a string"], "#0", None, "must be a JSON object"),
    ("missing id", [{"conversations": []}], "#0", "id", "missing"),
    ("non-string id", [record(rid=17)], "#0", "id", "non-empty string"),
    ("empty id", [record(rid="  ")], "#0", "id", "non-empty string"),
    ("missing conversations", [{"id": "x", "image": "a.png"}], "x", "conversations", "missing"),
    ("conversations not a list", [{"id": "x", "conversations": "hi"}], "x", "conversations", "non-empty list"),
    ("empty conversations", [{"id": "x", "conversations": []}], "x", "conversations", "non-empty list"),
    ("turn not an object", [{"id": "x", "conversations": ["hi"]}], "x", "conversations[0]", "must be an object"),
    ("wrong role name", [{"id": "x", "conversations": [{"from": "user", "value": "hi"}]}],
     "x", "conversations[0].from", "role must be one of"),
    ("starts with gpt", [{"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}],
     "x", "conversations[0].from", "alternate"),
    ("two humans in a row", [{"id": "x", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}],
     "x", "conversations[1].from", "alternate"),
    ("empty value", [record(rid="x", answer="   ")], "x", "conversations[1].value", "empty"),
    ("non-string value", [record(rid="x", answer=42)], "x", "conversations[1].value", "must be a string"),
    ("missing value", [{"id": "x", "conversations": [{"from": "human"}]}], "x", "conversations[0].value", "string"),
    ("image but no placeholder", [record(rid="x", first="What is it?")], "x", "conversations[0].value", "no <image>"),
    ("placeholder but no image", [record(rid="x", image=None)], "x", "conversations", "no image"),
    ("two placeholders", [record(rid="x", first="<image> and <image>")], "x", "conversations", "2 times"),
    ("placeholder in a later turn", [{"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "<image>"}]}],
     "x", "conversations[2].value", "first human turn"),
    ("placeholder in an answer", [record(rid="x", answer="<image>")], "x", "conversations", "2 times"),
    ("image not a string", [record(rid="x", image=5)], "x", "image", "non-empty string"),
    ("meta not an object", [record(rid="x", meta=[1])], "x", "meta", "must be an object"),
]


@pytest.mark.parametrize("case, data, rec, field, message", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
def test_bad_record_raises_naming_file_record_and_field(tmp_path, case, data, rec, field, message):
    path = dump(tmp_path, data)
    with pytest.raises(DataError) as error:
        read_llava_json(path)
    assert message in str(error.value)
    assert error.value.file == path and error.value.record == rec and error.value.field == field
    assert str(path) in str(error.value) and repr(rec) in str(error.value)


def test_bad_record_index_is_used_when_the_id_is_unusable(tmp_path):
    path = dump(tmp_path, [record(rid="ok"), record(rid=None)])
    with pytest.raises(DataError, match="record '#1'"):
        read_llava_json(path)


@pytest.mark.parametrize("content, message", [
    ('{"id": "x"}', "must hold a list"),
    ("[1, 2", "invalid JSON at line 1"),
])
def test_bad_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_llava_json(path)


def test_missing_and_non_utf8_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_llava_json(tmp_path / "none.json")
    (tmp_path / "latin1.json").write_bytes('[{"id": "caf\xe9"}]'.encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        read_llava_json(tmp_path / "latin1.json")


def test_skip_policy_reports_every_skipped_record(tmp_path, caplog):
    data = [record(rid="good1"), record(rid="bad", answer=""), 7, record(rid="good2"), record(rid=3)]
    path = dump(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        samples = read_llava_json(path, on_error="skip")
    assert [s.id for s in samples] == ["good1", "good2"]
    assert [(s.index, s.id) for s in samples.skipped] == [(1, "bad"), (2, None), (4, None)]
    assert "empty" in samples.skipped[0].message and "#4" in samples.skipped[2].message
    assert "skipped 3 of 5 records" in caplog.text
    with pytest.raises(DataError):
        read_llava_json(path)  # default: raise
    with pytest.raises(DataError, match="on_error"):
        read_llava_json(path, on_error="ignore")


def test_check_images(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    path = dump(tmp_path, [record(rid="a", image="ok.png"), record(rid="b", image="missing.png"),
                           record(rid="c", image="broken.png"), record(rid="d", image=None, first="text only")])
    assert len(read_llava_json(path)) == 4  # images not opened by default
    with pytest.raises(DataError) as error:
        read_llava_json(path, check_images=True)
    assert "missing.png" in str(error.value) and "'b'" in str(error.value) and str(path) in str(error.value)
    samples = read_llava_json(path, check_images=True, on_error="skip")
    assert [s.id for s in samples] == ["a", "d"] and [s.id for s in samples.skipped] == ["b", "c"]


def test_write_read_round_trip_is_lossless(tmp_path):
    root = tmp_path / "root"
    samples = [
        Sample("s1", (Turn("user", "<image>\nQuestion: Which?\nOptions: (A) x (B) y"), Turn("assistant", "B")),
               image=root / "images" / "a.png",
               meta={"task": "mc", "answers": ["B"], "choices": ["x", "y"], "answer_index": 1, "local": True}),
        Sample("s2", (Turn("user", "Ünïcödé text"), Turn("assistant", "ok"), Turn("user", "more"),
                      Turn("assistant", "done"))),
        Sample("s3", (Turn("user", "describe <image>"),), image=root / "b.png"),
    ]
    out = tmp_path / "out" / "train.json"
    write_llava_json(samples, out, image_root=root)
    raw = json.loads(out.read_text(encoding="utf-8"))
    assert raw[0]["image"] == "images/a.png" and "meta" not in raw[1]
    assert raw[0]["conversations"][1] == {"from": "gpt", "value": "B"}
    back = read_llava_json(out, image_root=root)
    for original, read in zip(samples, back, strict=True):
        assert (read.id, read.turns, read.image, read.meta) == (original.id, original.turns, original.image,
                                                                original.meta)
    first_bytes = out.read_bytes()
    write_llava_json(back, out, image_root=root)  # deterministic: same samples, same bytes
    assert out.read_bytes() == first_bytes


def test_writer_refuses_invalid_samples(tmp_path):
    with pytest.raises(DataError, match="not inside image_root"):
        write_llava_json([Sample("a", (Turn("user", "<image>"),), image=Path("/elsewhere/a.png"))],
                         tmp_path / "x.json", image_root=tmp_path)
    with pytest.raises(DataError, match="no <image> placeholder"):
        write_llava_json([Sample("a", (Turn("user", "hi"),), image=tmp_path / "a.png")],
                         tmp_path / "x.json", image_root=tmp_path)
    with pytest.raises(DataError, match="alternate"):
        write_llava_json([Sample("a", (Turn("user", "hi"), Turn("user", "again")))], tmp_path / "x.json",
                         image_root=tmp_path)
    assert not (tmp_path / "x.json").exists()
