"""The output folder: a new run never lands on another run's files unless asked to replace them (and then
removes only what vlbridge wrote, saying what); a folder that cannot take a run is refused before any model
is built."""

from __future__ import annotations

import errno
import json

import pytest

from vlbridge.errors import ConfigError
from vlbridge.train import run_folder
from vlbridge.train.trainer import train
from vlbridge_cli.main import main

QUIET = {"log": lambda *_: None}


@pytest.fixture
def no_model(monkeypatch):
    """The folder checks come before the model is built: building one fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the output folder was checked")

    monkeypatch.setattr("vlbridge.train.trainer.build_model", refuse)


def test_a_new_run_into_a_folder_holding_another_run_is_refused(tmp_path, make_recipe, no_model):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "checkpoint-2").mkdir()
    for name in ("recipe.yaml", "metrics.jsonl", "skipped_records.json", "eval-val_short.json"):
        (run / name).write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(ConfigError) as error:
        train(make_recipe(), **QUIET)
    message = str(error.value)
    assert message.startswith(f"train.output_dir {run} already holds another run (checkpoint-2/, "
                              "eval-val_short.json, final/, metrics.jsonl, recipe.yaml, skipped_records.json)")
    assert f"vlbridge train --resume {run}" in message and "--overwrite" in message
    assert sorted(p.name for p in run.iterdir()) == before  # nothing touched


def test_overwrite_removes_only_the_earlier_runs_files_and_says_which(tmp_path, make_recipe):
    first = train(make_recipe("train.save_every=2"), **QUIET)
    run = tmp_path / "run"
    (run / "eval-val_short.json").write_text("{}")
    (run / "eval-vqa-val.results.json").write_text("[]")
    (run / "skipped_records.json").write_text("[]")  # the first run's: the second skips nothing
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    assert (run / "checkpoint-2").is_dir() and (run / "final").is_dir()

    messages = []
    second = train(make_recipe("train.steps=1"), log=messages.append, overwrite=True)
    removed = [m for m in messages if m.startswith("--overwrite")]
    assert removed == [f"--overwrite: removing the earlier run's files from {run}: checkpoint-2/, "
                       "eval-val_short.json, eval-vqa-val.results.json, final/, metrics.jsonl, predictions.json, "
                       "recipe.yaml, report.json, skipped_records.json"]
    assert sorted(p.name for p in run.iterdir()) == ["data", "final", "metrics.jsonl", "notes.txt", "predictions.json",
                                                     "recipe.yaml", "report.json"]
    assert (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "final" / "meta.json").read_text())["step"] == 1
    assert len(second["history"]) == 1 and len(first["history"]) == 4


def test_the_command_line_refuses_then_overwrites(tmp_path, make_recipe, capsys):
    recipe = make_recipe.write(make_recipe("train.steps=1"), tmp_path / "recipe.yaml")
    assert main(["train", str(recipe)]) == 0
    assert main(["train", str(recipe)]) == 2
    assert "already holds another run (final/, metrics.jsonl" in capsys.readouterr().err
    assert main(["train", str(recipe), "--overwrite"]) == 0
    assert "--overwrite: removing the earlier run's files" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "run"), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_an_empty_or_unrelated_folder_takes_a_new_run(tmp_path, make_recipe):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    train(make_recipe("train.steps=1"), **QUIET)
    assert (run / "final").is_dir() and (run / "notes.txt").read_text() == "mine"


def test_an_output_folder_that_is_a_file_is_refused_before_the_model_is_built(tmp_path, make_recipe, no_model):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(ConfigError, match=f"train.output_dir {tmp_path / 'run'} is a file, not a folder"):
        train(make_recipe(), **QUIET)


def test_an_output_folder_that_cannot_be_created_is_refused_before_the_model_is_built(tmp_path, make_recipe,
                                                                                      no_model):
    (tmp_path / "file").write_text("a file")
    out = tmp_path / "file" / "run"
    with pytest.raises(ConfigError, match=f"train.output_dir {out}: cannot create the folder "
                                          r"\(\[Errno 20\] Not a directory"):
        train(make_recipe(f"train.output_dir={out}"), **QUIET)


@pytest.mark.parametrize("resume", [False, True])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model_is_built(tmp_path, make_recipe,
                                                                                      no_model, monkeypatch, resume):
    """Permissions cannot be tested by chmod here (the tests run as root, who writes anywhere): the write probe
    fails as it does on a read-only mount."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("{}")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(run_folder.tempfile, "mkstemp", read_only)
    option = "--resume" if resume else "train.output_dir"
    with pytest.raises(ConfigError, match=rf"{option} {run}: cannot write there \(\[Errno 30\] Read-only file system"):
        train(make_recipe(), resume=run if resume else None, overwrite=not resume, **QUIET)
    assert (run / "recipe.yaml").is_file()  # --overwrite removed nothing it could not replace


def test_resuming_a_folder_that_does_not_exist_or_is_a_file_is_refused(tmp_path, make_recipe, no_model):
    with pytest.raises(ConfigError, match=f"--resume {tmp_path / 'none'}: no such folder"):
        train(make_recipe(), resume=tmp_path / "none", **QUIET)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=f"--resume {tmp_path / 'file'}: a file, not a run folder"):
        train(make_recipe(), resume=tmp_path / "file", **QUIET)


def test_resume_from_a_folder_that_is_not_a_run_names_the_option(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    assert f"--resume {tmp_path / 'missing'}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "not a run folder (it holds no recipe.yaml)" in capsys.readouterr().err
