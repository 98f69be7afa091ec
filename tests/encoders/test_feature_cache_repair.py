"""A truncated or corrupt feature-cache entry is named in a warning, recomputed and rewritten; the run goes on."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vlbridge.encoders.feature_cache import FeatureCache
from vlbridge.encoders.vision_encoder import VisionFeatures


class Features:
    """compute_fn with features that depend only on the image's content; records what it was asked for."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, paths):
        self.calls.append([p.name for p in paths])
        values = [float(Image.open(p).getpixel((0, 0))[0]) for p in paths]
        grid = torch.stack([torch.arange(12.0).reshape(4, 3) + v for v in values])
        return VisionFeatures(grid=grid, pooled=grid.mean(1))


@pytest.fixture
def filled(tmp_path):
    """A cache holding the features of three images, the images, and the first result."""
    images = []
    for i in range(3):
        images.append(tmp_path / f"img{i}.png")
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(images[-1])
    cache, compute = FeatureCache(tmp_path / "cache", "tiny-encoder"), Features()
    first = cache.get_or_compute(images, compute)
    return cache, compute, images, first


def damage_truncate(entry):
    entry.write_bytes(entry.read_bytes()[:-20])


def damage_empty(entry):
    entry.write_bytes(b"")


def damage_garbage(entry):
    entry.write_bytes(b"\x00\x01not safetensors at all" * 3)


def damage_flip_a_byte(entry):  # a valid file whose numbers changed on disk
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0x40
    entry.write_bytes(bytes(data))


def damage_other_encoder(entry):
    save_file({"grid": torch.zeros(4, 3)}, str(entry), metadata={"identity": "another-encoder"})


def damage_not_features(entry):
    save_file({"weights": torch.zeros(4, 3)}, str(entry), metadata={"identity": "tiny-encoder"})


@pytest.mark.parametrize("damage", [damage_truncate, damage_empty, damage_garbage, damage_flip_a_byte,
                                    damage_other_encoder, damage_not_features])
def test_a_damaged_entry_is_named_recomputed_and_rewritten(filled, damage, caplog):
    cache, compute, images, first = filled
    entry = cache.path_for(images[1])
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="vlbridge.encoders.feature_cache"):
        again = cache.get_or_compute(images, compute)
    assert compute.calls[1:] == [["img1.png"]]  # only the damaged entry was recomputed
    torch.testing.assert_close(again.grid, first.grid, rtol=0, atol=0)
    torch.testing.assert_close(again.pooled, first.pooled, rtol=0, atol=0)
    assert cache.repaired == 1
    warning, = [r.getMessage() for r in caplog.records]
    assert f"feature cache: entry {entry} (features of image {images[1]})" in warning and "recomputing it" in warning
    # the rewritten entry is whole: a new cache object reads all three without computing
    fresh = FeatureCache(cache.folder.parent, "tiny-encoder")
    fresh.get_or_compute(images, compute)
    assert len(compute.calls) == 2 and fresh.repaired == 0 and fresh.hits == 3


def test_entries_without_a_checksum_are_still_read(filled):
    """Entries written before checksums were stored keep working."""
    cache, compute, images, first = filled
    entry = cache.path_for(images[0])
    save_file({"grid": first.grid[0].clone(), "pooled": first.pooled[0].clone()}, str(entry),
              metadata={"identity": "tiny-encoder"})
    again = cache.get_or_compute(images, compute)
    assert len(compute.calls) == 1 and cache.repaired == 0
    torch.testing.assert_close(again.grid, first.grid, rtol=0, atol=0)
