"""The built-in Shapes data, exported in the standard layouts, is read by the standard readers and
scored by the standard metrics (ground truth scored against itself gets full marks)."""

from __future__ import annotations

import pytest

from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import export_shapes
from vlbridge.datasets.coco import coco_caption_references, read_coco_captions, read_karpathy_split
from vlbridge.datasets.scienceqa import read_scienceqa, scienceqa_ground_truth
from vlbridge.datasets.vqav2 import read_vqav2, vqav2_ground_truth
from vlbridge.metrics.multiple_choice import mc_scores
from vlbridge.metrics.vqa import vqa_scores


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    export_shapes(generate_shapes(ShapesConfig(n=20, seed=3, image_size=56)), out, ["coco", "vqav2", "scienceqa"])
    return out


def test_coco_and_karpathy_files(exported):
    files = sorted((exported / "coco").glob("captions_*.json"))
    assert files
    samples = read_coco_captions(files[0], image_dir=exported / "images")
    assert samples and all(s.meta["answers"] and s.image.is_file() for s in samples)
    refs, _ = coco_caption_references(files[0])
    assert len(refs) == len(samples)
    test = read_karpathy_split(exported / "coco" / "dataset_coco.json", "test", image_root=exported / "coco")
    assert all(s.image is not None for s in test)


def test_vqav2_files_score_100_against_themselves(exported):
    questions = sorted((exported / "vqav2").glob("*questions.json"))[0]
    split = questions.name.split("_")[3]
    annotations = exported / "vqav2" / f"v2_shapes_{split}_annotations.json"
    samples = read_vqav2(questions, annotations)
    truth = vqav2_ground_truth(questions, annotations)
    # Shapes' 10 "human" answers are the true answer 10 times, which the assistant turn carries
    predictions = {s.meta["question_id"]: s.answer for s in samples}
    scores = vqa_scores(predictions, truth)
    assert scores.num_questions == len(samples) and scores.overall == 100.0
    wrong = {qid: answer + "x" for qid, answer in predictions.items()}
    assert vqa_scores(wrong, truth).overall == 0.0


def test_scienceqa_files(exported):
    samples = read_scienceqa(exported / "scienceqa", "test")
    assert samples and all(s.meta["task"] == "mc" for s in samples)
    truth = scienceqa_ground_truth(samples)
    scores = mc_scores({s.id: s.answer for s in samples}, truth)
    assert scores["accuracy"]["average"] == 100.0 and scores["num_unparsed"] == 0
