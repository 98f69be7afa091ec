"""Ids carried by more than one record: found and reported, never used to tell records apart.

Records are told apart by their file and position (:attr:`vlbridge.data.sample.Sample.position`), so a shared id
loses no data: under ``data.on_bad_record=skip`` only the bad record itself is left out. Duplicates are still
worth a warning: predictions, skipped-record reports and evaluation results name records by id, so two records
with one id are hard to tell apart there, and an id in both the training and the validation set may be the same
example in both (a leak that inflates validation scores). Training logs the warning and goes on (data that trains
fine is not refused: the Shapes ``mc`` and ``mc-text`` files share ids by design, the same question with and
without its image); ``vlbridge data check`` lists the duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vlbridge.data.sample import Sample


@dataclass(frozen=True)
class DuplicateId:
    """One id and every record that carries it, as ``(part, file, position)`` in reading order."""

    id: str
    places: tuple[tuple[str, str, int | str | None], ...]

    @property
    def parts(self) -> list[str]:
        """The parts (e.g. train, val) it occurs in, in order."""
        return list(dict.fromkeys(part for part, _, _ in self.places))


def find_duplicate_ids(parts: Mapping[str, Sequence[Sample]]) -> list[DuplicateId]:
    """Every id carried by two or more records of ``parts`` (e.g. ``{"train": ..., "val": ...}``), in the order
    of its first record."""
    places: dict[str, list[tuple[str, str, int | str | None]]] = {}
    for part, samples in parts.items():
        for sample in samples:
            places.setdefault(sample.id, []).append((part, sample.source, sample.position))
    return [DuplicateId(id_, tuple(where)) for id_, where in places.items() if len(where) > 1]


def describe_duplicates(duplicates: Sequence[DuplicateId], shown: int = 5) -> str:
    """One paragraph: how many ids are shared, by how many records, how many cross parts, and the first ``shown``
    with where their records are."""
    records = sum(len(d.places) for d in duplicates)
    across = sum(len(d.parts) > 1 for d in duplicates)
    lines = [f"{len(duplicates)} id(s) are carried by more than one record ({records} records"
             + (f"; {across} id(s) in more than one part, e.g. both train and val: the same example in both?"
                if across else "") + "). No record is lost (records are told apart by file and position), but "
             "reports and results name records by id"]
    for d in duplicates[:shown]:
        where = ", ".join(f"{file}#{position}" + (f" ({part})" if part != file else "")
                          for part, file, position in d.places[:4])
        more = f" and {len(d.places) - 4} more" if len(d.places) > 4 else ""
        lines.append(f"  id {d.id!r}: {where}{more}")
    if len(duplicates) > shown:
        lines.append(f"  and {len(duplicates) - shown} more id(s)")
    return "\n".join(lines)
