"""Fuzzing LLaVA JSON records and bad-record skipping: every record is read, or reported as skipped with an error
naming its file and record; nothing else is raised, and no record disappears unreported.

The records' validity comes from an oracle written here from the format's rules (docs/data.md, llava_json's
docstring), independently of the reader: ids (shared ids included), single images and clips, image paths inside or
outside the image folder (with and without ``allow_outside_images``), files that load or not, clip frames of one
size, turns, roles, placeholders, meta.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from fuzz_profiles import FUZZ
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.errors import DataError, VLBridgeError
from vlbridge.train.guards import BadRecords

IDS = st.one_of(st.sampled_from(["a", "b", "dup", "dup", "ünï", " x "]), st.text(min_size=1, max_size=6))
TEXT = st.one_of(st.sampled_from(["What is it?", "A cat.", "é中🙂", "x\ny"]), st.text(min_size=1, max_size=10))
JUNK = st.one_of(st.integers(), st.floats(), st.none(), st.booleans(), st.sampled_from(["", " ", "\t"]),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """An image folder, and every path a record may give: name -> (pixel size or None if it cannot load, inside?)."""
    base = tmp_path_factory.mktemp("fuzz_records")
    root = base / "images"
    (root / "sub").mkdir(parents=True)
    (root / "a_folder").mkdir()

    def save(path, size, seed):
        values = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(values).save(path)

    save(root / "a.png", (6, 5), 0)
    save(root / "b.png", (6, 5), 1)
    save(root / "c.png", (7, 7), 2)
    save(base / "outside.png", (6, 5), 3)
    data = (root / "a.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    paths = {
        "a.png": ((6, 5), True), "b.png": ((6, 5), True), "c.png": ((7, 7), True), "sub/../a.png": ((6, 5), True),
        "./b.png": ((6, 5), True), "truncated.png": (None, True), "empty.png": (None, True),
        "missing.png": (None, True), "a_folder": (None, True),
        "../outside.png": ((6, 5), False), "sub/../../outside.png": ((6, 5), False),
        str(base / "outside.png"): ((6, 5), False), "/etc/passwd": (None, False), "/no/such/file.png": (None, False),
    }
    return root, paths


@st.composite
def records(draw, names: list[str]):
    """A LLaVA record, valid or not: an image, a clip or none, 1-2 exchanges, then 0-2 hostile changes."""
    if draw(st.integers(0, 24)) == 0:
        return draw(JUNK)
    texts = [draw(TEXT.filter(lambda t: t.strip() and IMAGE_PLACEHOLDER not in t))
             for _ in range(2 * draw(st.integers(1, 2)))]
    turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]
    record = {"id": draw(IDS), "conversations": turns}
    shown = draw(st.sampled_from(["none", "image", "clip"]))
    if shown != "none":
        record["image"] = draw(st.sampled_from(names)) if shown == "image" else draw(
            st.lists(st.sampled_from(names), min_size=1, max_size=3))
        turns[0]["value"] = IMAGE_PLACEHOLDER + "\n" + turns[0]["value"]
    if draw(st.booleans()):
        record["meta"] = {"task": "short"}
    for change in draw(st.lists(st.sampled_from(CHANGES), max_size=2)):
        event(f"change: {change}")
        apply(change, record, draw)
    return record


CHANGES = ["id", "drop id", "image junk", "frame junk", "empty clip", "video", "conversations junk", "turn junk",
           "role", "value junk", "placeholder twice", "placeholder moved", "drop placeholder", "meta junk", "nul path"]


def apply(change: str, record: dict, draw) -> None:
    turns = record["conversations"]
    turn = draw(st.integers(0, len(turns) - 1)) if isinstance(turns, list) and turns else None
    if change == "id":
        record["id"] = draw(JUNK)
    elif change == "drop id":
        record.pop("id", None)
    elif change == "image junk":
        record["image"] = draw(JUNK)
    elif change == "frame junk" and isinstance(record.get("image"), list) and record["image"]:
        record["image"][draw(st.integers(0, len(record["image"]) - 1))] = draw(JUNK)
    elif change == "empty clip":
        record["image"] = []
    elif change == "video":
        record["video"] = "clip.mp4"
    elif change == "conversations junk":
        record["conversations"] = draw(st.one_of(JUNK, st.just([])))
    elif change == "turn junk" and turn is not None and isinstance(turns[turn], dict):
        turns[turn] = draw(JUNK)
    elif change == "role" and turn is not None and isinstance(turns[turn], dict):
        turns[turn]["from"] = draw(st.one_of(st.sampled_from(["human", "gpt", "system", "user"]), JUNK))
    elif change == "value junk" and turn is not None and isinstance(turns[turn], dict):
        turns[turn]["value"] = draw(JUNK)
    elif change == "placeholder twice" and turn is not None and isinstance(turns[turn], dict) \
            and isinstance(turns[turn].get("value"), str):
        turns[turn]["value"] += IMAGE_PLACEHOLDER
    elif change == "placeholder moved" and isinstance(turns, list) and len(turns) > 2 \
            and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        turns[0]["value"] = turns[0]["value"].replace(IMAGE_PLACEHOLDER, "")
        turns[2]["value"] = IMAGE_PLACEHOLDER + turns[2]["value"]
    elif change == "drop placeholder" and isinstance(turns, list) and turns and isinstance(turns[0], dict) \
            and isinstance(turns[0].get("value"), str):
        turns[0]["value"] = turns[0]["value"].replace(IMAGE_PLACEHOLDER, "") or "?"
    elif change == "meta junk":
        record["meta"] = draw(JUNK)
    elif change == "nul path":
        record["image"] = "a\0.png"


def oracle(record, paths: dict, allow_outside: bool) -> bool:
    """True if the record is valid by the format's rules and every image it shows loads (frames of one size)."""
    if not isinstance(record, dict) or "video" in record:
        return False
    if not (isinstance(record.get("id"), str) and record["id"].strip()):
        return False
    image = record.get("image")
    if image is None:
        files = []
    elif isinstance(image, str):
        files = [image]
    elif isinstance(image, list) and image:
        files = image
    else:
        return False
    if not all(isinstance(f, str) and f.strip() for f in files):
        return False
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return False
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") != ("human" if position % 2 == 0 else "gpt"):
            return False
        if not isinstance(turn.get("value"), str) or not turn["value"].strip():
            return False
    counts = [turn["value"].count(IMAGE_PLACEHOLDER) for turn in turns]
    if sum(counts) != (1 if files else 0) or (files and counts[0] != 1):
        return False
    if not isinstance(record.get("meta", {}), dict):
        return False
    sizes = []
    for f in files:
        size, inside = paths.get(f, (None, True))
        if size is None or (not inside and not allow_outside):
            return False
        sizes.append(size)
    return len(set(sizes)) <= 1  # a clip's frames are all of one size


