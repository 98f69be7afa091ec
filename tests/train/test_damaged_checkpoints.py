"""Checkpoints that were damaged or stripped after they were written: a clear error naming the file (and the
tensor), never a traceback, a silent load onto another LM, or NaN weights."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlbridge.build import build_model
from vlbridge.errors import ConfigError, DataError
from vlbridge.runs import load_run
from vlbridge.train import checkpoint
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable


@pytest.fixture
def saved(tmp_path, make_recipe):
    """A bridge-only checkpoint of a LLaVA bridge with non-initial weights, and those weights."""
    recipe = make_recipe()
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in built.model.trainable_parameters().values():
            p.normal_()
    folder = save_checkpoint(built.model, recipe, tmp_path / "ckpt", {"step": 7})
    return folder, built.model.trainable_state_dict()


@pytest.fixture
def other_llama_dir(tmp_path_factory, tiny_llama_dir):
    """The tiny LLaMA's architecture and tokenizer with other weights."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("other_llama")
    LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_llama_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(folder)
    return folder


# --- identity -------------------------------------------------------------------------------------------------
def test_a_checkpoint_without_meta_json_is_refused_saying_how_to_load_it_anyway(saved, other_llama_dir,
                                                                                 monkeypatch):
    folder, trained = saved
    (folder / "meta.json").unlink()
    monkeypatch.delenv(checkpoint.UNIDENTIFIED_ENV, raising=False)
    for overrides in ([], [f"model.language_model={other_llama_dir}"]):  # the same LM, and another one
        with pytest.raises(ConfigError) as error:
            load_run(folder, overrides)
        assert str(error.value).startswith(f"checkpoint {folder} has no meta.json: nothing says which language model")
        assert f"set {checkpoint.UNIDENTIFIED_ENV}=1 (Python: allow_unidentified=True)" in str(error.value)
    built, _ = load_run(folder, allow_unidentified=True)  # asked for explicitly
    assert all(torch.equal(built.model.get_parameter(k), v) for k, v in trained.items())
    monkeypatch.setenv(checkpoint.UNIDENTIFIED_ENV, "1")
    built, _ = load_run(folder)
    assert all(torch.equal(built.model.get_parameter(k), v) for k, v in trained.items())


def test_a_meta_json_that_records_no_identity_is_refused(saved):
    folder, _ = saved
    meta = json.loads((folder / "meta.json").read_text())
    del meta["language_model"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="has a meta.json that records no identity"):
        load_run(folder)


def test_init_from_a_checkpoint_without_identity_is_refused(saved, make_recipe, monkeypatch):
    from vlbridge.train.checkpoint import initialise_from

    folder, trained = saved
    (folder / "meta.json").unlink()
    monkeypatch.delenv(checkpoint.UNIDENTIFIED_ENV, raising=False)
    built = build_model(make_recipe().model)
    with pytest.raises(ConfigError, match=f"checkpoint {folder} has no meta.json"):
        initialise_from(built.model, folder, log=lambda *_: None)
    initialise_from(built.model, folder, log=lambda *_: None, allow_unidentified=True)
    assert all(torch.equal(built.model.get_parameter(k), v) for k, v in trained.items())


# --- values and dtypes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_holding_nan_or_inf_is_refused_naming_the_tensor_and_file(saved, value):
    folder, _ = saved
    state = load_file(str(folder / checkpoint.WEIGHTS))
    name = sorted(state)[1]
    state[name].view(-1)[:3] = value
    save_file(state, str(folder / checkpoint.WEIGHTS))
    with pytest.raises(DataError, match=rf"^file {folder / checkpoint.WEIGHTS}: tensor '{name}' holds 3 NaN or "
                                        rf"infinite value\(s\) of {state[name].numel()}"):
        load_run(folder)


def test_a_checkpoint_of_another_float_dtype_is_converted_with_a_warning(saved, caplog):
    folder, _ = saved
    state = load_file(str(folder / checkpoint.WEIGHTS))
    name = sorted(state)[0]
    state[name] = state[name].to(torch.bfloat16)
    save_file(state, str(folder / checkpoint.WEIGHTS))
    with caplog.at_level(logging.WARNING, logger="vlbridge.train.checkpoint"):
        built, _ = load_run(folder)
    loaded = built.model.get_parameter(name)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, state[name].float())
    assert f"{name}: torch.bfloat16 -> torch.float32" in caplog.text and "converted" in caplog.text


def test_a_checkpoint_of_an_integer_dtype_is_refused(saved):
    folder, _ = saved
    state = load_file(str(folder / checkpoint.WEIGHTS))
    name = sorted(state)[0]
    state[name] = state[name].to(torch.int32)
    save_file(state, str(folder / checkpoint.WEIGHTS))
    with pytest.raises(ConfigError, match=rf"checkpoint {folder}: tensors of a dtype this model cannot take "
                                          rf"\(checkpoint -> model\): \['{name}: torch.int32 -> torch.float32'\]"):
        load_run(folder)


# --- files that do not read back --------------------------------------------------------------------------------
def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def absurd_header(data: bytes) -> bytes:
    return struct.pack("<Q", 2**62) + data[8:]


def bad_header_json(data: bytes) -> bytes:
    return struct.pack("<Q", 5) + b"{abc}"


@pytest.mark.parametrize("damage", [truncate, absurd_header, bad_header_json, lambda _: b""],
                         ids=["truncated", "absurd header length", "malformed header", "empty"])
def test_a_damaged_trained_safetensors_is_an_error_naming_it(saved, damage):
    folder, _ = saved
    path = folder / checkpoint.WEIGHTS
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"^file {path}: is not a readable safetensors file \(Error while "
                                        r"deserializing header"):
        load_run(folder)


def test_a_meta_json_that_is_not_json_is_an_error_naming_it(saved):
    folder, _ = saved
    (folder / "meta.json").write_text('{"format": 2, "bridge": ')
    with pytest.raises(DataError, match=rf"^file {folder / 'meta.json'}: cannot be read as JSON \(Expecting value"):
        load_run(folder)
    (folder / "meta.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=rf"^file {folder / 'meta.json'}: expected a JSON object, found list"):
        load_run(folder)
