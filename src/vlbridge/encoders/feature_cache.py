"""On-disk cache of frozen vision features, so epochs after the first skip the encoder.

One safetensors file per image holds its grid (n, d_v) and pooled (d_v) features. Files are keyed by
the SHA-256 of the image file's bytes (renaming or copying an image keeps its entry; editing it makes a
new one) under a folder named after the encoder identity (weights + layer + preprocessing). Only valid
for a frozen encoder without trainable adapters: their features would change as training proceeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlbridge.encoders.vision_encoder import VisionEncoder, VisionFeatures
from vlbridge.errors import ConfigError, DataError
from vlbridge.weights.cache import write_file_atomically


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """Features per image under ``folder/<hash of encoder identity>/``; see :meth:`get_or_compute`."""

    def __init__(self, folder: str | Path, encoder_identity: str, dtype: torch.dtype = torch.float32):
        self.identity = encoder_identity
        self.dtype = dtype  # storage precision (float16 halves the disk; float32 is exact)
        self.folder = Path(folder) / hashlib.sha256(encoder_identity.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        label = self.folder / "identity.txt"  # for humans looking at the folder
        if not label.exists():
            write_file_atomically(label, lambda tmp: tmp.write_text(encoder_identity + "\n"))
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_encoder(cls, folder: str | Path, encoder: VisionEncoder, dtype: torch.dtype = torch.float32) -> "FeatureCache":
        """A cache for ``encoder``'s features; refuses an encoder whose features can change."""
        if not encoder.frozen:
            raise ConfigError("feature cache: the vision encoder is trainable (frozen=False); its features change "
                              "during training and cannot be cached. Freeze it or disable the feature cache.")
        if encoder.adapters is not None:
            raise ConfigError("feature cache: the vision encoder has trainable adapters; its features change "
                              "during training and cannot be cached. Remove the adapters or disable the feature cache.")
        return cls(folder, encoder.identity, dtype=dtype)

    def path_for(self, image_path: str | Path) -> Path:
        digest = file_digest(Path(image_path))
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get_or_compute(
        self,
        image_paths: Sequence[str | Path],
        compute_fn: Callable[[list[Path]], VisionFeatures],
    ) -> VisionFeatures:
        """Features of ``image_paths`` in order: cached ones read from disk, the others computed by
        ``compute_fn(missing_paths)`` (one call for all misses, each distinct image once) and stored."""
        paths = [Path(p) for p in image_paths]
        for i, path in enumerate(paths):
            if not path.is_file():
                raise DataError("image file not found", file=path, record=i)
        entries = [self.path_for(p) for p in paths]
        found: dict[Path, dict[str, torch.Tensor]] = {}
        missing: dict[Path, Path] = {}  # cache entry -> one image with that content
        for path, entry in zip(paths, entries):
            if entry in found or entry in missing:
                continue
            if entry.is_file():
                found[entry] = load_file(entry)
            else:
                missing[entry] = path
        self.hits += sum(entry in found for entry in entries)
        self.misses += len(missing)
        if missing:
            computed = compute_fn(list(missing.values()))
            if computed.grid.shape[0] != len(missing):
                raise ValueError(f"compute_fn returned {computed.grid.shape[0]} feature rows for {len(missing)} images")
            for j, entry in enumerate(missing):
                tensors = {"grid": computed.grid[j]}
                if computed.pooled is not None:
                    tensors["pooled"] = computed.pooled[j]
                tensors = {k: v.detach().to("cpu", self.dtype).contiguous() for k, v in tensors.items()}
                write_file_atomically(entry, lambda tmp, t=tensors: save_file(t, tmp, metadata={"identity": self.identity}))
                found[entry] = tensors
        rows = [found[entry] for entry in entries]
        grid = torch.stack([r["grid"] for r in rows]).float()  # (B, n, d_v)
        pooled = torch.stack([r["pooled"] for r in rows]).float() if all("pooled" in r for r in rows) else None
        return VisionFeatures(grid=grid, pooled=pooled)
