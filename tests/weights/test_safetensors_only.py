"""Local Hugging Face folders load from safetensors only: a folder with pickled weights alone (pytorch_model.bin)
is refused naming it and the file, and a folder with both never unpickles."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vlbridge.errors import ConfigError
from vlbridge.weights.language import load_language_model
from vlbridge.weights.vision import load_vision_backbone


def pickled_copy(folder, tmp_path, name):
    """A copy of ``folder`` whose weights are a pickle (``pytorch_model.bin``) instead of safetensors."""
    copy = shutil.copytree(folder, tmp_path / name)
    state = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(state, copy / "pytorch_model.bin")
    return copy


@pytest.mark.parametrize("kind", ["language", "vision"])
def test_a_folder_with_only_pickled_weights_is_refused_naming_it(kind, tiny_llama_dir, tiny_dinov2_dir, tmp_path):
    source, load = (tiny_llama_dir, load_language_model) if kind == "language" else (tiny_dinov2_dir,
                                                                                    load_vision_backbone)
    copy = pickled_copy(source, tmp_path, kind)
    with pytest.raises(ConfigError, match=rf"^{copy}: no safetensors weights \(\*\.safetensors\); it holds "
                                          r"\['pytorch_model.bin'\], pickle files that can run code when read"):
        load(str(copy))


def test_a_folder_with_no_weights_is_refused(tiny_llama_dir, tmp_path):
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "lm")
    (copy / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no safetensors weights .*; it holds no weight file"):
        load_language_model(str(copy))


def test_a_folder_with_both_reads_the_safetensors_and_unpickles_nothing(tiny_llama_dir, tmp_path, monkeypatch):
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "lm")
    torch.save({}, copy / "pytorch_model.bin")

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, name, refuse)
    model, _ = load_language_model(str(copy))
    expected = load_file(copy / "model.safetensors")
    assert torch.equal(model.get_input_embeddings().weight, expected["model.embed_tokens.weight"])
