"""Training data by ``data.format``: ScienceQA folders give MemVP's QCM-A samples, whose only supervised tokens
are ``The answer is X.`` and the end of turn, whose generated answers score as multiple choice, and whose prompt
is the one ``vlbridge eval --task multiple-choice`` asks; bad formats, folders and splits are clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import export_shapes
from vlbridge.datasets.training_sets import TRAINING_READERS, describe, read_training_set
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.multiple_choice import evaluate_multiple_choice
from vlbridge.eval.scoring import score_predictions
from vlbridge.prompts.scienceqa import answer_text
from vlbridge.text.chat_format import chat_format_for, plain_format
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID, encode_sample
from vlbridge.recipe import DataConfig, load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """12 scenes at 56 px, 2 multiple-choice questions each, as LLaVA JSON and as a ScienceQA folder."""
    out = tmp_path_factory.mktemp("shapes_sqa")
    export_shapes(generate_shapes(ShapesConfig(n=12, seed=5, image_size=56)), out, ["llava", "scienceqa"])
    return out


def sqa(root, **fields) -> DataConfig:
    return DataConfig(**{"format": "scienceqa", "train": str(root), "val": str(root), **fields})


def test_scienceqa_folder_gives_the_qcm_a_samples_of_its_splits(shapes):
    root = shapes / "scienceqa"
    splits = json.loads((root / "pid_splits.json").read_text())
    problems = json.loads((root / "problems.json").read_text())
    data = sqa(root)
    train, val = read_training_set(data, "train"), read_training_set(data, "val")
    assert [s.id for s in train] == splits["train"] and [s.id for s in val] == splits["val"]
    assert train.skipped == [] and describe(data, "val") == f"{root} (split val)"
    for s in train:
        problem = problems[s.id]
        user, assistant = s.turns
        assert user.text.startswith("<image>\nQuestion: " + problem["question"] + "\nContext: N/A\nOptions: (A) ")
        assert user.text.endswith("\nResponse:")
        assert assistant.text == answer_text(problem["answer"]) == f"The answer is {'ABCDE'[problem['answer']]}."
        assert s.image == root / "images" / "train" / s.id / "image.png" and s.image.is_file()
        assert s.meta["task"] == "mc" and s.meta["answer_index"] == problem["answer"]
    other = read_training_set(sqa(root, train_split="test"), "train")
    assert [s.id for s in other] == splits["test"]


def test_llava_format_is_unchanged(shapes):
    data = DataConfig(train=str(shapes / "train_mc.json"), val=str(shapes / "val_mc.json"), image_root=str(shapes))
    expected = read_llava_json(shapes / "train_mc.json", image_root=shapes)
    assert read_training_set(data, "train") == expected


def test_a_list_of_llava_files_is_read_in_order_into_one_set(shapes):
    files = [str(shapes / "train_caption.json"), str(shapes / "train_mc.json")]
    recipe = load_recipe(None, [f"data.train={files}", f"data.image_root={shapes}"])
    samples = read_training_set(recipe.data, "train")
    expected = [s for f in files for s in read_llava_json(f, image_root=shapes)]
    assert samples == expected and samples.skipped == []
    for bad in ([], [str(shapes / "train_mc.json"), 3]):
        with pytest.raises(ConfigError, match="data.train=.*non-empty list"):
            read_training_set(DataConfig(train=bad, image_root=str(shapes)), "train")
    with pytest.raises(ConfigError, match="scienceqa reads one ScienceQA folder, not a list"):
        read_training_set(sqa(shapes / "scienceqa", train=[str(shapes / "scienceqa")]), "train")


def test_unknown_format_lists_the_valid_ones(shapes):
    with pytest.raises(ConfigError, match=r"unknown data.format 'sqa'; valid: \['llava', 'scienceqa'\]"):
        read_training_set(DataConfig(format="sqa"), "train")
    assert sorted(TRAINING_READERS) == ["llava", "scienceqa"]


def test_a_field_of_the_other_format_is_not_silently_ignored(shapes):
    with pytest.raises(ConfigError, match=r"data.format=llava does not read data.train_split"):
        read_training_set(DataConfig(train=str(shapes / "train_mc.json"), train_split="test"), "train")
    with pytest.raises(ConfigError, match=r"data.format=scienceqa does not read data.image_root"):
        read_training_set(DataConfig(format="scienceqa", train=str(shapes / "scienceqa"), image_root="x"), "train")


def test_missing_folder_file_and_split_are_named(shapes, tmp_path):
    with pytest.raises(ConfigError, match=r"data.val='.*nowhere' does not exist; data.format=scienceqa reads"):
        read_training_set(sqa(shapes / "scienceqa", val=str(tmp_path / "nowhere")), "val")
    with pytest.raises(ConfigError, match=r"is a file, not a folder.*need data.format=llava"):
        read_training_set(sqa(shapes / "train_mc.json"), "train")
    with pytest.raises(ConfigError, match=r"data.val_split='dev' is not a split of .*pid_splits.json; it has "
                                          r"\['test', 'train', 'trainval', 'val'\]"):
        read_training_set(sqa(shapes / "scienceqa", val_split="dev"), "val")
    with pytest.raises(DataError, match=r"file .*pid_splits.json: file not found"):
        read_training_set(sqa(tmp_path), "train")


def test_bad_problem_raises_or_is_skipped_and_listed(shapes, tmp_path):
    root = tmp_path / "sqa"
    shutil.copytree(shapes / "scienceqa", root)
    problems = json.loads((root / "problems.json").read_text())
    bad = json.loads((root / "pid_splits.json").read_text())["train"][1]
    problems[bad]["answer"] = 9
    (root / "problems.json").write_text(json.dumps(problems))
    with pytest.raises(DataError, match=rf"record '{bad}', field 'answer': answer 9 is not an index"):
        read_training_set(sqa(root), "train")
    kept = read_training_set(sqa(root, on_bad_record="skip"), "train")
    assert bad not in [s.id for s in kept]
    assert [(s.index, s.id) for s in kept.skipped] == [(1, bad)] and "field 'answer'" in kept.skipped[0].message


def supervised_text(encoded, tokenizer) -> list[str]:
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    return [tokenizer.decode(run) for run in runs + ([current] if current else [])]


def test_only_the_answer_and_end_of_turn_are_supervised(shapes, smol_tokenizer):
    sample = read_training_set(sqa(shapes / "scienceqa"), "train")[0]
    letter = "ABCDE"[sample.meta["answer_index"]]
    prompt = sample.turns[0].text.removeprefix("<image>\n")
    # SmolLM2's chat template (the recipe's layout)
    template = chat_format_for(smol_tokenizer, "template", system_prompt="You are a helpful assistant.")
    encoded = encode_sample(sample, smol_tokenizer, template)
    assert supervised_text(encoded, smol_tokenizer) == [f"The answer is {letter}.<|im_end|>"]
    assert encoded.input_ids.count(IMAGE_TOKEN_ID) == 1
    image = encoded.input_ids.index(IMAGE_TOKEN_ID)  # the image token, then "\n" and the prompt
    assert smol_tokenizer.decode(encoded.input_ids[:image]).endswith("<|im_start|>user\n")
    assert smol_tokenizer.decode(encoded.input_ids[image + 1:]) == (
        f"\n{prompt}<|im_end|>\n<|im_start|>assistant\nThe answer is {letter}.<|im_end|>\n")
    # plain (model.chat_format=plain): MemVP's prompt + target, a newline between, no markup and no BOS
    plain = chat_format_for(smol_tokenizer, "plain")
    assert plain == plain_format(smol_tokenizer.eos_token)
    encoded = encode_sample(sample, smol_tokenizer, plain)
    eos = smol_tokenizer.eos_token
    assert supervised_text(encoded, smol_tokenizer) == [f"The answer is {letter}.{eos}"]
    assert encoded.input_ids[0] == IMAGE_TOKEN_ID
    assert smol_tokenizer.decode(encoded.input_ids[1:]) == f"\n{prompt}\nThe answer is {letter}.{eos}"


def test_the_recipe_generates_enough_tokens_for_the_target(smol_tokenizer):
    recipe = load_recipe(RECIPES / "memvp" / "scienceqa.yaml")
    for letter in "ABCDE":
        target = smol_tokenizer.encode(f"The answer is {letter}.<|im_end|>", add_special_tokens=False)
        assert len(target) <= recipe.eval.max_new_tokens


def test_generated_answers_score_in_both_multiple_choice_conventions(shapes):
    samples = list(read_training_set(sqa(shapes / "scienceqa"), "train"))[:4]
    right = [s.answer for s in samples]  # "The answer is X."
    assert score_predictions(samples, right) == {"accuracy": 100.0, "unparsed": 0.0, "count": 4}
    shifted = [answer_text((s.meta["answer_index"] + 1) % len(s.meta["choices"])) for s in samples]
    assert score_predictions(samples, shifted)["accuracy"] == 0.0
    cut = ["The answer is", "The answer", "", "The answer is Z."]  # too short, or no option named
    assert score_predictions(samples, cut) == {"accuracy": 0.0, "unparsed": 100.0, "count": 4}
    # the Shapes LLaVA multiple-choice split answers with the bare letter: still scored as before
    llava = list(read_llava_json(shapes / "train_mc.json"))[:4]
    assert score_predictions(llava, [s.answer for s in llava])["accuracy"] == 100.0
    assert all(len(s.answer) == 1 for s in llava)


def test_evaluation_asks_the_prompt_training_used(shapes):
    samples = list(read_training_set(sqa(shapes / "scienceqa", val_split="test"), "val"))
    asked = []

    def answer(prompts):
        asked.extend(prompts)
        return [s.answer for s in samples]

    result = evaluate_multiple_choice(answer, samples)
    assert [p.turns[0].text for p in asked] == [s.turns[0].text for s in samples]
    assert result.scores["accuracy"]["average"] == 100.0
