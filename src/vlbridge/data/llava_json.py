"""Read and write LLaVA conversation JSON, the de-facto format of visual instruction data.

A file is a JSON list of records::

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is in the picture?"},
                       {"from": "gpt", "value": "A cat."}],
     "meta": {...}}                      # optional, vlbridge's own: evaluation fields (see Sample)

``image`` is relative to an image folder (LLaVA's ``--image_folder``); when it is present the first
human turn holds exactly one ``<image>`` placeholder. Roles alternate human, gpt, human, ...

A **clip** (video frames in time order) is a list of image files under the same key, for the same single
``<image>`` placeholder, which stands for the whole clip::

    {"id": "clip_7", "image": ["clips/clip_7_f0.png", "clips/clip_7_f1.png", "clips/clip_7_f2.png"],
     "conversations": [{"from": "human", "value": "<image>\nWhich way did the red circle move?"},
                       {"from": "gpt", "value": "right"}]}

Image paths must stay inside the image folder: an absolute path or one climbing out with ``..`` is refused
unless the reader is told ``allow_outside_images=True`` (:mod:`vlbridge.data.image_paths`).

Any list is a clip, even of one frame (:attr:`Sample.frames`; a clip of one frame is not the same input as that
image alone: the connector adds its frame embedding). Several separate images in one record (LLaVA-OneVision's
interleaved ``<image>`` per list item) and video files (a ``video`` key) are refused, naming the record.
Every violation is a :class:`DataError` naming the file, the record (its id, or its index when the id
itself is bad) and the field (``image[i]`` for a clip's frame i). Each sample keeps its file and its 0-based
position in it (:attr:`Sample.position`), so records that share an id stay apart.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlbridge.data.clips import frame_field, load_clip
from vlbridge.data.image_paths import image_path
from vlbridge.data.images import load_image
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.errors import DataError

logger = logging.getLogger(__name__)

ROLE_FROM_LLAVA = {"human": "user", "gpt": "assistant"}
ROLE_TO_LLAVA = {user: llava for llava, user in ROLE_FROM_LLAVA.items()}
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out under ``on_error="skip"``: where it was and why."""

    index: int  # its 0-based position in the list read
    id: str | None  # None when the record had no usable id
    message: str
    file: str = ""  # the file it is in
    position: int | str | None = None  # where it is in `file` when that is not `index` (ScienceQA: "train[3]")

    @property
    def where(self) -> int | str:
        """The record's position in :attr:`file` (what, with the file, tells it apart from every other record)."""
        return self.index if self.position is None else self.position


class SampleList(list):
    """A ``list[Sample]`` that also carries the records skipped while reading (empty under "raise")."""

    def __init__(self, samples: Iterable[Sample] = (), skipped: Iterable[SkippedRecord] = ()):
        super().__init__(samples)
        self.skipped: list[SkippedRecord] = list(skipped)

    def head(self, n: int) -> "SampleList":
        """The first ``n`` samples, with the records skipped before the last of them (what reading would have
        skipped had it stopped there): ``eval --limit`` lists only the bad records within its range. Kept samples
        and skipped records share one numbering, their position in the list read."""
        if n >= len(self):
            return SampleList(self, self.skipped)
        skipped_at = {s.index for s in self.skipped}
        end, kept = 0, 0  # end: one past the read position of the n-th kept sample
        while kept < n:
            kept += end not in skipped_at
            end += 1
        return SampleList(self[:n], [s for s in self.skipped if s.index < end])


