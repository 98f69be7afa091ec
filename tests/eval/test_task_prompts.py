"""Task prompts: the defaults are exactly the prompts the readers put into training samples of the same
data, and templates are checked before any generation."""

from __future__ import annotations

import pytest

from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.datasets.coco import read_coco_captions
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.errors import ConfigError
from vlbridge.eval.task_prompts import TASK_PROMPTS, check_template, render_prompt
from vlbridge.prompts.scienceqa import context_text, options_text


def test_caption_prompt_is_the_coco_readers(shapes):
    sample = read_coco_captions(shapes / "coco" / "captions_train.json", shapes / "images")[0]
    assert render_prompt("caption", TASK_PROMPTS["caption"], has_image=True) == sample.turns[0].text


def test_vqa_prompt_is_the_vqav2_readers(shapes, manifest):
    files = manifest["files"]["vqav2"]
    for sample in read_vqav2(shapes / files["questions"]["train"]):
        assert render_prompt("vqa", TASK_PROMPTS["vqa"], True, question=sample.meta["question"]) == sample.turns[0].text


def test_multiple_choice_prompt_is_the_scienceqa_readers(shapes):
    samples = read_scienceqa(shapes / "scienceqa", "train")
    assert samples
    for s in samples:
        text = render_prompt("multiple-choice", TASK_PROMPTS["multiple-choice"], s.image is not None,
                             question=s.meta["question"], context=context_text(s.meta["context"]),
                             options=options_text(s.meta["choices"]))
        assert text == s.turns[0].text
    assert s.turns[0].text.startswith(f"{IMAGE_PLACEHOLDER}\nQuestion: ") and "\nContext: N/A\n" in s.turns[0].text


def test_multiple_choice_without_image_has_no_placeholder_and_memvp_cleanup():
    text = render_prompt("multiple-choice", TASK_PROMPTS["multiple-choice"], False, question="Which  one?",
                         context="N/A", options="(A) x (B) y")
    assert text == "Question: Which one?\nContext: N/A\nOptions: (A) x (B) y\nResponse:"


def test_custom_templates_are_checked():
    assert check_template("caption", None) == TASK_PROMPTS["caption"]
    assert check_template("caption", "a photo of") == "a photo of"
    assert check_template("vqa", "Q: {question} A:") == "Q: {question} A:"
    with pytest.raises(ConfigError, match=r"missing field\(s\) \['question'\]"):
        check_template("vqa", "Answer briefly.")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['image_id'\]"):
        check_template("caption", "Caption {image_id}:")
    with pytest.raises(ConfigError, match="not a valid template"):
        check_template("vqa", "{question")
    with pytest.raises(ConfigError, match="leave out <image>"):
        check_template("vqa", "<image>\n{question}")
    with pytest.raises(ConfigError, match=r"tasks with prompts: \['caption', 'multiple-choice', 'vqa'\]"):
        check_template("retrieval", "x")
