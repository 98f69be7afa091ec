"""Recipe values are checked when the recipe is loaded, before any model is built, and the error gives the valid
range; a YAML syntax error names the file, line and column; `vlbridge generate` checks its options likewise."""

from __future__ import annotations

import pytest

import vlbridge.runs
from vlbridge.errors import ConfigError
from vlbridge.recipe import VALID, Recipe, load_recipe, validate
from vlbridge_cli.main import main


@pytest.mark.parametrize("override, message", [
    ("train.steps=0", r"'train.steps': 0 is out of range; valid: an integer >= 1"),
    ("train.steps=-5", r"'train.steps': -5 is out of range; valid: an integer >= 1"),
    ("train.batch_size=0", r"'train.batch_size': 0 is out of range; valid: an integer >= 1"),
    ("train.grad_accum=0", r"'train.grad_accum': 0 is out of range; valid: an integer >= 1"),
    ("train.lr=-1e-3", r"'train.lr': -0.001 is out of range; valid: a number >= 0"),
    ("train.lr=.nan", r"'train.lr': nan is not a finite number"),
    ("train.lr=.inf", r"'train.lr': inf is not a finite number"),
    ("model.lora_dropout=.nan", r"'model.lora_dropout': nan is not a finite number"),  # no range, still finite
    ("train.lr=-.inf", r"'train.lr': -inf is not a finite number"),
    ("train.betas=[0.9, .nan]", r"'train.betas\[1\]': nan is not a finite number"),
    ("model.lora_targets=[q_proj, 3]", r"'model.lora_targets\[1\]': expected <class 'str'>, got 3"),
    ("data.train=[a.json, 5]", r"'data.train\[1\]': expected <class 'str'>, got 5"),
    ("train.min_lr_ratio=1.5", r"'train.min_lr_ratio': 1.5 is out of range; valid: a number in \[0, 1\]"),
    ("train.betas=[0.9]", r"'train.betas': \[0.9\] is out of range; valid: two numbers in \[0, 1\)"),
    ("train.betas=[0.9, 1.0]", r"'train.betas': \[0.9, 1.0\] is out of range"),
    ("train.warmup_steps=-1", r"'train.warmup_steps': -1 is out of range; valid: an integer >= 0"),
    ("train.eval_samples=-1", r"'train.eval_samples': -1 is out of range; valid: an integer >= 0 \(0 = all\)"),
    ("data.on_bad_record=ignore", r"data.on_bad_record='ignore'; valid: \['raise', 'skip'\]"),
    ("data.truncation=cut", r"data.truncation='cut'; valid: \['reject', 'truncate_prompt'\]"),
    ("data.max_length=0", r"'data.max_length': 0 is out of range; valid: an integer >= 1"),
    ("train.on_nonfinite=ignore", r"train.on_nonfinite='ignore'; valid: \['stop', 'skip'\]"),
    ("eval.max_new_tokens=0", r"'eval.max_new_tokens': 0 is out of range; valid: an integer >= 1"),
    ("eval.batch_size=0", r"'eval.batch_size': 0 is out of range; valid: an integer >= 1"),
    ("eval.temperature=0", r"'eval.temperature': 0.0 is out of range; valid: a number > 0"),
    ("eval.top_p=0", r"'eval.top_p': 0.0 is out of range; valid: a number in \(0, 1\]"),
])
def test_out_of_range_values_fail_on_load_naming_key_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, [override])


def test_a_recipe_file_is_checked_too(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  steps: 0\n")
    with pytest.raises(ConfigError, match="'train.steps': 0 is out of range"):
        load_recipe(path)


def test_defaults_and_edges_are_valid():
    validate(Recipe())
    load_recipe(None, ["train.lr=0", "train.min_lr_ratio=1", "eval.top_p=1", "train.eval_every=0",
                       "train.save_every=0", "train.clip_grad=0", "data.on_bad_record=skip"])


def test_every_checked_key_exists():
    recipe = Recipe()
    for key in VALID:
        section, name = key.split(".")
        assert hasattr(getattr(recipe, section), name), key


@pytest.mark.parametrize("text, line, column", [
    ("model:\n  bridge: llava\ntrain:\n  steps: [1, 2\n", 5, 1),  # unclosed list, found at the end
    ("train:\n  steps: 3\n   lr: 1\n", 3, 6),  # a mapping value where none may be
    ("train:\n\tsteps: 3\n", 2, 1),  # a tab
    ("data: {train: x.json\n", 2, 1),
    ("train:\n  steps: 3\x07\n", 2, 11),  # a control character
])
def test_yaml_syntax_error_names_file_line_and_column(tmp_path, text, line, column):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"recipe file {path}: invalid YAML at line {line}, column {column}: "):
        load_recipe(path)


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  lr: 1e-3\n  steps: 10\n  lr: 1e-4\n")
    with pytest.raises(ConfigError, match=rf"recipe file {path}: invalid YAML at line 4, column 3: while constructing "
                                          r"a mapping, found key 'lr' a second time \(first at line 2\)"):
        load_recipe(path)
    with pytest.raises(ConfigError, match=r"--set train.betas=\{a: 1, a: 2\}: the value is not valid YAML"):
        load_recipe(None, ["train.betas={a: 1, a: 2}"])


def test_unknown_keys_of_any_type_are_listed(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("1: x\nfoo: y\ntrain: {steps: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown recipe key\(s\) \['1', 'foo'\]"):
        load_recipe(path)


def test_recipe_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  system_prompt: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"recipe file {path}: not UTF-8 text"):
        load_recipe(path)


def test_set_value_with_a_yaml_syntax_error_is_named():
    with pytest.raises(ConfigError, match=r"--set train.betas=\[0.9, 0.99: the value is not valid YAML"):
        load_recipe(None, ["train.betas=[0.9, 0.99"])


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a model is loaded: argument errors must come first."""
    def load_model(*args, **kwargs):
        raise AssertionError("a model was built before the arguments were checked")

    monkeypatch.setattr(vlbridge.runs, "load_model", load_model)


@pytest.mark.parametrize("option, value, message", [
    ("--max-new-tokens", "0", "--max-new-tokens 0: must be an integer >= 1"),
    ("--max-new-tokens", "-3", "--max-new-tokens -3: must be an integer >= 1"),
    ("--temperature", "0", "--temperature 0.0: must be a number > 0"),
    ("--temperature", "nan", "--temperature nan: must be a number > 0"),
    ("--top-p", "1.5", "--top-p 1.5: must be a number in (0, 1]"),
])
def test_generate_checks_its_options_before_building_a_model(tmp_path, no_model, capsys, option, value, message):
    code = main(["generate", "--image", str(tmp_path / "x.png"), "--prompt", "hi", option, value])
    assert code == 2 and f"vlbridge generate: error: {message}" in capsys.readouterr().err
