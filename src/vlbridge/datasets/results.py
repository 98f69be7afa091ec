"""The official result formats: captions ``[{"image_id": int, "caption": str}]`` (COCO) and answers
``[{"question_id": int, "answer": str}]`` (VQA). Readers check every record and name what is wrong."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlbridge.datasets.json_io import load_json, require
from vlbridge.errors import DataError


def _write_json(records: list[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(records, handle, ensure_ascii=False)
    os.replace(tmp, path)  # atomic: a crash never leaves half a results file


def write_caption_results(captions: Mapping[int, str], path: str | Path) -> None:
    """Write ``[{"image_id", "caption"}]`` (COCO caption result format)."""
    _write_json([{"image_id": image_id, "caption": caption} for image_id, caption in captions.items()], path)


def write_vqa_results(answers: Mapping[int, str], path: str | Path) -> None:
    """Write ``[{"question_id", "answer"}]`` (VQA result format)."""
    _write_json([{"question_id": qid, "answer": answer} for qid, answer in answers.items()], path)


def _read_results(path: str | Path, id_field: str, text_field: str) -> dict[Any, str]:
    records = load_json(path, list)
    if not records:
        raise DataError("the predictions file is empty", file=path)
    out: dict[Any, str] = {}
    for i, record in enumerate(records):
        where = f"[{i}]"
        record_id = require(record, id_field, int, file=path, where=where)
        text = require(record, text_field, str, file=path, where=f"{where} ({id_field} {record_id})")
        if record_id in out:
            raise DataError(f"{id_field} {record_id} has more than one prediction", file=path, record=where,
                            field=id_field)
        out[record_id] = text
    return out


def read_caption_results(path: str | Path) -> dict[int, str]:
    """image id -> caption from a COCO caption result file (one caption per image)."""
    return _read_results(path, "image_id", "caption")


def read_vqa_results(path: str | Path) -> dict[int, str]:
    """question id -> answer from a VQA result file."""
    return _read_results(path, "question_id", "answer")
