"""Errors that name exactly what is wrong: the file, the record and the field."""

from __future__ import annotations


class VLBridgeError(Exception):
    """Base class of every error vlbridge raises on purpose."""


class DataError(VLBridgeError, ValueError):
    """A data file, record or field is missing or malformed.

    The message always starts with where the problem is (``file``, ``record`` id, ``field``) so a user
    can find it in a dataset of millions of records.
    """

    def __init__(self, message: str, *, file: object = None, record: object = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if record is not None:
            where.append(f"record {record!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.file, self.record, self.field = file, record, field


class ConfigError(VLBridgeError, ValueError):
    """An unknown or invalid configuration key or value (recipes, registries, CLI ``--set``)."""


class MissingPackageError(VLBridgeError, ImportError):
    """A weight package is not installed; the message carries the exact install command."""
