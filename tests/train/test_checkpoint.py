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


def test_the_checkpoint_records_the_pair_and_what_was_left_untrained(saved):
    folder, _ = saved
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == checkpoint.FORMAT
    assert meta["spec"]["connector"] == "mlp" and meta["spec"]["injection"] == "input_space"
    assert meta["spec"]["connector_options"] == {"hidden": None, "activation": "gelu", "layers": 2}
    assert meta["untrained"] == []  # the whole bridge trained


def test_a_checkpoint_without_a_tensor_the_model_needs_is_refused(saved):
    folder, _ = saved
    meta = json.loads((folder / "meta.json").read_text())
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / checkpoint.WEIGHTS))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(folder / checkpoint.WEIGHTS))
    meta["parameters"].pop(dropped)
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=rf"missing \['{dropped}'\]"):
        load_run(folder)


@pytest.mark.parametrize("old, new, overrides", [
    ("bridge.connector.0.net.", "bridge.connector.net.", ["model.bridge=memvp", "model.bridge_options={position: concat}"]),
    ("bridge.stage1.", "bridge.connector.stage1.", [
        "model.bridge=blip2", "model.bridge_options={init: random, num_query_tokens: 4, embed_dim: 16, stage1: true, "
        "sizes: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}}"]),
])
def test_a_checkpoint_of_the_format_before_composed_bridges_still_loads(tmp_path, make_recipe, old, new, overrides):
    """Format 1 had no spec, no untrained list, MemVP's concat projector wrapped in a padding layer and BLIP-2's
    stage-1 heads under bridge.stage1 (checkpoint.LEGACY_RENAMES)."""
    from safetensors.torch import load_file, save_file

    recipe = make_recipe(*overrides)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    with torch.no_grad():
        for p in built.model.trainable_parameters().values():
            p.normal_()
    folder = save_checkpoint(built.model, recipe, tmp_path / "old")
    state = load_file(str(folder / checkpoint.WEIGHTS))
    assert any(k.startswith(new) for k in state)
    save_file({(old + k[len(new):] if k.startswith(new) else k): v for k, v in state.items()},
              str(folder / checkpoint.WEIGHTS))
    meta = json.loads((folder / "meta.json").read_text())
    for key in ("format", "spec", "untrained"):
        meta.pop(key)
    (folder / "meta.json").write_text(json.dumps(meta))
    loaded, _ = load_run(folder)
    for name, tensor in built.model.trainable_state_dict().items():
        assert torch.equal(loaded.model.get_parameter(name), tensor), name
