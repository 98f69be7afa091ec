"""On-disk cache of frozen vision features, so epochs after the first skip the encoder.

One safetensors file per image holds its grid (n, d_v) and pooled (d_v) features. Files are keyed by
the SHA-256 of the image file's bytes (renaming or copying an image keeps its entry; editing it makes a
new one) under a folder named after the encoder identity (weights + layer + preprocessing). Only valid
for a frozen encoder without trainable adapters: their features would change as training proceeds.

An entry is checked when read: a file that is truncated, not safetensors, written for another encoder, without
a 2-D ``grid``, or whose tensors no longer match the SHA-256 stored beside them (bytes changed on disk) is named
in a warning, deleted and recomputed, and the run carries on (a crash while writing can leave no such file: writes
are atomic; a disk or a copy can).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vlbridge.encoders.vision_encoder import VisionEncoder, VisionFeatures
from vlbridge.errors import ConfigError, DataError
from vlbridge.weights.cache import write_file_atomically

logger = logging.getLogger(__name__)


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
        self.repaired = 0  # entries found corrupt, deleted and recomputed

    @classmethod
    def for_encoder(cls, folder: str | Path, encoder: VisionEncoder, dtype: torch.dtype | None = None) -> "FeatureCache":
        """A cache for ``encoder``'s features; refuses an encoder whose features can change. The features are
        stored in ``dtype`` (None: the encoder's own, so a bf16 encoder's take half the disk) and keyed by the dtype
        the encoder computes in: an encoder stored in bf16 (vlbridge.precision) never reads an fp32 encoder's
        features, nor the other way round."""
        if not encoder.frozen:
            raise ConfigError("feature cache: the vision encoder is trainable (frozen=False); its features change "
                              "during training and cannot be cached. Freeze it or disable the feature cache.")
        if encoder.adapters is not None:
            raise ConfigError("feature cache: the vision encoder has trainable adapters; its features change "
                              "during training and cannot be cached. Remove the adapters or disable the feature cache.")
        computed = encoder.dtype
        identity = encoder.identity if computed == torch.float32 else f"{encoder.identity}|computed in {computed}"
        return cls(folder, identity, dtype=dtype or computed)

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
            tensors = self._read(entry, path) if entry.is_file() else None
            if tensors is not None:
                found[entry] = tensors
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
                metadata = {"identity": self.identity, "sha256": tensors_digest(tensors)}
                write_file_atomically(entry, lambda tmp, t=tensors, m=metadata: save_file(t, tmp, metadata=m))
                found[entry] = tensors
        rows = [found[entry] for entry in entries]
        grid = torch.stack([r["grid"] for r in rows]).float()  # (B, n, d_v)
        pooled = torch.stack([r["pooled"] for r in rows]).float() if all("pooled" in r for r in rows) else None
        return VisionFeatures(grid=grid, pooled=pooled)

    def _read(self, entry: Path, image: Path) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or None (after a warning naming it, and deleting it) when it is corrupt."""
        try:
            with safe_open(str(entry), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            problem = self._problem(metadata, tensors)
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            problem = f"unreadable ({type(error).__name__}: {error})"
        if problem is None:
            return tensors
        logger.warning("feature cache: entry %s (features of image %s) is %s; recomputing it", entry, image, problem)
        self.repaired += 1
        try:
            entry.unlink()
        except OSError:
            pass  # the atomic rewrite replaces it anyway
        return None

    def _problem(self, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str | None:
        """What is wrong with an entry that could be read, or None."""
        if metadata.get("identity") != self.identity:
            return f"written for another encoder ({metadata.get('identity')!r})"
        grid, pooled = tensors.get("grid"), tensors.get("pooled")
        extra = set(tensors) - {"grid", "pooled"}
        if grid is None or grid.ndim != 2 or extra or (pooled is not None and pooled.ndim != 1):
            return f"not a feature entry (tensors {[(k, tuple(v.shape)) for k, v in tensors.items()]})"
        # entries written by older versions have no checksum: read as they are
        if "sha256" in metadata and metadata["sha256"] != tensors_digest(tensors):
            return "corrupt (its tensors do not match their SHA-256)"
        return None


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, shapes, dtypes and bytes: catches bytes changed on disk after writing."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
