"""Hostile input, property-based: every record or image is loaded correctly or rejected with an error
naming it; ``on_error="skip"`` leaves out exactly the bad records and lists them.

The records' validity comes from an oracle written here from the format's rules (llava_json's docstring),
independently of the reader: ids, image paths, turns and roles, values, ``<image>`` placeholders, meta.
"""

from __future__ import annotations

import io
import json
import re
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from png_bytes import png_claiming

from vlbridge.data.images import load_image
from vlbridge.data.llava_json import parse_record, read_llava_json
from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.errors import DataError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- images ----------------------------------------------------------------------------------------
def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def pictures(draw):
    """(PIL image, format) of a random small size and mode."""
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "LA", "I;16", "1"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("RGB", "L") else "PNG"
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(values, "RGBA").convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
    return image, fmt


@st.composite
def image_files(draw):
    """(bytes, what they are) with ``what`` in good | truncated | corrupt | empty | zero_size | huge | garbage."""
    kind = draw(st.sampled_from(["good"] * 3 + ["truncated", "corrupt", "empty", "zero_size", "huge", "garbage"]))
    image, fmt = draw(pictures())
    data = encode(image, fmt)
    if kind == "truncated":
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif kind == "corrupt":
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1:]
    elif kind == "empty":
        data = b""
    elif kind == "zero_size":
        data = png_claiming(*draw(st.sampled_from([(0, 7), (7, 0), (0, 0)])))
    elif kind == "huge":
        data = png_claiming(draw(st.integers(20_000, 2**31 - 1)), draw(st.integers(20_000, 2**31 - 1)))
    elif kind == "garbage":
        data = draw(st.binary(min_size=1, max_size=200))
    return data, kind, image, fmt


def expected_rgb(image: Image.Image) -> np.ndarray:
    """What a viewer shows: transparency on white, 16-bit grey scaled to 8 bits."""
    if image.mode == "I;16":
        grey = np.rint(np.asarray(image, dtype=np.float64) * 255 / 65535).astype(np.uint8)
        return np.stack([grey] * 3, -1)
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


@FAST
@given(image_files())
def test_every_image_loads_correctly_or_is_rejected_naming_record_and_file(tmp_path, case):
    data, kind, image, fmt = case
    event(kind)
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data)
    try:
        loaded = load_image(path, record="rec-7", source="train.json")
    except DataError as error:  # never a PIL, zlib or numpy exception
        assert kind != "good", error
        assert "record 'rec-7'" in str(error) and str(path) in str(error) and "train.json" in str(error)
        return
    assert kind in ("good", "truncated", "corrupt", "garbage"), f"{kind} image was accepted"
    assert loaded.mode == "RGB" and loaded.width > 0 and loaded.height > 0
    if kind in ("good", "truncated"):  # a truncated file may only load when nothing of the picture is lost
        assert loaded.size == image.size
        if fmt == "PNG":
            assert np.array_equal(np.asarray(loaded), expected_rgb(image))
        elif kind == "truncated":
            whole = Image.open(io.BytesIO(encode(image, fmt))).convert("RGB")
            assert np.array_equal(np.asarray(loaded), np.asarray(whole))


# --- records ---------------------------------------------------------------------------------------
ANY_TEXT = st.text(st.characters(exclude_categories=()), min_size=1, max_size=12)  # any code point, lone surrogates too
WORDS = st.text(string.ascii_letters + " éß中文🙂\u202e\n", min_size=1, max_size=12)