def read_llava_json(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    check_images: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    allow_outside_images: bool = False,
) -> SampleList:
    """Read a LLaVA JSON file into samples (roles mapped to "user"/"assistant").

    ``image_root`` is the folder ``image`` paths are relative to (default: the JSON file's folder).
    ``check_images=True`` also opens every image fully (slow on big sets, catches broken files early), and
    checks that a clip's frames are all the same size.
    ``on_error="skip"`` leaves bad records out and lists them in the result's ``skipped`` (and logs a
    warning); the default raises on the first bad record.
    ``allow_outside_images=True`` accepts image paths that leave ``image_root`` (absolute, or ``../``); by
    default they are bad records (:mod:`vlbridge.data.image_paths`).
    """
    path = Path(path)
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}", file=path)
    root = Path(image_root) if image_root is not None else path.parent
    records = _load_json_list(path)
    samples, skipped = [], []
    for index, record in enumerate(records):
        try:
            sample = parse_record(record, index=index, file=path, image_root=root,
                                  allow_outside_images=allow_outside_images)
            if check_images and sample.image is not None:
                load_image(sample.image, record=sample.id, source=path)
            if check_images and sample.frames:
                load_clip(sample)  # every frame decoded, and all of one size
            samples.append(sample)
        except DataError as error:
            if on_error == "raise":
                raise
            skipped.append(SkippedRecord(index=index, id=_usable_id(record), message=str(error), file=str(path)))
    if skipped:
        logger.warning("%s: skipped %d of %d records; first: %s", path, len(skipped), len(records),
                       skipped[0].message)
    return SampleList(samples, skipped)


def parse_record(record: Any, *, index: int, file: str | Path, image_root: Path,
                 allow_outside_images: bool = False) -> Sample:
    """Validate one LLaVA record (the ``index``-th of ``file``) and turn it into a :class:`Sample`."""
    name: object = _usable_id(record)
    where = {"file": file, "record": name if name is not None else f"#{index}"}
    if not isinstance(record, dict):
        raise DataError(f"record must be a JSON object, got {type(record).__name__}", **where)
    if "id" not in record:
        raise DataError("missing", field="id", **where)
    if name is None:
        raise DataError(f"id must be a non-empty string, got {record['id']!r}", field="id", **where)

    image, frames = record.get("image"), None
    if isinstance(image, list):
        frames, image = _frames(image, where), None
    elif image is not None and (not isinstance(image, str) or not image.strip()):
        raise DataError(f"image must be a non-empty string path (or a list of them: a clip's frames), got {image!r}",
                        field="image", **where)
    if "video" in record:
        raise DataError("video files are not read; give the clip's frames as a list of image files under 'image'",
                        field="video", **where)

    conversation = record.get("conversations")
    if conversation is None:
        raise DataError("missing", field="conversations", **where)
    if not isinstance(conversation, list) or not conversation:
        raise DataError("must be a non-empty list of turns", field="conversations", **where)
    turns = []
    for position, turn in enumerate(conversation):
        field = f"conversations[{position}]"
        if not isinstance(turn, dict):
            raise DataError(f"turn must be an object, got {type(turn).__name__}", field=field, **where)
        role = turn.get("from")
        if not isinstance(role, str) or role not in ROLE_FROM_LLAVA:  # a list or dict is unhashable
            raise DataError(f"role must be one of {list(ROLE_FROM_LLAVA)}, got {role!r}",
                            field=f"{field}.from", **where)
        expected = "human" if position % 2 == 0 else "gpt"
        if role != expected:
            raise DataError(f"roles must alternate starting with 'human'; expected {expected!r}, got {role!r}",
                            field=f"{field}.from", **where)
        value = turn.get("value")
        if not isinstance(value, str):
            raise DataError(f"value must be a string, got {type(value).__name__}", field=f"{field}.value", **where)
        if not value.strip():
            raise DataError("value is empty", field=f"{field}.value", **where)
        turns.append(Turn(role=ROLE_FROM_LLAVA[role], text=value))

    _check_placeholder(turns, has_image=image is not None or frames is not None, where=where,
                       clip=frames is not None)
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"meta must be an object, got {type(meta).__name__}", field="meta", **where)
    inside = {"allow_outside": allow_outside_images, **where}
    return Sample(
        id=name,
        turns=tuple(turns),
        image=image_path(image_root, image, field="image", **inside) if image is not None else None,
        source=str(file),
        meta=meta,
        frames=tuple(image_path(image_root, frame, field=frame_field(i), **inside)
                     for i, frame in enumerate(frames or ())),
        position=index,
    )


