"""Shapes export: LLaVA, COCO (+ Karpathy), VQAv2 and ScienceQA files that read back consistently,
byte-identical for the same seed, and safe to regenerate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlbridge.data.images import load_image
from vlbridge.data.llava_json import read_llava_json
from vlbridge.data import shapes_export
from vlbridge.data.prompts import MC_INSTRUCTION, OPTION_TEXT_INSTRUCTION
from vlbridge.data.shapes_dataset import SPLITS, TASKS, ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import FORMATS, export_shapes, parse_formats
from vlbridge.errors import ConfigError, DataError


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    data = generate_shapes(ShapesConfig(n=30, seed=4))
    manifest = export_shapes(data, out)
    return out, data, manifest


def test_llava_files_read_back_with_their_images(exported):
    out, data, manifest = exported
    for split in SPLITS:
        for task in TASKS:
            path = out / manifest["files"]["llava"][f"{split}_{task}"]
            samples = read_llava_json(path, check_images=True)
            expected = data.samples(split, task, out / "images")
            assert [(s.id, s.turns, s.image, s.meta) for s in samples] == [(s.id, s.turns, s.image, s.meta)
                                                                           for s in expected]
            assert manifest["counts"][task][split] == len(samples)
    image = load_image(out / "images" / "shapes_000000.png")
    assert image.size == (224, 224)
    files = manifest["files"]
    assert (out / files["image_dir"] / files["image_file_pattern"].format(image_id=7)).is_file()


def test_mc_text_asks_the_mc_questions_for_the_options_text(exported):
    out, data, manifest = exported
    mc = data.samples("train", "mc", out / "images")
    text = read_llava_json(out / manifest["files"]["llava"]["train_mc-text"])
    assert [s.id for s in text] == [s.id for s in mc] and mc
    for letter, option in zip(mc, text):
        choice = letter.meta["choices"][letter.meta["answer_index"]]
        assert option.answer == choice and option.meta["answers"] == [choice]
        assert option.turns[0].text == letter.turns[0].text.replace(MC_INSTRUCTION, OPTION_TEXT_INSTRUCTION)
        assert option.meta["task"] == "mc"  # scored as multiple choice
        assert {k: v for k, v in option.meta.items() if k != "answers"} == \
            {k: v for k, v in letter.meta.items() if k != "answers"}


def test_manifest(exported):
    out, data, manifest = exported
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["generator"] == "vlbridge.shapes" and manifest["seed"] == 4 and manifest["n"] == 30
    assert manifest["counts"]["scenes"] == {"train": 24, "val": 3, "test": 3}
    assert manifest["majority_baselines"] == data.majority_baselines()
    assert manifest["formats"] == list(FORMATS)
    assert str(out) not in json.dumps(manifest)  # relative paths only: the folder can be moved


def test_coco_captions_and_karpathy(exported):
    out, data, manifest = exported
    karpathy = json.loads((out / manifest["files"]["coco"]["karpathy"]).read_text())
    assert karpathy["dataset"] == "coco" and len(karpathy["images"]) == 30
    sentence_ids = set()
    for split in SPLITS:
        coco = json.loads((out / manifest["files"]["coco"]["captions"][split]).read_text())
        items = data.split(split)
        assert [i["id"] for i in coco["images"]] == [s.index for s in items]
        for image in coco["images"]:
            assert (out / manifest["files"]["coco"]["image_dir"] / image["file_name"]).is_file()
            assert image["width"] == image["height"] == 224
        by_image = {}
        for annotation in coco["annotations"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation["caption"])
        assert by_image == {s.index: list(s.captions) for s in items}
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        for entry, item in zip([e for e in karpathy["images"] if e["split"] == split], items):
            assert (out / entry["filepath"] / entry["filename"]).is_file()
            assert entry["cocoid"] == entry["imgid"] == item.index
            assert [s["raw"] for s in entry["sentences"]] == list(item.captions)
            assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
            first = entry["sentences"][0]["tokens"]
            assert first[0] == "a" and all(t.isalnum() and t == t.lower() for t in first)
            sentence_ids.update(entry["sentids"])
    assert len(sentence_ids) == 30 * 5


def test_vqav2(exported):
    out, data, manifest = exported
    for split in SPLITS:
        questions = json.loads((out / manifest["files"]["vqav2"]["questions"][split]).read_text())
        annotations = json.loads((out / manifest["files"]["vqav2"]["annotations"][split]).read_text())
        assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == split
        expected = [(s.index, q) for s in data.split(split) for q in s.short]
        assert len(questions["questions"]) == len(annotations["annotations"]) == len(expected)
        for question, annotation, (image_id, q) in zip(questions["questions"], annotations["annotations"], expected):
            assert question["question_id"] == annotation["question_id"]
            assert question["image_id"] == annotation["image_id"] == image_id
            assert question["question"] == q.text and annotation["multiple_choice_answer"] == q.answer
            assert annotation["question_type"] == q.question_type and annotation["answer_type"] == q.answer_type
            assert annotation["answers"] == [{"answer": q.answer, "answer_confidence": "yes", "answer_id": i}
                                             for i in range(1, 11)]
            files = manifest["files"]["vqav2"]
            assert (out / files["image_dir"] / files["image_file_pattern"].format(image_id=image_id)).is_file()
        ids = [q["question_id"] for q in questions["questions"]]
        assert len(set(ids)) == len(ids)


def test_scienceqa(exported):
    out, data, manifest = exported
    problems = json.loads((out / "scienceqa/problems.json").read_text())
    pid_splits = json.loads((out / "scienceqa/pid_splits.json").read_text())
    assert pid_splits["trainval"] == pid_splits["train"] + pid_splits["val"]
    for split in SPLITS:
        mcs = [(f"{s.scene.id}_mc{k}", s, m) for s in data.split(split) for k, m in enumerate(s.mc)]
        assert pid_splits[split] == [pid for pid, _, _ in mcs]
        for pid, item, mc in mcs:
            problem = problems[pid]
            assert problem["question"] == mc.question.text and problem["choices"] == list(mc.choices)
            assert problem["answer"] == mc.answer_index and problem["split"] == split
            assert problem["image"] == "image.png" and problem["hint"] == ""
            for key in ("task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"):
                assert isinstance(problem[key], str)
            image = out / "scienceqa/images" / split / pid / "image.png"
            assert image.read_bytes() == (out / "images" / f"{item.scene.id}.png").read_bytes()


def test_same_seed_gives_byte_identical_files(exported, tmp_path, monkeypatch):
    out, _, _ = exported
    again = tmp_path / "again"
    monkeypatch.setattr(shapes_export, "PARALLEL_MIN_SCENES", 0)
    export_shapes(generate_shapes(ShapesConfig(n=30, seed=4)), again, workers=2)  # also: any number of workers
    first, second = files_of(out), files_of(again)
    assert first.keys() == second.keys() and first == second
    other = tmp_path / "other"
    export_shapes(generate_shapes(ShapesConfig(n=30, seed=5)), other)
    assert files_of(other)["train_short.json"] != first["train_short.json"]


def test_regenerating_replaces_an_earlier_export_only(tmp_path):
    out = tmp_path / "out"
    export_shapes(generate_shapes(ShapesConfig(n=12, seed=0)), out)
    (out / "notes.txt").write_text("mine")
    export_shapes(generate_shapes(ShapesConfig(n=6, seed=0)), out, formats=["llava"])
    assert len(list((out / "images").iterdir())) == 6  # no stale images from the bigger run
    assert not (out / "coco").exists() and not (out / "scienceqa").exists()
    assert (out / "notes.txt").read_text() == "mine"  # never touches files it did not write
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.json").write_text("{}")
    with pytest.raises(DataError, match="not empty"):
        export_shapes(generate_shapes(ShapesConfig(n=3)), foreign)
    assert (foreign / "keep.json").exists()


def test_formats():
    assert parse_formats("llava, coco") == ("llava", "coco")
    assert parse_formats(["vqav2", "vqav2"]) == ("vqav2",)
    with pytest.raises(ConfigError, match="valid"):
        parse_formats("llava,yaml")
    with pytest.raises(ConfigError):
        parse_formats("")


def test_the_standard_readers_load_the_exports(exported):
    from vlbridge.datasets.coco import read_coco_captions, read_karpathy_split
    from vlbridge.datasets.scienceqa import read_scienceqa
    from vlbridge.datasets.vqav2 import read_vqav2

    out, data, manifest = exported
    files = manifest["files"]
    for split in SPLITS:
        items = data.split(split)
        coco = read_coco_captions(out / files["coco"]["captions"][split], out / files["coco"]["image_dir"])
        karpathy = read_karpathy_split(out / files["coco"]["karpathy"], split, out / files["coco"]["karpathy_image_root"])
        for samples in (coco, karpathy):
            assert sorted(s.meta["answers"] for s in samples) == sorted(list(i.captions) for i in items)
            assert all(s.image.is_file() for s in samples)
        vqa = read_vqav2(out / files["vqav2"]["questions"][split], out / files["vqav2"]["annotations"][split])
        assert [(s.meta["question"], s.answer) for s in vqa] == [(q.text, q.answer) for i in items for q in i.short]
        science = read_scienceqa(out / "scienceqa", split)
        assert [(s.id, s.meta["choices"], s.meta["answer_index"]) for s in science] == [
            (f"{i.scene.id}_mc{k}", list(m.choices), m.answer_index) for i in items for k, m in enumerate(i.mc)]
        assert all(s.image.is_file() for s in science)
