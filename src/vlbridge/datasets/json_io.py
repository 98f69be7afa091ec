"""Loading JSON with errors that name the file, the record and the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlbridge.errors import DataError


def load_json(path: str | Path, expect: type = dict) -> Any:
    """Parse a JSON file whose top level must be ``expect`` (dict or list)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})", file=path) from None
    if not isinstance(data, expect):
        raise DataError(f"top level must be a JSON {'object' if expect is dict else 'array'}, "
                        f"found {type(data).__name__}", file=path)
    return data


def require(record: Any, field: str, kind: type | tuple[type, ...], *, file: object, where: object) -> Any:
    """``record[field]``, checked to exist and to be of type ``kind`` (bool never counts as int)."""
    if not isinstance(record, Mapping):
        raise DataError(f"record must be a JSON object, found {type(record).__name__}", file=file, record=where)
    if field not in record:
        raise DataError("missing field", file=file, record=where, field=field)
    value = record[field]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"must be {names}, found {type(value).__name__} {value!r:.60}", file=file, record=where,
                        field=field)
    return value
