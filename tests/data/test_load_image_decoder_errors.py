"""A decoder that fails with an unusual exception on a malformed file still gives a DataError naming the file."""

from __future__ import annotations

import pytest

from vlbridge.data.images import load_image
from vlbridge.errors import DataError

# a 2x4 QOI image cut short: Pillow's QOI decoder raises IndexError reading past the end (found by fuzzing)
TRUNCATED_QOI = (b"qoif\x00\x00\x00\x02\x00\x00\x00\x04\x03\x01\xfe_\x82\xc2\xfe\xd9\xcf\xeb\xfe\x0f\xa3!\xfe\xd7"
                 b"\xd9\x82\xfe\xf8\xbd\x10\xfeE\xb8\xe8\xfe\xcdN\xa9")


def test_truncated_qoi_is_a_data_error(tmp_path):
    path = tmp_path / "frame.qoi"
    path.write_bytes(TRUNCATED_QOI)
    with pytest.raises(DataError, match=r"file train\.json, record 'r1', field 'image': image .*frame\.qoi: cannot "
                                        r"read image \(IndexError"):
        load_image(path, record="r1", source="train.json")
