"""Image paths that leave the image folder (absolute, or climbing out with '..') are refused by default, naming
file, record and field, in every reader that resolves a data file's image paths; allow_outside_images accepts
them (recipe data.allow_outside_images, vlbridge data check --allow-outside-images)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlbridge.data.image_paths import leaves_folder
from vlbridge.data.llava_json import parse_record, read_llava_json
from vlbridge.datasets.coco import read_coco_captions, read_karpathy_split
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.datasets.training_sets import read_training_set
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.errors import ConfigError, DataError
from vlbridge.recipe import load_recipe
from vlbridge_cli.main import main

OUTSIDE = ["../secret.png", "/etc/passwd", "a/../../secret.png", "..", "./../secret.png", "a/b/../../../x.png"]
INSIDE = ["x.png", "a/../x.png", "./x.png", "a/b/../x.png", "..x.png", "a/..b/x.png", "~/x.png"]


@pytest.mark.parametrize("path", OUTSIDE)
def test_paths_that_leave_the_folder(path):
    assert leaves_folder(path)


@pytest.mark.parametrize("path", INSIDE)
def test_paths_that_stay_inside(path):
    assert not leaves_folder(path)


def record(image, id_="r1"):
    return {"id": id_, "image": image,
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]}


@pytest.fixture
def world(tmp_path):
    """data/ (the image folder, with x.png) beside secret.png, which a data file must not reach by default."""
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (4, 4), (200, 0, 0)).save(root / "x.png")
    Image.new("RGB", (4, 4), (0, 200, 0)).save(tmp_path / "secret.png")
    return tmp_path, root


@pytest.mark.parametrize("image", ["../secret.png", "/etc/passwd", "sub/../../secret.png"])
def test_llava_record_refuses_an_image_outside_naming_file_record_and_field(world, image):
    _, root = world
    with pytest.raises(DataError, match=r"file f\.json, record 'r1', field 'image': image path .* leaves the image "
                                        r"folder .*data\.allow_outside_images=true"):
        parse_record(record(image), index=0, file="f.json", image_root=root)


def test_clip_frame_outside_is_refused_naming_the_frame(world):
    tmp, root = world
    with pytest.raises(DataError, match=r"record 'r1', field 'image\[1\]': image path '\.\./secret\.png' leaves"):
        parse_record(record(["x.png", "../secret.png", "x.png"]), index=0, file="f.json", image_root=root)
    with pytest.raises(DataError, match=r"field 'image\[0\]'"):
        parse_record(record([str(tmp / "secret.png")]), index=0, file="f.json", image_root=root)


def test_allow_outside_images_accepts_them(world):
    tmp, root = world
    single = parse_record(record("../secret.png"), index=0, file="f.json", image_root=root, allow_outside_images=True)
    assert single.image == root / "../secret.png" and single.image.resolve() == tmp / "secret.png"
    clip = parse_record(record(["x.png", str(tmp / "secret.png")]), index=0, file="f.json", image_root=root,
                        allow_outside_images=True)
    assert clip.frames == (root / "x.png", tmp / "secret.png")


def test_an_inside_path_through_a_subfolder_is_accepted(world):
    _, root = world
    assert parse_record(record("sub/../x.png"), index=0, file="f.json", image_root=root).image == root / "sub/../x.png"


def test_a_nul_character_is_a_bad_record_even_when_allowed(world):
    _, root = world
    with pytest.raises(DataError, match=r"field 'image': image path .* holds a NUL character"):
        parse_record(record("x\0.png"), index=0, file="f.json", image_root=root, allow_outside_images=True)


def test_reader_skips_outside_records_and_lists_them(world):
    tmp, root = world
    path = root / "train.json"
    path.write_text(json.dumps([record("x.png", "ok"), record("../secret.png", "up"),
                                record(["x.png", "/etc/passwd"], "clip"), record("x.png", "ok2")]))
    kept = read_llava_json(path, check_images=True, on_error="skip")
    assert [s.id for s in kept] == ["ok", "ok2"]
    assert [(s.index, s.id, s.file) for s in kept.skipped] == [(1, "up", str(path)), (2, "clip", str(path))]
    assert "field 'image[1]'" in kept.skipped[1].message
    with pytest.raises(DataError, match=r"record 'up', field 'image'"):
        read_llava_json(path)
    assert read_llava_json(path, allow_outside_images=True).skipped == []
    opened = read_llava_json(path, allow_outside_images=True, check_images=True, on_error="skip")
    assert [s.id for s in opened] == ["ok", "up", "ok2"]  # allowed, then /etc/passwd fails as an image
    assert "field 'image[1]': image /etc/passwd: cannot read image" in opened.skipped[0].message


def test_recipe_option_reaches_the_training_reader(world):
    tmp, root = world
    path = root / "train.json"
    path.write_text(json.dumps([record("x.png", "ok"), record("../secret.png", "up")]))
    common = [f"data.train={path}", f"data.val={path}", f"data.image_root={root}"]
    assert load_recipe(None, common).data.allow_outside_images is False
    with pytest.raises(DataError, match=r"record 'up', field 'image': image path '\.\./secret\.png' leaves"):
        read_training_set(load_recipe(None, common).data, "train")
    skipped = read_training_set(load_recipe(None, [*common, "data.on_bad_record=skip"]).data, "train").skipped
    assert [s.id for s in skipped] == ["up"]
    allowed = read_training_set(load_recipe(None, [*common, "data.allow_outside_images=true"]).data, "train")
    assert [s.id for s in allowed] == ["ok", "up"]


def test_data_check_refuses_then_allows(world, capsys):
    _, root = world
    path = root / "train.json"
    path.write_text(json.dumps([record("x.png", "ok"), record("../secret.png", "up")]))
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "1 valid records, 1 bad" in out and "record 'up', field 'image'" in out and "leaves the image folder" in out
    assert main(["data", "check", str(path), "--allow-outside-images"]) == 0
    assert "2 valid records, 0 bad" in capsys.readouterr().out


@pytest.fixture
def scienceqa_root(tmp_path):
    problems = {"100": {"question": "Which?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": "image.png"},
                "101": {"question": "Which?", "choices": ["a", "b"], "answer": 0, "hint": "",
                        "image": "../101/image.png"},
                "102": {"question": "Which?", "choices": ["a", "b"], "answer": 0, "hint": "",
                        "image": "../../../secret.png"}}
    (tmp_path / "problems.json").write_text(json.dumps(problems))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["100", "101", "102"]}))
    for pid in problems:
        (tmp_path / "images" / "test" / pid).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / "test" / pid / "image.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    return tmp_path


def test_scienceqa_image_must_stay_in_its_problem_folder(scienceqa_root):
    with pytest.raises(DataError, match=r"problems\.json, record '101', field 'image': image path '\.\./101/image"):
        read_scienceqa(scienceqa_root)
    kept = read_scienceqa(scienceqa_root, on_error="skip")
    assert [s.id for s in kept] == ["100"]
    assert [(s.id, s.where) for s in kept.skipped] == [("101", "test[1]"), ("102", "test[2]")]
    allowed = read_scienceqa(scienceqa_root, allow_outside_images=True)
    assert allowed[2].image.resolve() == scienceqa_root / "secret.png"
    assert [s.position for s in allowed] == ["test[0]", "test[1]", "test[2]"]


def test_coco_and_karpathy_refuse_file_names_outside(tmp_path):
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "../b.jpg"}],
                                "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}]}))
    with pytest.raises(DataError, match=r"captions\.json, record 'images\[1\] id 2', field 'file_name': image path"):
        read_coco_captions(coco, image_dir=tmp_path / "val")
    assert read_coco_captions(coco, image_dir=tmp_path / "val", allow_outside_images=True)[1].image == (
        tmp_path / "val" / "../b.jpg")
    assert [s.position for s in read_coco_captions(coco)] == [0, 1]  # no image folder: no paths to check
    karpathy = tmp_path / "dataset_coco.json"
    images = [{"split": "test", "cocoid": 1, "filepath": "val2014", "filename": "a.jpg", "sentences": [{"raw": "x"}]},
              {"split": "test", "cocoid": 2, "filepath": "/etc", "filename": "passwd", "sentences": [{"raw": "y"}]}]
    karpathy.write_text(json.dumps({"images": images}))
    with pytest.raises(DataError, match=r"record 'images\[1\]', field 'filepath/filename': image path '/etc/passwd'"):
        read_karpathy_split(karpathy, image_root=tmp_path)
    samples = read_karpathy_split(karpathy, image_root=tmp_path, allow_outside_images=True)
    assert samples[0].image == tmp_path / "val2014" / "a.jpg" and str(samples[1].image) == "/etc/passwd"


def test_vqav2_pattern_outside_is_refused(tmp_path):
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"questions": [{"question_id": 5, "question": "What?", "image_id": 3}]}))
    with pytest.raises(ConfigError, match=r"pattern '\.\./img_\{image_id\}\.png' leaves the image folder"):
        read_vqav2(questions, image_dir=tmp_path, image_pattern="../img_{image_id}.png")
    sample, = read_vqav2(questions, image_dir=tmp_path, image_pattern="../img_{image_id}.png",
                         allow_outside_images=True)
    assert sample.image == tmp_path / "../img_3.png" and sample.position == 0
