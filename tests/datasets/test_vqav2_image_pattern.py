"""The VQAv2 reader's image file pattern: COCO's naming by default, any ``{image_id}`` pattern on request
(the Shapes export names its images ``shapes_{image_id:06d}.png`` and records that in its manifest)."""

from __future__ import annotations

import json

import pytest

from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import export_shapes
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.errors import ConfigError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    export_shapes(generate_shapes(ShapesConfig(n=6, seed=2, image_size=32)), out, ["vqav2"])
    return out


def test_manifest_pattern_finds_every_shapes_image(exported):
    files = json.loads((exported / "manifest.json").read_text())["files"]["vqav2"]
    samples = read_vqav2(exported / files["questions"]["train"], exported / files["annotations"]["train"],
                         image_dir=exported / files["image_dir"], image_pattern=files["image_file_pattern"])
    assert samples and all(s.image.is_file() for s in samples)
    assert {s.image.name for s in samples} == {f"shapes_{s.meta['image_id']:06d}.png" for s in samples}


def test_default_is_coco_naming_with_the_prefix(exported):
    questions = next((exported / "vqav2").glob("*train_questions.json"))
    sample = read_vqav2(questions, image_dir="/data", image_prefix="COCO_test2015_")[0]
    assert sample.image.name == f"COCO_test2015_{sample.meta['image_id']:012d}.jpg"


@pytest.mark.parametrize("pattern", ["image.png", "{id}.png", "{image_id:q}.png", "{image_id}_{0}.png"])
def test_a_pattern_without_exactly_image_id_is_rejected(exported, pattern):
    questions = next((exported / "vqav2").glob("*train_questions.json"))
    with pytest.raises(ConfigError, match=r"must contain \{image_id\}"):
        read_vqav2(questions, image_dir=exported, image_pattern=pattern)
