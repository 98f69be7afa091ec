"""How a batch gets its images: pixels for the encoder (or a connector that reads pixels), or features a frozen
encoder computed once; in training, also a frozen teacher encoder's features (cached too).

Every loader is called on samples with an image and returns :class:`ImageInputs`; ``precompute(samples)`` encodes
ahead what a frozen encoder will be asked for (a no-op for pixels), and ``cached`` says whether the model's own
encoder is skipped.

Clips (samples with ``frames``) are read frame by frame: each frame is an image file like any other (preprocessed
alone, its features cached under its own content), and a batch of clips stacks them along a frame axis
(:class:`ImageInputs`). The batch rules are :mod:`vlbridge.data.clips`'s: one size per clip, and one clip length
(or single images only) per batch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlbridge.batch import ImageInputs
from vlbridge.data.clips import check_frame_sizes, frame_field, frames_per_clip, load_clip
from vlbridge.data.images import load_image
from vlbridge.data.sample import Sample
from vlbridge.encoders.feature_cache import FeatureCache, file_digest


class PixelImages:
    """Load and preprocess each image (when the encoder trains, or when features are not cached)."""

    cached = False

    def __init__(self, preprocess):
        self.preprocess = preprocess

    def precompute(self, samples: list[Sample], progress=None) -> None:
        """Nothing to do ahead: pixels are read when a batch needs them."""

    def __call__(self, samples: list[Sample]) -> ImageInputs:
        frames = frames_per_clip(samples)
        if frames is None:
            images = [load_image(s.image, record=s.id, source=s.source or None) for s in samples]
            return ImageInputs(pixel_values=self.preprocess(images))
        images = [frame for s in samples for frame in load_clip(s)]  # clip by clip, frames in order
        pixels = self.preprocess(images)  # (B_img * F, C, H, W)
        return ImageInputs(pixel_values=pixels.unflatten(0, (len(samples), frames)), num_frames=frames)


class CachedFeatures:
    """Features of a frozen encoder, computed once per distinct image and reused every epoch.

    ``precompute`` fills an in-memory table, through the on-disk :class:`FeatureCache` (keyed by image
    content and encoder identity) when one is given, so a second run skips the encoder entirely. Paths
    with the same content share one entry (a ScienceQA export links one image under each of its problems;
    a still clip repeats a frame). A clip's frames are entries of their own; its frame sizes are checked once,
    from the files' headers.
    """

    cached = True

    def __init__(self, encoder: nn.Module, disk_cache: FeatureCache | None = None, batch_size: int = 16):
        self.encoder, self.disk_cache, self.batch_size = encoder, disk_cache, batch_size
        self.table: dict[Path, tuple[torch.Tensor, torch.Tensor]] = {}  # image path -> (grid, pooled)
        self._by_content: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # file SHA-256 -> shared entry
        self._checked_clips: set[tuple[Path, ...]] = set()  # clips whose frame sizes agree

    def _encode(self, items: list[tuple[Path, Sample, str]]):
        """Features of (image file, the sample that shows it, its field in the record) items."""
        images = [load_image(path, record=s.id, source=s.source or None, field=field) for path, s, field in items]
        return self.encoder(self.encoder.preprocess(images))

    @torch.no_grad()
    def precompute(self, samples: list[Sample], progress=None) -> None:
        todo: dict[Path, tuple[Path, Sample, str]] = {}
        for s in samples:
            if s.frames and s.frames not in self._checked_clips:
                check_frame_sizes(s)
                self._checked_clips.add(s.frames)
            for i, path in enumerate(s.image_files):
                if path not in self.table:
                    todo.setdefault(path, (path, s, frame_field(i) if s.frames else "image"))
        pending = list(todo.values())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start:start + self.batch_size]
            if self.disk_cache is None:
                features = self._encode(chunk)
            else:
                by_path = {item[0]: item for item in chunk}
                features = self.disk_cache.get_or_compute(
                    [path for path, _, _ in chunk], lambda paths: self._encode([by_path[p] for p in paths]))
            for (path, _, _), grid, pooled in zip(chunk, features.grid, features.pooled):
                digest = file_digest(path)
                if digest not in self._by_content:
                    self._by_content[digest] = (grid.clone(), pooled.clone())
                self.table[path] = self._by_content[digest]
            if progress is not None:
                progress(len(chunk))

    def __call__(self, samples: list[Sample]) -> ImageInputs:
        frames = frames_per_clip(samples)
        missing = [s for s in samples if any(p not in self.table for p in s.image_files)
                   or (s.frames and s.frames not in self._checked_clips)]
        if missing:
            self.precompute(missing)
        if frames is None:
            grid = torch.stack([self.table[s.image][0] for s in samples])  # (B, n, d_v)
            pooled = torch.stack([self.table[s.image][1] for s in samples])  # (B, d_v)
            return ImageInputs(grid=grid, pooled=pooled)
        grid = torch.stack([torch.stack([self.table[p][0] for p in s.frames]) for s in samples])  # (B, F, v, d_v)
        pooled = torch.stack([torch.stack([self.table[p][1] for p in s.frames]) for s in samples])  # (B, F, d_v)
        return ImageInputs(grid=grid, pooled=pooled, num_frames=frames)


class WithTeacher:
    """``images``' inputs plus a frozen teacher encoder's grid features (``teacher``: its :class:`CachedFeatures`),
    for an auxiliary loss in training (EVE's patch aligning layer); the model's forward never reads them."""

    def __init__(self, images, teacher: CachedFeatures):
        self.images, self.teacher = images, teacher
        self.cached = images.cached

    def precompute(self, samples: list[Sample], progress=None) -> None:
        self.images.precompute(samples, progress)
        self.teacher.precompute(samples, None if self.images.cached else progress)  # each image counted once

    def __call__(self, samples: list[Sample]) -> ImageInputs:
        inputs = self.images(samples)
        inputs.teacher = self.teacher(samples).grid
        return inputs
