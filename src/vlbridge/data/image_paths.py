"""Where a data file's image path may point: inside the image folder, unless the user allows otherwise.

Data files are often downloaded from elsewhere. A record whose ``image`` is ``../../home/me/secret.png`` or
``/etc/passwd`` would make training, evaluation or ``vlbridge data check`` open (and, through error messages
and cached features, reveal something of) files outside the folder the user named. So such a path is refused
by default with an error naming the file, the record and the field; ``allow_outside_images=True`` (recipe
``data.allow_outside_images: true``, ``vlbridge data check --allow-outside-images``) accepts it, for data
that deliberately points at images elsewhere.

The check is on the path as written (absolute, or climbing out with ``..`` after normalisation), not on
where symbolic links lead: a link inside the image folder was put there by its owner (e.g. ``coco ->
/mnt/datasets/coco``) and is followed as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlbridge.errors import DataError

OPTION = "data.allow_outside_images=true"
"""How a user allows such paths, quoted in the error."""


def leaves_folder(relative: str) -> bool:
    """True if ``relative`` is absolute or, once ``a/../`` is folded, starts by climbing out with ``..``."""
    if os.path.isabs(relative):
        return True
    normal = os.path.normpath(relative)
    return normal == os.pardir or normal.startswith(os.pardir + os.sep)


def image_path(root: Path, relative: str, *, allow_outside: bool, file: object, record: object, field: str) -> Path:
    """``root / relative``, or a :class:`DataError` naming file, record and field when ``relative`` leaves
    ``root`` (unless ``allow_outside``) or cannot be a file name at all (a NUL character)."""
    if "\0" in relative:
        raise DataError(f"image path {relative!r} holds a NUL character; no file can have that name", file=file,
                        record=record, field=field)
    if not allow_outside and leaves_folder(relative):
        raise DataError(f"image path {relative!r} leaves the image folder {root} (an absolute path, or one climbing "
                        f"out with '..'); images must be inside it. If this data file is trusted to point elsewhere, "
                        f"set {OPTION} (reader argument allow_outside_images=True)", file=file, record=record,
                        field=field)
    return root / relative
