"""How a batch gets its images: pixels for the encoder (or a connector that reads pixels), or features a frozen
encoder computed once; in training, also a frozen teacher encoder's features (cached too).

Every loader is called on samples with an image and returns :class:`ImageInputs`; ``precompute(samples)`` encodes
ahead what a frozen encoder will be asked for (a no-op for pixels), and ``cached`` says whether the model's own
encoder is skipped."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlbridge.batch import ImageInputs
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
        images = [load_image(s.image, record=s.id, source=s.source or None) for s in samples]
        return ImageInputs(pixel_values=self.preprocess(images))


class CachedFeatures:
    """Features of a frozen encoder, computed once per distinct image and reused every epoch.

    ``precompute`` fills an in-memory table, through the on-disk :class:`FeatureCache` (keyed by image
    content and encoder identity) when one is given, so a second run skips the encoder entirely. Paths
    with the same content share one entry (a ScienceQA export links one image under each of its problems).
    """

    cached = True

    def __init__(self, encoder: nn.Module, disk_cache: FeatureCache | None = None, batch_size: int = 16):
        self.encoder, self.disk_cache, self.batch_size = encoder, disk_cache, batch_size
        self.table: dict[Path, tuple[torch.Tensor, torch.Tensor]] = {}  # image path -> (grid, pooled)
        self._by_content: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # file SHA-256 -> shared entry

    def _encode(self, samples: list[Sample]):
        return self.encoder(PixelImages(self.encoder.preprocess)(samples).pixel_values)

    @torch.no_grad()
    def precompute(self, samples: list[Sample], progress=None) -> None:
        todo: dict[Path, Sample] = {}
        for s in samples:
            if s.image is not None and s.image not in self.table:
                todo.setdefault(s.image, s)
        pending = list(todo.values())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start:start + self.batch_size]
            if self.disk_cache is None:
                features = self._encode(chunk)
            else:
                by_path = {s.image: s for s in chunk}
                features = self.disk_cache.get_or_compute(
                    [s.image for s in chunk], lambda paths: self._encode([by_path[p] for p in paths]))
            for s, grid, pooled in zip(chunk, features.grid, features.pooled):
                digest = file_digest(s.image)
                if digest not in self._by_content:
                    self._by_content[digest] = (grid.clone(), pooled.clone())
                self.table[s.image] = self._by_content[digest]
            if progress is not None:
                progress(len(chunk))

    def __call__(self, samples: list[Sample]) -> ImageInputs:
        missing = [s for s in samples if s.image not in self.table]
        if missing:
            self.precompute(missing)
        grid = torch.stack([self.table[s.image][0] for s in samples])
        pooled = torch.stack([self.table[s.image][1] for s in samples])
        return ImageInputs(grid=grid, pooled=pooled)


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