def named(record, index: int) -> str:
    usable = record.get("id") if isinstance(record, dict) else None
    return repr(usable) if isinstance(usable, str) and usable.strip() else repr(f"#{index}")


@FUZZ
@given(data=st.data())
def test_every_record_is_read_or_reported_never_dropped_silently(pool, tmp_path, data):
    root, paths = pool
    allow = data.draw(st.booleans())
    batch = data.draw(st.lists(records(sorted(paths)), min_size=1, max_size=8))
    file = tmp_path / f"data_{os.getpid()}.json"
    file.write_text(json.dumps(batch, ensure_ascii=True))  # lone surrogates travel as \ud800 escapes
    valid = [oracle(r, paths, allow) for r in batch]
    event(f"records valid: {'all' if all(valid) else 'some' if any(valid) else 'none'}")
    shown = [f for r in batch if isinstance(r, dict) for f in (r.get("image") if isinstance(r.get("image"), list)
                                                               else [r.get("image")])]
    if any(isinstance(f, str) and f in paths and not paths[f][1] for f in shown):
        event(f"an image path outside the folder, allow_outside_images={allow}")
    try:
        kept = read_llava_json(file, image_root=root, check_images=True, on_error="skip", allow_outside_images=allow)
    except VLBridgeError as error:  # a named error for the whole file is not expected: every record is a list item
        raise AssertionError(f"the file was refused instead of its bad records: {error}") from error
    # no silent drop, no bad record kept: each position is either read or reported
    assert [s.position for s in kept] == [i for i, ok in enumerate(valid) if ok]
    assert [s.index for s in kept.skipped] == [i for i, ok in enumerate(valid) if not ok]
    assert [s.id for s in kept] == [r["id"] for r, ok in zip(batch, valid) if ok]
    for s in kept.skipped:
        assert s.file == str(file) and str(file) in s.message
        assert f"record {named(batch[s.index], s.index)}" in s.message
    if not all(valid):
        first = valid.index(False)
        with pytest.raises(DataError, match=f"record {re.escape(named(batch[first], first))}"):
            read_llava_json(file, image_root=root, check_images=True, allow_outside_images=allow)


def collate(samples):
    """Fails like the real collators on the first bad sample: naming it by id, with or without its file."""
    for s in samples:
        if s.meta["bad"]:
            raise DataError("bad", file=s.source if s.meta["names_file"] else None, record=s.id, field="image")
    return [(s.source, s.position) for s in samples]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "dup"]), st.sampled_from(["train.json", "val.json"]),
                          st.booleans(), st.booleans()), min_size=1, max_size=12))
def test_skipping_leaves_out_exactly_the_bad_records_whatever_their_ids(rows):
    positions: dict[str, int] = {}
    samples = []
    for id_, file, bad, names_file in rows:
        positions[file] = positions.get(file, -1) + 1
        samples.append(Sample(id_, (Turn("user", "q"), Turn("assistant", "a")), source=file,
                              position=positions[file], meta={"bad": bad, "names_file": names_file}))
    guard = BadRecords("skip")
    batch, kept = guard.keep_going(collate, samples, "step 1")
    good = [(s.source, s.position) for s in samples if not s.meta["bad"]]
    event(f"bad records: {'none' if len(good) == len(samples) else 'all' if not good else 'some'}")
    event(f"ids shared: {len({s.id for s in samples}) < len(samples)}")
    assert (batch or []) == good and [(s.source, s.position) for s in kept] == good
    # each bad record once (in the order met, which need not be the batch's)
    assert sorted((e["file"], e["position"], e["id"]) for e in guard.entries) == sorted(
        (s.source, s.position, s.id) for s in samples if s.meta["bad"])