_NOT_A_LIST = st.one_of(st.integers(), st.floats(allow_nan=False), st.none(), st.booleans(), st.text(max_size=4),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
JSON_JUNK = st.one_of(_NOT_A_LIST, st.lists(st.integers(), max_size=2))


@st.composite
def valid_records(draw, images: list[str]):
    """A record that follows every rule: unicode id and texts, 1-3 exchanges, an image or none."""
    exchanges = draw(st.integers(1, 3))
    texts = [draw(st.one_of(WORDS, ANY_TEXT.filter(lambda t: t.strip() and IMAGE_PLACEHOLDER not in t)))
             for _ in range(2 * exchanges)]
    conversation = [{"from": "human" if i % 2 == 0 else "gpt", "value": text} for i, text in enumerate(texts)]
    record = {"id": draw(st.one_of(WORDS, ANY_TEXT.filter(str.strip))), "conversations": conversation}
    if draw(st.booleans()):
        record["image"] = draw(st.sampled_from(images))
        where = draw(st.sampled_from(["start", "end", "middle"]))
        first = conversation[0]["value"]
        conversation[0]["value"] = {"start": IMAGE_PLACEHOLDER + "\n" + first, "end": first + IMAGE_PLACEHOLDER,
                                    "middle": first[:1] + IMAGE_PLACEHOLDER + first[1:]}[where]
    if draw(st.booleans()):
        record["meta"] = {"task": "short", "answers": draw(st.lists(WORDS, max_size=3))}
    return record


def _turn(draw, record) -> tuple[list, int]:
    conversation = record["conversations"]
    return conversation, draw(st.integers(0, len(conversation) - 1))


MUTATIONS = {
    "drop id": lambda draw, r: r.pop("id"),
    "bad id": lambda draw, r: r.update(id=draw(st.one_of(st.sampled_from(["", " \t"]), JSON_JUNK))),
    "bad image": lambda draw, r: r.update(image=draw(st.one_of(st.sampled_from(["", " "]), JSON_JUNK))),
    "other image": lambda draw, r: r.update(image=draw(st.sampled_from(sorted(_IMAGE_NAMES)))),
    "drop image": lambda draw, r: r.pop("image", None),
    "drop conversations": lambda draw, r: r.pop("conversations"),
    "bad conversations": lambda draw, r: r.update(conversations=draw(st.one_of(st.just([]), _NOT_A_LIST))),
    "junk turn": lambda draw, r: (lambda c, i: c.__setitem__(i, draw(JSON_JUNK)))(*_turn(draw, r)),
    "bad role": lambda draw, r: (lambda c, i: c[i].update({"from": draw(st.one_of(
        st.sampled_from(["human", "gpt", "system", "user", ""]), JSON_JUNK))}))(*_turn(draw, r)),
    "drop value": lambda draw, r: (lambda c, i: c[i].pop("value"))(*_turn(draw, r)),
    "bad value": lambda draw, r: (lambda c, i: c[i].update(value=draw(st.one_of(
        st.sampled_from(["", " ", "\n\t"]), JSON_JUNK))))(*_turn(draw, r)),
    "empty answer": lambda draw, r: r["conversations"][-1].update(value=""),
    "more placeholders": lambda draw, r: (lambda c, i: c[i].update(
        value=c[i]["value"] + IMAGE_PLACEHOLDER * draw(st.integers(1, 2))))(*_turn(draw, r)),
    "no placeholder": lambda draw, r: r["conversations"][0].update(
        value=r["conversations"][0]["value"].replace(IMAGE_PLACEHOLDER, "")),
    "bad meta": lambda draw, r: r.update(meta=draw(JSON_JUNK)),
    "drop last turn": lambda draw, r: r["conversations"].pop(),
}
_IMAGE_NAMES: set[str] = set()


@st.composite
def records(draw, images: list[str]):
    """A valid record with 0-2 hostile mutations (applied while they still make sense), or a non-record."""
    _IMAGE_NAMES.update(images)
    if draw(st.integers(0, 19)) == 0:
        return draw(JSON_JUNK)
    record = draw(valid_records(images))
    for name in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), max_size=2)):
        try:
            MUTATIONS[name](draw, record)
        except (KeyError, IndexError, AttributeError, TypeError):
            pass  # an earlier mutation removed what this one changes
        event(f"mutation: {name}")
    return record


def oracle(record, image_ok: dict[str, bool]) -> bool:
    """True if the record is valid by the LLaVA format's rules (and its image file loads)."""
    if not isinstance(record, dict):
        return False
    if not (isinstance(record.get("id"), str) and record["id"].strip()):
        return False
    image = record.get("image")
    if image is not None and not (isinstance(image, str) and image.strip() and image_ok.get(image, False)):
        return False
    conversation = record.get("conversations")
    if not isinstance(conversation, list) or not conversation:
        return False
    for position, turn in enumerate(conversation):
        if not isinstance(turn, dict) or turn.get("from") != ("human" if position % 2 == 0 else "gpt"):
            return False
        if not isinstance(turn.get("value"), str) or not turn["value"].strip():
            return False
    counts = [turn["value"].count(IMAGE_PLACEHOLDER) for turn in conversation]
    if (image is not None and counts[0] != 1) or sum(counts) != (1 if image is not None else 0):
        return False
    return isinstance(record.get("meta", {}), dict)


