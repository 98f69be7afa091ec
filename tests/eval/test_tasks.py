"""The generative tasks as pure functions of the answers: known answers give known scores, each answer is
scored against its own item, and bad input fails before any generation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.datasets.coco import read_coco_captions
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.caption import evaluate_captions
from vlbridge.eval.llava_data import evaluate_llava_samples
from vlbridge.eval.multiple_choice import evaluate_multiple_choice
from vlbridge.eval.tasks import TASKS, get_task
from vlbridge.eval.vqa import evaluate_vqa
from vlbridge.metrics.caption import caption_scores


def never_called(samples):
    raise AssertionError("generation must not start on bad input")


@pytest.fixture(scope="module")
def captions(shapes):
    return read_coco_captions(shapes / "coco" / "captions_train.json", shapes / "images")


@pytest.fixture(scope="module")
def questions(shapes, manifest):
    files = manifest["files"]["vqav2"]
    return read_vqav2(shapes / files["questions"]["train"], shapes / files["annotations"]["train"],
                      image_dir=shapes / files["image_dir"], image_pattern=files["image_file_pattern"])


def test_registry_lists_the_tasks():
    assert sorted(TASKS) == ["caption", "multiple-choice", "retrieval", "vqa"]
    with pytest.raises(ConfigError, match=r"unknown evaluation task 'captions'; valid: \['caption'"):
        get_task("captions")


def test_caption_scores_are_the_toolkit_scores_of_each_images_own_prediction(captions):
    seen = []

    def answer(prompts):
        seen.extend(prompts)
        # even images get their own first reference, odd ones a wrong caption
        return [p.meta["answers"][0] if p.meta["image_id"] % 2 == 0 else "a dog on a sofa" for p in prompts]

    result = evaluate_captions(answer, captions)
    predictions = {s.meta["image_id"]: s.meta["answers"][0] if s.meta["image_id"] % 2 == 0 else "a dog on a sofa"
                   for s in captions}
    expected = caption_scores({s.meta["image_id"]: s.meta["answers"] for s in captions}, predictions)
    assert {k: result.scores[k] for k in expected["corpus"]} == expected["corpus"]
    assert result.scores["num_images"] == len(captions) == len(seen)
    assert [item["image_id"] for item in result.predictions] == [s.meta["image_id"] for s in captions]
    for item in result.predictions:
        assert item["prediction"] == predictions[item["image_id"]]
        assert item["scores"] == expected["per_image"][item["image_id"]]
    assert result.official == predictions and result.official_format == "caption"
    assert all(p.turns[0].text == f"{IMAGE_PLACEHOLDER}\n{result.prompt}" and len(p.turns) == 1 and p.image.is_file()
               for p in seen)


def test_custom_caption_prompt_is_used_and_recorded(captions):
    seen = []
    result = evaluate_captions(lambda ps: seen.extend(ps) or ["a circle"] * len(ps), captions[:3], "a photo of")
    assert result.prompt == "a photo of" and seen[0].turns[0].text == f"{IMAGE_PLACEHOLDER}\na photo of"


def test_vqa_accuracy_counts_exactly_the_right_answers(questions):
    right = {s.meta["question_id"] for s in questions[::3]}

    def answer(prompts):
        return [p.meta["answers"][0] if p.meta["question_id"] in right else "purple elephant" for p in prompts]

    result = evaluate_vqa(answer, questions)
    assert result.scores["overall_unrounded"] == pytest.approx(100 * len(right) / len(questions))
    assert result.scores["num_questions"] == len(questions)
    assert result.metric["version"] == "current"
    for item in result.predictions:
        assert item["accuracy"] == (100.0 if item["question_id"] in right else 0.0)
        assert result.official[item["question_id"]] == item["prediction"]
    assert evaluate_vqa(answer, questions, version="2017").metric["version"] == "2017"


def test_vqa_errors_come_before_generation(questions, shapes, manifest):
    with pytest.raises(ConfigError, match=r"unknown VQA evaluation version '2019'"):
        evaluate_vqa(never_called, questions, version="2019")
    unanswered = read_vqav2(shapes / manifest["files"]["vqav2"]["questions"]["train"], image_dir=shapes / "images",
                            image_pattern=manifest["files"]["vqav2"]["image_file_pattern"])
    with pytest.raises(DataError, match=r"field 'meta.answers': no human answers: VQA scoring needs the annotations"):
        evaluate_vqa(never_called, unanswered)
    coco_named = read_vqav2(shapes / manifest["files"]["vqav2"]["questions"]["train"],
                            shapes / manifest["files"]["vqav2"]["annotations"]["train"], image_dir=shapes / "images")
    with pytest.raises(DataError, match=r"'image': image file .*COCO_val2014_000000000000.jpg not found \(40 of 40"):
        evaluate_vqa(never_called, coco_named)
    with pytest.raises(DataError, match="question id .* appears twice"):
        evaluate_vqa(never_called, [questions[0], questions[0]])
    with pytest.raises(DataError, match="no questions to evaluate"):
        evaluate_vqa(never_called, [])


def test_answer_function_must_give_one_string_per_prompt(questions):
    with pytest.raises(ValueError, match="4 prompts but 3 answers"):
        evaluate_vqa(lambda ps: ["yes"] * (len(ps) - 1), questions[:4])


def test_multiple_choice_parses_both_conventions_with_scienceqa_breakdown(shapes):
    samples = read_scienceqa(shapes / "scienceqa", "train")
    letters = "ABCDE"
    replies = {}
    for k, s in enumerate(samples):
        right, wrong = s.meta["answer_index"], (s.meta["answer_index"] + 1) % len(s.meta["choices"])
        replies[s.id] = [f"The answer is {letters[right]}.", letters[right], f"({letters[wrong]})", "not sure"][k % 4]
    result = evaluate_multiple_choice(lambda ps: [replies[p.id] for p in ps], samples)
    correct = sum(1 for k in range(len(samples)) if k % 4 < 2)
    assert result.scores["accuracy"]["average"] == pytest.approx(100 * correct / len(samples))
    assert result.scores["accuracy"]["IMG"] == result.scores["accuracy"]["average"]  # every Shapes problem has one
    assert result.scores["num_unparsed"] == sum(1 for k in range(len(samples)) if k % 4 == 3)
    for k, item in enumerate(result.predictions):
        assert item["prediction"] == replies[item["id"]] and item["correct"] == (k % 4 < 2)
        assert item["choice"] == (None if k % 4 == 3 else item["answer_index"] if k % 4 < 2
                                  else (item["answer_index"] + 1) % len(samples[k].meta["choices"]))
    letter_only = evaluate_multiple_choice(lambda ps: [replies[p.id] for p in ps], samples, convention="letter")
    assert letter_only.scores["accuracy"]["average"] < result.scores["accuracy"]["average"]
    with pytest.raises(ConfigError, match="unknown answer convention 'last'"):
        evaluate_multiple_choice(never_called, samples, convention="last")
    broken = dataclasses.replace(samples[0], meta={**samples[0].meta, "answer_index": 7})
    with pytest.raises(DataError, match=r"field 'meta.answer_index': answer_index 7 is not an index"):
        evaluate_multiple_choice(never_called, [broken])


def test_multiple_choice_by_a_choose_function_scores_the_options_it_picks(shapes):
    samples = read_scienceqa(shapes / "scienceqa", "train")
    picks = {s.id: (s.meta["answer_index"] if k % 3 else (s.meta["answer_index"] + 1) % len(s.meta["choices"]))
             for k, s in enumerate(samples)}
    asked = []

    def choose(prompts):
        asked.extend(prompts)
        return [picks[p.id] for p in prompts]

    result = evaluate_multiple_choice(None, samples, choose=choose, chosen_by="likelihood")
    assert result.metric["chosen_by"] == "likelihood" and result.metric["convention"] is None
    correct = sum(1 for k in range(len(samples)) if k % 3)
    assert result.scores["accuracy"]["average"] == pytest.approx(100 * correct / len(samples))
    assert result.scores["num_unparsed"] == 0
    for s, item in zip(samples, result.predictions):
        assert item["choice"] == picks[s.id] and item["prediction"] == s.meta["choices"][picks[s.id]]
    # what is asked is the task's prompt (the options written out), with the options to rank in meta
    assert [p.id for p in asked] == [s.id for s in samples]
    assert "Options: (A)" in asked[0].prompt_turns[-1].text and asked[0].answer is None
    with pytest.raises(ValueError, match="exactly one of answer"):
        evaluate_multiple_choice(never_called, samples, choose=choose)
    with pytest.raises(ValueError, match=r"chose 9, not an index into its \d options"):
        evaluate_multiple_choice(None, samples[:2], choose=lambda ps: [9] * len(ps))
    with pytest.raises(ValueError, match="2 prompts but 1 choices"):
        evaluate_multiple_choice(None, samples[:2], choose=lambda ps: [0])


def test_llava_file_mc_samples_by_a_choose_function_the_others_generated(shapes):
    samples = [s for task in ("short", "mc") for s in read_llava_json(shapes / f"train_{task}.json")]
    mc = [s for s in samples if s.meta["task"] == "mc"]

    def answer(prompts):
        assert all(p.meta["task"] == "short" for p in prompts)  # mc samples are not generated
        return [p.answer for p in prompts]

    def first(prompts):  # always the first option
        return [0] * len(prompts)

    result = evaluate_llava_samples(answer, samples, choose=first, chosen_by="likelihood")
    assert result.scores["short"]["exact_match"] == 100.0
    expected = 100 * sum(s.meta["answer_index"] == 0 for s in mc) / len(mc)
    headline = {k: v for k, v in result.scores["mc"].items() if k != "by_type"}  # by_type: test_by_type.py
    assert headline == {"accuracy": pytest.approx(expected), "unparsed": 0.0, "count": len(mc)}
    assert "likelihood" in result.metric["mc"]
    by_id = {item["id"]: item["prediction"] for item in result.predictions}
    assert all(by_id[s.id] == s.meta["choices"][0] for s in mc)
    assert [item["id"] for item in result.predictions] == [s.id for s in samples]


def test_llava_file_scores_each_task_its_own_way(shapes):
    samples = [s for task in ("short", "mc", "caption") for s in read_llava_json(shapes / f"train_{task}.json")]
    result = evaluate_llava_samples(lambda ps: [p.answer for p in ps], samples)
    assert result.scores["short"]["exact_match"] == 100.0 and result.scores["short"]["vqa_accuracy"] == 100.0
    assert result.scores["mc"]["accuracy"] == 100.0
    captions = [s for s in samples if s.meta["task"] == "caption"]
    expected = caption_scores({s.id: s.meta["answers"] for s in captions}, {s.id: s.answer for s in captions})
    assert {k: result.scores["caption"][k] for k in expected["corpus"]} == expected["corpus"]
    assert [item["id"] for item in result.predictions] == [s.id for s in samples]
    odd = dataclasses.replace(samples[0], meta={**samples[0].meta, "task": "essay"})
    with pytest.raises(DataError, match=r"field 'meta.task': unknown task 'essay'"):
        evaluate_llava_samples(never_called, [odd])


def test_generated_mc_answers_may_name_the_option_by_its_text(shapes):
    samples = read_llava_json(shapes / "train_mc-text.json")
    right = [s.meta["choices"][s.meta["answer_index"]] for s in samples]
    as_text = evaluate_llava_samples(lambda ps: [f" {r.upper()}." for r in right], samples)
    assert as_text.scores["mc"]["accuracy"] == 100.0 and as_text.scores["mc"]["unparsed"] == 0.0
    letters = evaluate_llava_samples(lambda ps: ["ABCDE"[s.meta["answer_index"]] for s in ps], samples)
    assert letters.scores["mc"]["accuracy"] == 100.0
    unknown = evaluate_llava_samples(lambda ps: ["a purple elephant"] * len(ps), samples)
    headline = {k: v for k, v in unknown.scores["mc"].items() if k != "by_type"}  # by_type: test_by_type.py
    assert headline == {"accuracy": 0.0, "unparsed": 100.0, "count": len(samples)}


def test_llava_file_with_a_missing_image_fails_before_generation(shapes, tmp_path):
    records = json.loads((shapes / "train_short.json").read_text())[:3]
    records[1]["image"] = "images/missing.png"
    path = tmp_path / "short.json"
    path.write_text(json.dumps(records))
    samples = read_llava_json(path, image_root=shapes)
    with pytest.raises(DataError, match=rf"record '{records[1]['id']}', field 'image': .*missing.png not found"):
        evaluate_llava_samples(never_called, samples)
