"""`vlbridge generate` and `vlbridge info` end to end on tiny models, from a recipe and from a run."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image

from vlbridge.build import build_model
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge.recipe import load_recipe
from vlbridge_cli.main import main


@pytest.fixture()
def tiny_recipe_file(tmp_path, tiny_llama_dir, tiny_dinov2_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": {"language_model": str(tiny_llama_dir),
                                              "vision_encoder": str(tiny_dinov2_dir), "vision_layer": -1}}))
    return path


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(path)
    return path


def test_generate_from_a_recipe_and_from_a_run(tmp_path, tiny_recipe_file, photo, capsys):
    args = ["generate", "--image", str(photo), "--prompt", "What color?", "--max-new-tokens", "3",
            "--sample", "--seed", "1"]
    torch.manual_seed(0)
    assert main([*args, "--recipe", str(tiny_recipe_file)]) == 0
    from_recipe = capsys.readouterr().out
    recipe = load_recipe(tiny_recipe_file)
    torch.manual_seed(0)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    save_checkpoint(built.model, recipe, tmp_path / "run" / "final")
    assert main([*args, "--run", str(tmp_path / "run")]) == 0
    from_run = capsys.readouterr().out
    # untrained and freshly saved bridges are the same weights: the same seeded sample
    assert from_run == from_recipe and from_run.endswith("\n")


def test_generate_names_a_missing_image(tmp_path, tiny_recipe_file, capsys):
    code = main(["generate", "--recipe", str(tiny_recipe_file), "--image", str(tmp_path / "nope.png"), "--prompt", "hi"])
    assert code == 2
    assert "nope.png" in capsys.readouterr().err


def test_info_reports_parameters_and_flops(tiny_recipe_file, capsys):
    assert main(["info", str(tiny_recipe_file), "--set", "model.bridge=memvp"]) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "memory slots per FFN" in out and "text-only LM" in out
    assert "bridge (preset memvp): mlp -> memory_space" in out
    # what auto resolves to here, and why (the suite pins it: tests/conftest.py)
    assert "precision: frozen weights and their activations fp32" in out and "VLBRIDGE_AUTO_PRECISION=fp32" in out


def test_info_shows_an_explicit_bf16_setting(tiny_recipe_file, capsys):
    assert main(["info", str(tiny_recipe_file), "--set", "model.precision=bf16"]) == 0
    assert "frozen weights and their activations bf16, trained parts' products bf16 (autocast)" in capsys.readouterr().out


def test_info_says_when_a_recipe_replaces_the_preset_s_connector(tiny_recipe_file, capsys):
    assert main(["info", str(tiny_recipe_file), "--set", "model.bridge=llava", "--set", "model.connector=perceiver",
                 "--set", "model.connector_options={depth: 1, num_latents: 4}"]) == 0
    out = capsys.readouterr().out
    assert "bridge (preset llava with its connector replaced by model.connector): perceiver -> input_space" in out


def test_unknown_recipe_key_is_rejected_with_valid_keys(tiny_recipe_file, capsys):
    assert main(["info", str(tiny_recipe_file), "--set", "train.lrate=1"]) == 2
    err = capsys.readouterr().err
    assert "train.lrate" in err and "train.lr" in err


@pytest.fixture()
def frames(tmp_path):
    """Three frames of a square moving right."""
    paths = []
    for t in range(3):
        image = Image.new("RGB", (56, 56), (200, 200, 200))
        image.paste((220, 30, 40), (4 + 12 * t, 20, 16 + 12 * t, 32))
        paths.append(tmp_path / f"frame{t}.png")
        image.save(paths[-1])
    return paths


def test_generate_answers_about_a_clip_given_as_repeated_images(tmp_path, tiny_recipe_file, frames, capsys):
    from vlbridge.data.sample import Sample, Turn
    from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
    from vlbridge.runs import load_model, prompt_collator

    recipe = yaml.safe_load(tiny_recipe_file.read_text())
    recipe["model"] |= {"connector": "perceiver",
                        "connector_options": {"depth": 1, "num_latents": 4, "heads": 2, "head_dim": 8, "max_frames": 4}}
    path = tmp_path / "perceiver.yaml"
    path.write_text(yaml.safe_dump(recipe))
    question = "Which way did the square move?"
    images = [arg for frame in frames for arg in ("--image", str(frame))]
    assert main(["generate", "--recipe", str(path), "--prompt", question, "--max-new-tokens", "4", *images]) == 0
    printed = capsys.readouterr().out
    # the answer to the clip (frames in the order given) from the same seeded model, generated directly
    built, _ = load_model(None, path)
    sample = Sample("clip", (Turn("user", f"<image>\n{question}"),), frames=tuple(frames))
    expected = generate_answers(built.model, built.tokenizer, prompt_collator(built), [sample],
                                GenerationSettings(4, 1))[0]
    assert printed == expected + "\n"


def test_generate_refuses_a_clip_for_a_connector_that_reads_one_image(tiny_recipe_file, frames, capsys):
    images = [arg for frame in frames for arg in ("--image", str(frame))]
    code = main(["generate", "--recipe", str(tiny_recipe_file), "--prompt", "Where?", *images])
    assert code == 2
    assert "reads one image per sample, not a clip of frames" in capsys.readouterr().err