@pytest.fixture(scope="module")
def image_pool(tmp_path_factory):
    """Image files of every kind, relative to a root: name -> loads?"""
    root = tmp_path_factory.mktemp("images")
    good = Image.fromarray(np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3))
    png, jpeg = encode(good, "PNG"), encode(good, "JPEG")
    files = {
        "good.png": (png, True), "good.jpg": (jpeg, True), "sub dir/ünï cödé.png": (png, True),
        "truncated.png": (png[: len(png) // 2], False), "truncated.jpg": (jpeg[: len(jpeg) // 2], False),
        "empty.png": (b"", False), "zero.png": (png_claiming(0, 9), False),
        "huge.png": (png_claiming(50_000, 50_000), False), "text.jpg": (b"not an image", False),
    }
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    ok = {name: loads for name, (_, loads) in files.items()} | {"missing.png": False, "a_folder": False}
    (root / "a_folder").mkdir()
    return root, ok


def usable_id(record) -> str | None:
    if isinstance(record, dict) and isinstance(record.get("id"), str) and record["id"].strip():
        return record["id"]
    return None


def name_of(record, index: int) -> str:
    """How an error names a record: its id, or its position when the id is unusable."""
    return repr(usable_id(record)) if usable_id(record) is not None else repr(f"#{index}")


@FAST
@given(data=st.data())
def test_every_record_is_loaded_correctly_or_rejected_naming_it(image_pool, data):
    root, image_ok = image_pool
    record = data.draw(records(sorted(image_ok)))
    index = data.draw(st.integers(0, 10**6))
    event("valid" if oracle(record, image_ok) else "invalid")
    try:
        sample = parse_record(record, index=index, file="f.json", image_root=root)
        if sample.image is not None:
            load_image(sample.image, record=sample.id, source="f.json")
    except DataError as error:
        assert not oracle(record, image_ok), f"valid record rejected: {error}"
        assert f"record {name_of(record, index)}" in str(error) and "f.json" in str(error)
        return
    assert oracle(record, image_ok), f"invalid record accepted: {record!r}"
    assert sample.id == record["id"] and sample.meta == record.get("meta", {})
    assert sample.image == (root / record["image"] if record.get("image") is not None else None)  # null: text-only
    assert [(t.role, t.text) for t in sample.turns] == [
        ({"human": "user", "gpt": "assistant"}[turn["from"]], turn["value"]) for turn in record["conversations"]]


@FAST
@given(data=st.data())
def test_skip_leaves_out_exactly_the_bad_records_and_lists_them(image_pool, tmp_path, data):
    root, image_ok = image_pool
    batch = data.draw(st.lists(records(sorted(image_ok)), min_size=1, max_size=8))
    path = tmp_path / "data.json"
    path.write_text(json.dumps(batch, ensure_ascii=True))  # lone surrogates survive as \ud800 escapes
    valid = [oracle(r, image_ok) for r in batch]
    event(f"{sum(valid)} of {len(valid)} valid")
    loaded = read_llava_json(path, image_root=root, check_images=True, on_error="skip")
    assert [s.id for s in loaded] == [r["id"] for r, ok in zip(batch, valid) if ok]
    assert [s.index for s in loaded.skipped] == [i for i, ok in enumerate(valid) if not ok]
    for s in loaded.skipped:
        assert s.id == usable_id(batch[s.index])
        assert f"record {name_of(batch[s.index], s.index)}" in s.message
    if all(valid):
        assert len(read_llava_json(path, image_root=root, check_images=True)) == len(batch)
    else:
        first = valid.index(False)
        with pytest.raises(DataError, match=f"record {re.escape(name_of(batch[first], first))}"):
            read_llava_json(path, image_root=root, check_images=True)


@FAST
@given(st.one_of(_NOT_A_LIST, st.text(max_size=8),
                 st.binary(min_size=1, max_size=20)))
def test_a_file_that_is_not_a_list_of_records_is_rejected_naming_it(tmp_path, content):
    path = tmp_path / "broken.json"
    if isinstance(content, bytes):
        path.write_bytes(b"\xff" + content)  # not UTF-8
    elif isinstance(content, str):
        path.write_text(content)  # mostly not JSON
    else:
        path.write_text(json.dumps(content))
    try:
        loaded = read_llava_json(path)
    except DataError as error:
        assert str(path) in str(error)
        return
    assert isinstance(content, str) and loaded == [] and json.loads(content) == []