def _frames(value: list, where: dict) -> list[str]:
    """A clip's frame paths (the ``image`` list), each a non-empty string."""
    if not value:
        raise DataError("image is an empty list; a clip needs at least one frame", field="image", **where)
    for i, frame in enumerate(value):
        if not isinstance(frame, str) or not frame.strip():
            raise DataError(f"a clip's frame must be a non-empty string path, got {frame!r}", field=frame_field(i),
                            **where)
    return value


def _check_placeholder(turns: list[Turn], *, has_image: bool, where: dict, clip: bool = False) -> None:
    counts = [turn.text.count(IMAGE_PLACEHOLDER) for turn in turns]
    total = sum(counts)
    if total > 1:
        more = (" (a list under 'image' is one clip, its frames in order, shown at a single placeholder; several "
                "separate images per record are not supported)") if clip else ""
        raise DataError(f"{IMAGE_PLACEHOLDER} appears {total} times; at most one image per record{more}",
                        field="conversations", **where)
    if has_image and counts[0] != 1:
        if total == 0:
            raise DataError(f"record has an image but no {IMAGE_PLACEHOLDER} placeholder",
                            field="conversations[0].value", **where)
        raise DataError(f"{IMAGE_PLACEHOLDER} must be in the first human turn",
                        field=f"conversations[{counts.index(1)}].value", **where)
    if not has_image and total:
        raise DataError(f"{IMAGE_PLACEHOLDER} placeholder but the record has no image",
                        field="conversations", **where)


def write_llava_json(samples: Iterable[Sample], path: str | Path, image_root: str | Path) -> None:
    """Write samples as LLaVA JSON with image paths relative to ``image_root`` (a clip's frames as a list).

    ``meta`` goes under a ``"meta"`` key (omitted when empty) so :func:`read_llava_json` gives back
    equal samples. The output is deterministic (same samples -> same bytes) and written atomically.
    """
    path, image_root = Path(path), Path(image_root)
    records = []
    for sample in samples:
        where = {"file": path, "record": sample.id}
        record: dict[str, Any] = {"id": sample.id}
        if sample.image is not None:
            record["image"] = _relative(sample.image, image_root, "image", where)
        if sample.frames:
            record["image"] = [_relative(frame, image_root, frame_field(i), where)
                               for i, frame in enumerate(sample.frames)]
        conversation = []
        for turn in sample.turns:
            if turn.role not in ROLE_TO_LLAVA:
                raise DataError(f"role must be 'user' or 'assistant', got {turn.role!r}", field="turns", **where)
            conversation.append({"from": ROLE_TO_LLAVA[turn.role], "value": turn.text})
        record["conversations"] = conversation
        if sample.meta:
            record["meta"] = sample.meta
        # Validate what we are about to write with the reader's own rules.
        parse_record(record, index=len(records), file=path, image_root=image_root)
        records.append(record)
    # One record per line: still one JSON list, but greppable, diffable and fast to write.
    lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    write_text_atomic(f"[\n{lines}\n]\n" if records else "[]\n", path)


def _relative(image: Path, image_root: Path, field: str, where: dict) -> str:
    try:
        return Path(image).relative_to(image_root).as_posix()
    except ValueError:
        raise DataError(f"image {image} is not inside image_root {image_root}", field=field, **where) from None


def write_json_atomic(data: Any, path: str | Path, *, indent: int | None = None) -> None:
    """Dump ``data`` as UTF-8 JSON to ``path`` atomically (``indent=None``: one line, fast C encoder)."""
    write_text_atomic(json.dumps(data, ensure_ascii=False, indent=indent) + "\n", path)


def write_text_atomic(text: str, path: str | Path) -> None:
    """Write ``text`` via a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _load_json_list(path: Path) -> list:
    if not path.is_file():
        raise DataError("file not found", file=path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text ({error})", file=path) from error
    except json.JSONDecodeError as error:
        raise DataError(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}", file=path) from error
    if not isinstance(data, list):
        raise DataError(f"a LLaVA JSON file must hold a list of records, got {type(data).__name__}", file=path)
    return data


def _usable_id(record: Any) -> str | None:
    value = record.get("id") if isinstance(record, dict) else None
    return value if isinstance(value, str) and value.strip() else None
