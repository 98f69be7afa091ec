"""The prompt a run was trained with is read off its training samples, recorded in its checkpoint and is
`vlbridge eval`'s default for it; --prompt and --task-prompt override, and the prompt used is printed."""

from __future__ import annotations

import json

import pytest

from vlbridge.build import build_model
from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.sample import Sample, Turn
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.datasets.vqav2 import read_vqav2
from vlbridge.eval.task_prompts import TASK_PROMPTS
from vlbridge.eval.training_prompts import choose_prompt, training_prompts
from vlbridge.recipe import load_recipe
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge_cli.main import main


def asked(text: str, task: str | None = "short", **meta) -> Sample:
    return Sample("x", (Turn("user", f"<image>\n{text}"), Turn("assistant", "a")),
                  meta={**({"task": task} if task else {}), **meta})


def test_templates_are_read_off_the_training_samples(shapes, manifest):
    short = read_llava_json(shapes / "train_short.json")
    assert training_prompts(short) == {"vqa": "{question}"}  # Shapes: bare questions
    files = manifest["files"]["vqav2"]
    vqav2 = read_vqav2(shapes / files["questions"]["train"], shapes / files["annotations"]["train"])
    assert training_prompts(vqav2) == {"vqa": TASK_PROMPTS["vqa"]}  # the question + LLaVA-1.5's instruction
    scienceqa = read_scienceqa(shapes / "scienceqa", "train")
    assert training_prompts(scienceqa) == {"multiple-choice": TASK_PROMPTS["multiple-choice"]}
    captions = read_llava_json(shapes / "train_caption.json")
    assert training_prompts([*short, *captions]) == {"vqa": "{question}", "caption": "Describe the image briefly."}


def test_an_instruction_line_most_samples_share_is_kept_and_braces_are_escaped():
    suffixed = [asked(f"What is {{item {i}}}?\nReply in one word.", task=None) for i in range(3)]
    assert training_prompts([*suffixed, asked("Is it red?")]) == {"vqa": "{question}\nReply in one word."}
    prefixed = [asked(f"Look closely.\nHow many {i}?") for i in range(3)]
    assert training_prompts(prefixed) == {"vqa": "Look closely.\n{question}"}
    # a line shared by fewer than half is part of the questions
    mixed = [asked("What is it?\nReply in one word."), asked("Where?"), asked("Why?"), asked("Who?")]
    assert training_prompts(mixed) == {"vqa": "{question}"}
    # conversations of several turns say nothing about a one-question prompt
    talk = Sample("t", (Turn("user", "<image>\nHi"), Turn("assistant", "Hello"), Turn("user", "Colour?"),
                        Turn("assistant", "red")), meta={"task": "short"})
    assert training_prompts([talk]) == {}
    braces = [asked("Describe {the} image.", task="caption")]
    assert training_prompts(braces) == {"caption": "Describe {{the}} image."}


def test_the_prompt_used_is_given_recorded_or_standard():
    recorded = {"vqa": "{question}"}
    assert choose_prompt("vqa", None, recorded) == ("{question}", "the prompt the run was trained with")
    assert choose_prompt("vqa", None, recorded, standard=True)[0] == TASK_PROMPTS["vqa"]
    assert choose_prompt("vqa", "Q: {question} A:", recorded) == ("Q: {question} A:", "--prompt")
    template, source = choose_prompt("caption", None, recorded)
    assert template == TASK_PROMPTS["caption"] and "records no training prompt" in source


@pytest.fixture(scope="module")
def bare_question_run(tmp_path_factory, recipe_file):
    """A run whose checkpoint records that it was trained on bare questions (as training on Shapes writes)."""
    recipe = load_recipe(recipe_file)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    folder = tmp_path_factory.mktemp("runs") / "bare"
    save_checkpoint(built.model, recipe, folder / "final", extra={"prompts": {"vqa": "{question}"}})
    return folder


def vqa_eval(shapes, manifest, run, out, *extra) -> int:
    files = manifest["files"]["vqav2"]
    return main(["eval", "--run", str(run), "--task", "vqa", "--questions", str(shapes / files["questions"]["train"]),
                 "--annotations", str(shapes / files["annotations"]["train"]), "--images", str(shapes / "images"),
                 "--image-pattern", files["image_file_pattern"], "--limit", "2", "--max-new-tokens", "2",
                 "--out", str(out), *extra])


def test_eval_asks_with_the_runs_training_prompt_by_default(shapes, manifest, bare_question_run, run_dir, tmp_path,
                                                            capsys):
    out = tmp_path / "vqa.json"
    assert vqa_eval(shapes, manifest, bare_question_run, out) == 0
    report = json.loads(out.read_text())
    assert report["prompt"] == "{question}" and report["prompt_source"] == "the prompt the run was trained with"
    assert "prompt (the prompt the run was trained with): '{question}'" in capsys.readouterr().out
    # the override: the task's standard prompt, or any other
    assert vqa_eval(shapes, manifest, bare_question_run, out, "--task-prompt") == 0
    assert json.loads(out.read_text())["prompt"] == TASK_PROMPTS["vqa"]
    assert vqa_eval(shapes, manifest, bare_question_run, out, "--prompt", "Q: {question}") == 0
    assert json.loads(out.read_text())["prompt"] == "Q: {question}"
    # a run that records no prompt (saved before they were recorded) gets the standard one, and says so
    assert vqa_eval(shapes, manifest, run_dir, out) == 0
    report = json.loads(out.read_text())
    assert report["prompt"] == TASK_PROMPTS["vqa"] and "records no training prompt" in report["prompt_source"]
    with pytest.raises(SystemExit):  # one or the other
        vqa_eval(shapes, manifest, run_dir, out, "--prompt", "{question}", "--task-prompt")
