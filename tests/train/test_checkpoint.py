"""Safe checkpoints: safetensors + JSON + YAML, identity and versions recorded, a mismatched model refused
with what differs, bridge-only checkpoints loaded onto the same LM and encoder from another folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pytest
import torch

from vlbridge.build import build_model
from vlbridge.errors import ConfigError
from vlbridge.train import checkpoint
from vlbridge.runs import load_run
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable


@pytest.fixture(scope="module")
def other_llama_dir(tmp_path_factory, tiny_llama_dir):
    """The tiny LLaMA's architecture and tokenizer with other weights."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("other_llama")
    LlamaForCausalLM(LlamaConfig.from_pretrained(tiny_llama_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(folder)
    return folder


@pytest.fixture
def saved(tmp_path, make_recipe):
    """A bridge-only checkpoint of a LLaVA bridge with non-initial weights."""
    recipe = make_recipe()
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in built.model.trainable_parameters().values():
            p.normal_()
    folder = save_checkpoint(built.model, recipe, tmp_path / "ckpt", {"step": 7})
    return folder, built.model.trainable_state_dict()


def test_checkpoint_is_safetensors_json_yaml_with_identity_and_versions(saved):
    folder, trained = saved
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "recipe.yaml", "trained.safetensors"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["bridge"] == {"name": "llava", "options": {}} and meta["step"] == 7
    assert {"torch", "transformers", "safetensors", "accelerate", "vlbridge", "python"} <= set(meta["versions"])
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["language_model"]["architecture"] == "llama" and len(meta["language_model"]["fingerprint"]) == 16
    assert meta["vision_encoder"]["layer"] == -1 and meta["vision_encoder"]["fingerprint"]
    assert meta["parameters"] == {k: list(v.shape) for k, v in trained.items()}
    assert oct(os.stat(folder).st_mode & 0o777) != oct(0o700)  # a published folder, not a private temp dir


def refuse(*args, **kwargs):
    raise AssertionError("something was unpickled")


def test_bridge_only_checkpoint_loads_onto_the_same_lm_from_another_folder(saved, tmp_path, tiny_llama_dir,
                                                                           monkeypatch):
    folder, trained = saved
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "my copy of the lm")
    for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, name, refuse)
    built, recipe = load_run(folder, [f"model.language_model={copy}"])
    assert recipe.model.language_model == str(copy)
    reloaded = built.model.trainable_state_dict()
    assert set(reloaded) == set(trained) and all(torch.equal(reloaded[k], trained[k]) for k in trained)


MISMATCHES = [
    ("model.language_model={other_llama}",
     r"language model: differs in \['fingerprint'\]; the checkpoint was trained on .*tiny_llama"),
    ("model.language_model={gpt2}",
     r"language model: differs in \['architecture', 'fingerprint'\]; .*\(architecture llama, width 64"
     r".*\(architecture gpt2, width 64"),
    ("model.vision_layer=-2", r"vision encoder: differs in \['layer'\]"),
    ("model.bridge_options={{hidden: 32}}",
     r"bridge: the checkpoint has 'llava' \(mlp -> input_space; connector \{'hidden': None.*\), this model 'llava' "
     r"\(mlp -> input_space; connector \{'hidden': 32"
     r"(.|\n)*shape \(checkpoint vs model\) \['bridge.connector"),
    ("model.bridge=memvp",
     r"bridge: the checkpoint has 'llava'(.|\n)*trained tensors: missing \['bridge.injection.p_k', 'bridge.injection.p_v'\]"),
]


@pytest.mark.parametrize("override, says", MISMATCHES)
def test_a_mismatched_model_is_refused_saying_what_differs(saved, other_llama_dir, tiny_gpt2_dir, override, says):
    folder, _ = saved
    override = override.format(other_llama=other_llama_dir, gpt2=tiny_gpt2_dir)
    with pytest.raises(ConfigError, match=f"does not fit this model:\\n  - (.|\\n)*{says}"):
        load_run(folder, [override])


def test_an_interrupted_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    folder, trained = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the weights are written

    built, recipe = load_run(folder)
    monkeypatch.setattr(checkpoint, "save_recipe", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(built.model, recipe, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
