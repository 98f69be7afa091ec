"""FeatureCache: keyed by image content and encoder identity; a hit skips the encoder."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from vlbridge.encoders import FeatureCache, VisionFeatures, build_vision_encoder
from vlbridge.errors import ConfigError, DataError


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        paths.append(path)
    return paths


class CountingEncoder:
    """compute_fn that runs a real encoder and records which images it was asked for."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def __call__(self, paths):
        self.calls.append([p.name for p in paths])
        with torch.no_grad():
            return self.encoder(self.encoder.preprocess([Image.open(p) for p in paths]))


@pytest.fixture
def encoder(tiny_vit_dirs):
    return build_vision_encoder(str(tiny_vit_dirs["dinov2"]))


def test_miss_computes_and_hit_skips_the_encoder(tmp_path, images, encoder):
    cache = FeatureCache.for_encoder(tmp_path / "cache", encoder)
    compute = CountingEncoder(encoder)
    first = cache.get_or_compute(images, compute)
    assert compute.calls == [["img0.png", "img1.png", "img2.png"]]
    assert first.grid.shape == (3, 16, 32) and first.pooled.shape == (3, 32)
    second = cache.get_or_compute(list(reversed(images)), compute)  # next epoch, another order
    assert len(compute.calls) == 1 and cache.hits == 3 and cache.misses == 3
    torch.testing.assert_close(second.grid, first.grid.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(second.pooled, first.pooled.flip(0), rtol=0, atol=0)
    # a fresh cache object on the same folder (a new process) also hits
    again = FeatureCache.for_encoder(tmp_path / "cache", encoder)
    again.get_or_compute(images[:1], compute)
    assert len(compute.calls) == 1


def test_keyed_by_content_not_path(tmp_path, images, encoder):
    cache = FeatureCache(tmp_path / "cache", encoder.identity)
    compute = CountingEncoder(encoder)
    cache.get_or_compute(images[:1], compute)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(images[0], copy)
    cache.get_or_compute([copy], compute)  # same bytes, other path: hit
    assert len(compute.calls) == 1
    Image.new("RGB", (40, 30), (9, 9, 9)).save(images[0])  # same path, new content: miss
    cache.get_or_compute(images[:1], compute)
    assert compute.calls[-1] == ["img0.png"] and len(compute.calls) == 2


def test_partial_hits_compute_only_the_misses_once(tmp_path, images, encoder):
    cache = FeatureCache(tmp_path / "cache", encoder.identity)
    compute = CountingEncoder(encoder)
    cache.get_or_compute([images[1]], compute)
    out = cache.get_or_compute([images[0], images[1], images[2], images[0]], compute)
    assert compute.calls[-1] == ["img0.png", "img2.png"]
    with torch.no_grad():
        direct = encoder(encoder.preprocess([Image.open(p) for p in images]))
    torch.testing.assert_close(out.grid[:3], direct.grid)
    torch.testing.assert_close(out.grid[3], direct.grid[0])


def test_identity_separates_encoders(tmp_path, images, tiny_vit_dirs):
    folder = str(tiny_vit_dirs["dinov2"])
    penultimate, last = build_vision_encoder(folder, layer=-2), build_vision_encoder(folder, layer=-1)
    compute_a, compute_b = CountingEncoder(penultimate), CountingEncoder(last)
    a = FeatureCache.for_encoder(tmp_path, penultimate).get_or_compute(images, compute_a)
    b = FeatureCache.for_encoder(tmp_path, last).get_or_compute(images, compute_b)
    assert len(compute_b.calls) == 1 and not torch.allclose(a.grid, b.grid)


def test_refuses_encoders_whose_features_change(tmp_path, tiny_vit_dirs):
    folder = str(tiny_vit_dirs["dinov2"])
    with pytest.raises(ConfigError, match="adapters"):
        FeatureCache.for_encoder(tmp_path, build_vision_encoder(folder, adapter_dim=12))
    with pytest.raises(ConfigError, match="trainable"):
        FeatureCache.for_encoder(tmp_path, build_vision_encoder(folder, frozen=False))


def test_missing_image_and_wrong_batch_are_errors(tmp_path, images):
    cache = FeatureCache(tmp_path / "cache", "some-encoder")
    with pytest.raises(DataError, match="record 1"):
        cache.get_or_compute([images[0], tmp_path / "missing.png"], lambda paths: None)
    with pytest.raises(ValueError, match="2 images"):
        cache.get_or_compute(images[:2], lambda paths: VisionFeatures(torch.zeros(1, 4, 8), None))


def test_half_precision_storage(tmp_path, images):
    cache = FeatureCache(tmp_path / "cache", "x", dtype=torch.float16)
    grid = torch.randn(1, 4, 8)
    out = cache.get_or_compute(images[:1], lambda paths: VisionFeatures(grid, None))
    assert out.pooled is None and out.grid.dtype == torch.float32
    torch.testing.assert_close(out.grid, grid.half().float(), rtol=0, atol=0)


@pytest.mark.parametrize("on_disk", [True, False])
def test_in_memory_table_keeps_one_copy_per_image_content(tmp_path, images, encoder, on_disk):
    """A ScienceQA export links one image under each problem: the table must not hold it twice."""
    from vlbridge.data.sample import Sample, Turn
    from vlbridge.image_inputs import CachedFeatures

    copy = tmp_path / "copy" / "img0.png"
    copy.parent.mkdir()
    shutil.copy(images[0], copy)
    table = CachedFeatures(encoder, FeatureCache.for_encoder(tmp_path / "cache", encoder) if on_disk else None)
    samples = [Sample(str(i), (Turn("user", "<image>\nq"), Turn("assistant", "a")), image=p)
               for i, p in enumerate([images[0], copy, images[1]])]
    batch = table(samples)
    assert len(table.table) == 3
    assert table.table[images[0]][0].data_ptr() == table.table[copy][0].data_ptr()
    assert table.table[images[0]][0].data_ptr() != table.table[images[1]][0].data_ptr()
    torch.testing.assert_close(batch.grid[0], batch.grid[1], rtol=0, atol=0)
