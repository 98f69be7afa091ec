"""Clips: samples whose one image placeholder shows several frames in time order (:attr:`Sample.frames`).

Two rules, each checked with an error naming the annotation file, the record and the field (``image[i]`` is
frame i of the record's ``image`` list):

- the frames of a clip are all the same size (frames of one video; a mismatch means frames of different videos,
  or a resized one, were put together);
- a batch holds single images only, or clips of one length only. The connector reads a batch of clips as one
  (B, F, v, d_v) tensor and its frame embeddings give each position its time, so clips are not padded with
  empty frames: clips of different lengths go in different batches (batch size 1, or one length per data file).
"""

from __future__ import annotations

from collections.abc import Sequence
from PIL import Image

from vlbridge.data.images import load_image
from vlbridge.data.sample import Sample
from vlbridge.errors import DataError

# EXIF orientations that turn the image by 90 degrees (load_image applies them, so width and height swap)
_TURNED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112


def frame_field(index: int) -> str:
    """The record field of a clip's frame ``index``: its place in the ``image`` list."""
    return f"image[{index}]"


def load_clip(sample: Sample) -> list[Image.Image]:
    """Every frame of ``sample``'s clip as RGB (:func:`load_image`), checked to be the same size."""
    frames = [load_image(path, record=sample.id, source=sample.source or None, field=frame_field(i))
              for i, path in enumerate(sample.frames)]
    _same_size(sample, [frame.size for frame in frames])
    return frames


def check_frame_sizes(sample: Sample) -> None:
    """The frames of ``sample``'s clip are the same size, read from the files' headers only (cheap: for clips
    whose features are cached, whose pixels are never decoded again)."""
    sizes = []
    for i, path in enumerate(sample.frames):
        try:
            with Image.open(path) as opened:
                width, height = opened.size
                turned = opened.getexif().get(_ORIENTATION_TAG) in _TURNED
        except (OSError, SyntaxError, ValueError, EOFError):
            load_image(path, record=sample.id, source=sample.source or None, field=frame_field(i))  # the clear error
            raise  # a header Pillow cannot read but a full decode can: not expected
        sizes.append((height, width) if turned else (width, height))
    _same_size(sample, sizes)


def _same_size(sample: Sample, sizes: Sequence[tuple[int, int]]) -> None:
    for i, size in enumerate(sizes):
        if size != sizes[0]:
            raise DataError(
                f"frame {i} ({sample.frames[i]}) is {size[0]}x{size[1]} pixels but frame 0 ({sample.frames[0]}) is "
                f"{sizes[0][0]}x{sizes[0][1]}: the frames of a clip must all be the same size",
                file=sample.source or None, record=sample.id, field=frame_field(i))


def frames_per_clip(samples: Sequence[Sample]) -> int | None:
    """The number of frames of every clip in ``samples`` (a batch's samples with an image), or None when they are
    single images. A batch mixing clip lengths, or clips and single images, is refused naming the first record that
    differs from the first one."""
    if not samples:
        return None
    first = samples[0]
    for sample in samples[1:]:
        if len(sample.frames) != len(first.frames):
            raise DataError(
                f"{_describe(sample)}, but record {first.id!r}{_in_file(first, sample)} in the same batch is "
                f"{_describe(first)}: a batch holds single images only or clips of one length only (clips are not "
                "padded); give the clips one length, or use batch size 1",
                file=sample.source or None, record=sample.id, field="image")
    return len(first.frames) or None


def _describe(sample: Sample) -> str:
    return f"a clip of {len(sample.frames)} frames" if sample.frames else "a single image"


def _in_file(other: Sample, sample: Sample) -> str:
    return f" (file {other.source})" if other.source and other.source != sample.source else ""

