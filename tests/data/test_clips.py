"""Clips in LLaVA JSON and in batches: a list under "image" is one clip for one <image>; frames are loaded,
preprocessed and cached one by one and stacked along a frame axis; bad clips are named by file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlbridge.data.clips import check_frame_sizes, frames_per_clip, load_clip
from vlbridge.data.llava_json import read_llava_json, write_llava_json
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError
from vlbridge.image_inputs import CachedFeatures, PixelImages


def clip_record(rid="c1", frames=("f0.png", "f1.png", "f2.png"), first="<image>\nWhich way did it move?", **extra):
    out = {"id": rid, "image": list(frames) if isinstance(frames, tuple) else frames,
           "conversations": [{"from": "human", "value": first}, {"from": "gpt", "value": "left"}]}
    out.update(extra)
    return out


def dump(folder: Path, records, name="clips.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def frames_in(folder: Path, sizes=((20, 16),) * 3, stem="f") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"{stem}{i}.png"
        Image.new("RGB", size, (60 * i, 100, 200 - 50 * i)).save(path)
        paths.append(path)
    return paths


def clip_sample(rid: str, frames, source="") -> Sample:
    return Sample(rid, (Turn("user", "<image>\nq"), Turn("assistant", "a")), frames=tuple(frames), source=source)


def test_a_list_under_image_is_one_clip(tmp_path):
    path = dump(tmp_path, [clip_record(), clip_record("one", frames=("f0.png",)),
                           {"id": "img", "image": "f0.png", "conversations": [{"from": "human", "value": "<image>"}]}])
    clip, single_frame, image = read_llava_json(path)
    assert clip.frames == (tmp_path / "f0.png", tmp_path / "f1.png", tmp_path / "f2.png")
    assert clip.image is None and clip.is_clip and clip.image_files == clip.frames
    assert single_frame.frames == (tmp_path / "f0.png",)  # any list is a clip, even of one frame
    assert image.image == tmp_path / "f0.png" and image.frames == () and image.image_files == (image.image,)
    assert read_llava_json(path, image_root="/data")[0].frames[1] == Path("/data/f1.png")


def test_clips_round_trip_through_the_writer(tmp_path):
    frames = frames_in(tmp_path / "clips")
    samples = [clip_sample("c", frames, source="x"), Sample("t", (Turn("user", "hi"), Turn("assistant", "yo")))]
    write_llava_json(samples, tmp_path / "out.json", image_root=tmp_path)
    assert json.loads((tmp_path / "out.json").read_text())[0]["image"] == ["clips/f0.png", "clips/f1.png",
                                                                           "clips/f2.png"]
    back = read_llava_json(tmp_path / "out.json", check_images=True)
    assert back[0].frames == tuple(frames) and back[1].frames == () and back[1].image is None
    with pytest.raises(DataError) as error:
        write_llava_json([clip_sample("c", [frames[0], Path("/elsewhere/f.png")])], tmp_path / "o.json", tmp_path)
    assert error.value.record == "c" and error.value.field == "image[1]"


def test_a_sample_is_an_image_or_a_clip_not_both(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        Sample("x", (Turn("user", "<image>"),), image=tmp_path / "a.png", frames=(tmp_path / "b.png",))


BAD_CLIPS = [
    ("empty list", clip_record(frames=[]), "image", "empty list"),
    ("frame not a string", clip_record(frames=["f0.png", 3]), "image[1]", "non-empty string"),
    ("empty frame path", clip_record(frames=["f0.png", " "]), "image[1]", "non-empty string"),
    ("a placeholder per frame", clip_record(first="<image> then <image>"), "conversations", "one clip"),
    ("clip without placeholder", clip_record(first="Which way?"), "conversations[0].value", "no <image>"),
    ("a video file", {**clip_record(), "video": "clip.mp4"}, "video", "frames as a list"),
]


@pytest.mark.parametrize("case, data, field, message", BAD_CLIPS, ids=[c[0] for c in BAD_CLIPS])
def test_bad_clip_records_name_file_record_and_field(tmp_path, case, data, field, message):
    path = dump(tmp_path, [data])
    with pytest.raises(DataError) as error:
        read_llava_json(path)
    assert message in str(error.value)
    assert (error.value.file, error.value.record, error.value.field) == (path, "c1", field)


def test_frames_of_different_sizes_are_refused_naming_the_frame(tmp_path):
    frames_in(tmp_path, sizes=[(20, 16), (20, 16), (24, 16)])
    path = dump(tmp_path, [clip_record()])
    sample = read_llava_json(path)[0]  # images are not opened by default
    for check in (lambda: read_llava_json(path, check_images=True), lambda: load_clip(sample),
                  lambda: check_frame_sizes(sample), lambda: PixelImages(lambda images: None)([sample])):
        with pytest.raises(DataError) as error:
            check()
        assert (str(error.value.file), error.value.record, error.value.field) == (str(path), "c1", "image[2]")
        assert "24x16" in str(error.value) and "20x16" in str(error.value) and "f2.png" in str(error.value)


def test_a_missing_frame_is_named_by_its_place(tmp_path):
    frames_in(tmp_path, sizes=[(20, 16)] * 2)  # f2.png is missing
    path = dump(tmp_path, [clip_record()])
    sample = read_llava_json(path)[0]
    for check in (lambda: read_llava_json(path, check_images=True), lambda: load_clip(sample),
                  lambda: check_frame_sizes(sample)):
        with pytest.raises(DataError) as error:
            check()
        assert error.value.record == "c1" and error.value.field == "image[2]" and "f2.png" in str(error.value)


def test_exif_rotation_counts_in_the_header_check(tmp_path):
    """A frame stored 16x20 with a 90-degree EXIF orientation is shown 20x16 by load_image: the same size."""
    upright = tmp_path / "f0.png"
    Image.new("RGB", (20, 16)).save(upright)
    turned = tmp_path / "f1.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (16, 20)).save(turned, exif=exif)
    sample = clip_sample("c", [upright, turned])
    check_frame_sizes(sample)
    assert [frame.size for frame in load_clip(sample)] == [(20, 16), (20, 16)]


def test_a_batch_holds_one_clip_length_or_single_images(tmp_path):
    frames = frames_in(tmp_path, sizes=[(20, 16)] * 4)
    four, also_four = clip_sample("a", frames, "a.json"), clip_sample("b", frames[::-1], "a.json")
    three = clip_sample("c", frames[:3], "b.json")
    image = Sample("d", (Turn("user", "<image>"),), image=frames[0], source="a.json")
    assert frames_per_clip([four, also_four]) == 4 and frames_per_clip([image, image]) is None
    assert frames_per_clip([]) is None
    with pytest.raises(DataError) as error:
        frames_per_clip([four, three])
    assert (error.value.file, error.value.record, error.value.field) == ("b.json", "c", "image")
    assert "a clip of 3 frames" in str(error.value) and "'a' (file a.json)" in str(error.value)
    with pytest.raises(DataError, match="a single image, but record 'a'.* is a clip of 4 frames"):
        frames_per_clip([four, image])


def test_pixels_of_a_clip_batch_have_a_frame_axis(tmp_path):
    frames = frames_in(tmp_path, sizes=[(20, 16)] * 3)

    def preprocess(images):  # (N, 3, 16, 20) in the order given
        return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() for im in images])

    inputs = PixelImages(preprocess)([clip_sample("a", frames), clip_sample("b", frames[::-1])])
    assert inputs.num_frames == 3 and inputs.pixel_values.shape == (2, 3, 3, 16, 20)
    torch.testing.assert_close(inputs.pixel_values[1], inputs.pixel_values[0].flip(0))
    assert inputs.to("cpu").num_frames == 3


@pytest.fixture(scope="module")
def encoder(tiny_dinov2_dir):
    from vlbridge.encoders import build_vision_encoder

    return build_vision_encoder(str(tiny_dinov2_dir), layer=-1)


@pytest.mark.parametrize("on_disk", [False, True])
def test_cached_features_of_clips_are_the_frames_features(tmp_path, encoder, on_disk):
    from vlbridge.encoders import FeatureCache

    frames = frames_in(tmp_path, sizes=[(56, 56)] * 3)
    cache = FeatureCache.for_encoder(tmp_path / "cache", encoder) if on_disk else None
    table = CachedFeatures(encoder, cache)
    clips = [clip_sample("a", frames), clip_sample("b", [frames[2], frames[2], frames[0]])]
    inputs = table(clips)
    assert inputs.num_frames == 3 and inputs.grid.shape == (2, 3, 16, 32) and inputs.pooled.shape == (2, 3, 32)
    assert len(table.table) == 3  # each frame file once
    with torch.no_grad():
        alone = encoder(encoder.preprocess([Image.open(p).convert("RGB") for p in frames]))
    torch.testing.assert_close(inputs.grid[0], alone.grid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs.grid[1], alone.grid[[2, 2, 0]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs.pooled[0], alone.pooled, atol=1e-5, rtol=1e-5)
    # single images still come without a frame axis
    image = Sample("i", (Turn("user", "<image>"),), image=frames[1])
    single = table([image])
    assert single.num_frames is None and single.grid.shape == (1, 16, 32)


def test_cached_features_check_frame_sizes_even_when_cached(tmp_path, encoder):
    frames = frames_in(tmp_path, sizes=[(56, 56), (56, 56), (60, 56)])
    table = CachedFeatures(encoder)
    table([clip_sample("ok", frames[:2], "d.json")])  # the first two frames' features are now in the table
    with pytest.raises(DataError) as error:
        table.precompute([clip_sample("bad", [frames[0], frames[2]], "d.json")])
    assert (error.value.file, error.value.record, error.value.field) == ("d.json", "bad", "image[1]")
    with pytest.raises(DataError, match="the same size"):
        table([clip_sample("bad", [frames[1], frames[2]], "d.json")])
