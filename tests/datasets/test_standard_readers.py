"""Readers of COCO captions, Karpathy splits, VQAv2 and ScienceQA, and the result-format writers,
on tiny files in the official layouts; bad input gets errors naming file, record and field."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.datasets.coco import coco_caption_references, read_coco_captions, read_karpathy_split
from vlbridge.datasets.results import (read_caption_results, read_vqa_results, write_caption_results,
                                       write_vqa_results)
from vlbridge.datasets.scienceqa import read_scienceqa, scienceqa_ground_truth
from vlbridge.datasets.vqav2 import read_vqav2, vqav2_ground_truth
from vlbridge.errors import DataError


def _dump(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def coco_file(tmp_path):
    return _dump(tmp_path / "captions.json", {
        "images": [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"}, {"id": 7, "file_name": "b.jpg"}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "A cat."}, {"id": 2, "image_id": 42, "caption": "A dog."},
                        {"id": 3, "image_id": 42, "caption": "A brown dog runs."}],
    })


def test_coco_captions(coco_file, tmp_path):
    refs, names = coco_caption_references(coco_file)
    assert list(refs) == [42, 7] and refs[42] == ["A dog.", "A brown dog runs."]
    samples = read_coco_captions(coco_file, image_dir=tmp_path / "val2014")
    first = samples[0]
    assert first.id == "42" and first.meta["task"] == "caption" and first.meta["answers"] == refs[42]
    assert first.image == tmp_path / "val2014" / "COCO_val2014_000000000042.jpg"
    assert IMAGE_PLACEHOLDER in first.turns[0].text and first.answer == "A dog."


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][1].pop("caption"), r"annotations\[1\].*field 'caption': missing"),
    (lambda d: d["annotations"][0].update(image_id=99), r"annotations\[0\].*'image_id'.*not in 'images'"),
    (lambda d: d["annotations"][0].update(caption=5), r"annotations\[0\].*'caption'.*must be str"),
    (lambda d: d["images"].append({"id": 42}), r"duplicate image id"),
    (lambda d: d["annotations"].pop(0), r"1 images have no caption \(first: \[7\]\)"),
    (lambda d: d.pop("images"), r"field 'images': missing"),
])
def test_coco_errors_name_record_and_field(coco_file, mutate, message):
    data = json.loads(coco_file.read_text())
    mutate(data)
    _dump(coco_file, data)
    with pytest.raises(DataError, match=message) as error:
        coco_caption_references(coco_file)
    assert str(coco_file) in str(error.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="not valid JSON"):
        coco_caption_references(tmp_path / "bad.json")
    with pytest.raises(DataError, match="file not found"):
        coco_caption_references(tmp_path / "nope.json")


def test_karpathy_split(tmp_path):
    split_file = _dump(tmp_path / "dataset_coco.json", {"images": [
        {"filepath": "val2014", "filename": "x.jpg", "split": "test", "cocoid": 5,
         "sentences": [{"raw": "A man.", "tokens": ["a", "man"]}, {"raw": "A person."}]},
        {"filepath": "train2014", "filename": "y.jpg", "split": "train", "cocoid": 6, "sentences": [{"raw": "B."}]},
        {"filepath": "val2014", "filename": "z.jpg", "split": "restval", "cocoid": 8, "sentences": [{"raw": "C."}]},
    ]})
    test = read_karpathy_split(split_file, "test", image_root=tmp_path)
    assert [s.id for s in test] == ["5"] and test[0].meta["answers"] == ["A man.", "A person."]
    assert test[0].image == tmp_path / "val2014" / "x.jpg"
    assert [s.id for s in read_karpathy_split(split_file, "restval")] == ["8"]
    with pytest.raises(DataError, match="unknown split 'dev'"):
        read_karpathy_split(split_file, "dev")


@pytest.fixture
def vqa_files(tmp_path):
    questions = {"questions": [{"question_id": 11, "image_id": 3, "question": "What color?"},
                               {"question_id": 12, "image_id": 3, "question": "How many?"}]}
    annotations = {"annotations": [
        {"question_id": 11, "image_id": 3, "question_type": "what color", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": [{"answer": "red", "answer_id": i} for i in range(10)]},
        {"question_id": 12, "image_id": 3, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": [{"answer": "2", "answer_id": i} for i in range(10)]},
    ]}
    return _dump(tmp_path / "q.json", questions), _dump(tmp_path / "a.json", annotations)


def test_vqav2(vqa_files, tmp_path):
    q_file, a_file = vqa_files
    samples = read_vqav2(q_file, a_file, image_dir=tmp_path)
    s = samples[0]
    assert s.id == "11" and s.meta["answers"] == ["red"] * 10 and s.meta["question_type"] == "what color"
    assert s.meta["answer_type"] == "other" and s.meta["question_id"] == 11 and s.answer == "red"
    assert s.image == tmp_path / "COCO_val2014_000000000003.jpg" and IMAGE_PLACEHOLDER in s.turns[0].text
    assert read_vqav2(q_file)[1].answer is None  # test split: no annotations
    gt = vqav2_ground_truth(q_file, a_file)
    assert gt[12].answers == ("2",) * 10 and gt[12].answer_type == "number"


def test_vqav2_errors(vqa_files):
    q_file, a_file = vqa_files
    data = json.loads(a_file.read_text())
    data["annotations"][1]["answers"] = data["annotations"][1]["answers"][:9]
    _dump(a_file, data)
    with pytest.raises(DataError, match=r"question_id 12.*'answers'.*expected 10 human answers, found 9"):
        vqav2_ground_truth(q_file, a_file)
    data["annotations"].pop(1)
    _dump(a_file, data)
    with pytest.raises(DataError, match=r"1 question ids without annotation \(first: \[12\]\)"):
        vqav2_ground_truth(q_file, a_file)


@pytest.fixture
def scienceqa_root(tmp_path):
    problems = {
        "100": {"question": "Which is a mammal?", "choices": ["shark", "whale"], "answer": 1, "hint": "",
                "image": "image.png", "subject": "natural science", "grade": "grade4", "split": "test"},
        "101": {"question": "Which word fits?", "choices": ["a", "b", "c"], "answer": 0, "hint": "Read it.",
                "image": None, "subject": "language science", "grade": "grade9", "split": "test"},
    }
    _dump(tmp_path / "problems.json", problems)
    _dump(tmp_path / "pid_splits.json", {"test": ["100", "101"], "train": []})
    _dump(tmp_path / "captions.json", {"captions": {"100": "A whale in the sea."}})
    (tmp_path / "images" / "test" / "100").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "test" / "100" / "image.png")
    return tmp_path


def test_scienceqa(scienceqa_root):
    samples = read_scienceqa(scienceqa_root, "test", use_captions=True)
    img, txt = samples
    assert img.image == scienceqa_root / "images" / "test" / "100" / "image.png"
    assert img.turns[0].text.startswith(IMAGE_PLACEHOLDER) and "Context: A whale in the sea." in img.turns[0].text
    assert img.answer == "The answer is B." and img.meta["answer_index"] == 1 and img.meta["has_image"]
    assert txt.image is None and IMAGE_PLACEHOLDER not in txt.turns[0].text
    assert txt.meta["has_text_context"] and txt.meta["context"] == "Read it." and txt.meta["choices"] == ["a", "b", "c"]
    gt = scienceqa_ground_truth(samples)
    assert gt["101"].subject == "language science" and gt["101"].grade == "grade9" and gt["100"].has_image


def test_scienceqa_errors(scienceqa_root):
    (scienceqa_root / "images" / "test" / "100" / "image.png").unlink()
    with pytest.raises(DataError, match=r"record '100'.*'image'.*does not exist"):
        read_scienceqa(scienceqa_root)
    assert read_scienceqa(scienceqa_root, require_images=False)[0].image is not None
    with pytest.raises(DataError, match="unknown split 'dev'"):
        read_scienceqa(scienceqa_root, "dev")
    problems = json.loads((scienceqa_root / "problems.json").read_text())
    problems["101"]["answer"] = 5
    _dump(scienceqa_root / "problems.json", problems)
    with pytest.raises(DataError, match=r"record '101'.*'answer'"):
        read_scienceqa(scienceqa_root, require_images=False)


def test_result_writers_round_trip_in_the_official_format(tmp_path):
    write_caption_results({42: "a dog", 7: "a cat"}, tmp_path / "caps.json")
    assert json.loads((tmp_path / "caps.json").read_text()) == [{"image_id": 42, "caption": "a dog"},
                                                                 {"image_id": 7, "caption": "a cat"}]
    assert read_caption_results(tmp_path / "caps.json") == {42: "a dog", 7: "a cat"}
    write_vqa_results({11: "red"}, tmp_path / "sub" / "vqa.json")
    assert json.loads((tmp_path / "sub" / "vqa.json").read_text()) == [{"question_id": 11, "answer": "red"}]
    assert read_vqa_results(tmp_path / "sub" / "vqa.json") == {11: "red"}


@pytest.mark.parametrize("records, message", [
    ([], "predictions file is empty"),
    ([{"question_id": 1}], r"record '\[0\] \(question_id 1\)', field 'answer': missing"),
    ([{"answer": "x"}], r"field 'question_id': missing"),
    ([{"question_id": "1", "answer": "x"}], r"'question_id'.*must be int"),
    ([{"question_id": 1, "answer": "x"}, {"question_id": 1, "answer": "y"}], "more than one prediction"),
    ({"question_id": 1}, "top level must be a JSON array"),
])
def test_result_reader_errors(tmp_path, records, message):
    with pytest.raises(DataError, match=message):
        read_vqa_results(_dump(tmp_path / "r.json", records))
