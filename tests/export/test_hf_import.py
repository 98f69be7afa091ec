"""`model.init_from: hf:DIR`: a LLaVA run starting from a Hugging Face LLaVA folder's projector, and the refusals when
the folder's LM or vision tower is not the run's."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vlbridge.build import build_model
from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe
from vlbridge.runs import load_run
from vlbridge.train.checkpoint import initialise_from
from vlbridge.train.trainer import train
from vlbridge_cli.main import main


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory, tiny_llama_dir, tiny_dinov2_dir):
    """A Hugging Face LLaVA folder exported from a tiny run, and the run's projector tensors."""
    from vlbridge.train.checkpoint import save_checkpoint
    from vlbridge.train.parameter_groups import apply_trainable

    root = tmp_path_factory.mktemp("hf_import")
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1"])
    torch.manual_seed(0)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    with torch.no_grad():
        for parameter in built.model.trainable_parameters().values():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    save_checkpoint(built.model, recipe, root / "source" / "final")
    assert main(["export", "--run", str(root / "source"), "--out", str(root / "llava-hf")]) == 0
    return root / "llava-hf", {k: v.clone() for k, v in built.model.bridge.state_dict().items()}


def test_a_llava_run_trains_from_the_folder_s_projector(llava_folder, tiny_llama_dir, tiny_dinov2_dir, shapes_dir,
                                                        tmp_path):
    folder, projector = llava_folder
    # lr 0: the run's final projector is exactly what it started from
    recipe = load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1",
        f"model.init_from=hf:{folder}", f"data.train={shapes_dir / 'train_short.json'}",
        f"data.val={shapes_dir / 'val_short.json'}", f"data.image_root={shapes_dir}", "data.cache_features=false",
        "train.steps=1", "train.batch_size=2", "train.lr=0", "train.eval_every=0", "train.eval_samples=1",
        f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=1"])
    result = train(recipe)
    report = result["report"]["init_from"]
    assert report["checkpoint"] == f"hf:{folder}"
    assert report["loaded"] == ["bridge.connector.net.0.bias", "bridge.connector.net.0.weight",
                                "bridge.connector.net.2.bias", "bridge.connector.net.2.weight"]
    final, _ = load_run(result["output_dir"])
    for name, tensor in final.model.bridge.state_dict().items():
        assert torch.equal(tensor, projector[name]), name


def test_a_bias_free_and_older_layout_folder_loads(llava_folder, tiny_llama_dir, tiny_dinov2_dir, tmp_path):
    """Published LLaVA checkpoints name the projector `multi_modal_projector.*` (transformers < 4.52 saves it so too);
    transformers >= 4.52 may write `model.multi_modal_projector.*`; without biases the projector's are zero."""
    from safetensors.torch import load_file, save_file

    folder, projector = llava_folder
    folder = shutil.copytree(folder, tmp_path / "copy")  # the fixture's folder is shared
    state = load_file(folder / "model.safetensors")
    renamed = {("model." + k if k.startswith("multi_modal_projector.") else k): v for k, v in state.items()
               if not (k.startswith("multi_modal_projector.") and k.endswith(".bias"))}
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"multimodal_projector_bias": False}))
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1"])
    model = build_model(recipe.model).model
    initialise_from(model, f"hf:{folder}", log=lambda *_: None)
    net = model.bridge.connector.net
    assert torch.equal(net[0].weight, projector["connector.net.0.weight"]) and not net[0].bias.any()
    assert torch.equal(net[2].weight, projector["connector.net.2.weight"]) and not net[2].bias.any()


@pytest.fixture(scope="module")
def other_dinov2_dir(tmp_path_factory):
    """The tiny DINOv2's architecture with other weights."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("other_dinov2")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=56)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("overrides, says", [
    (["model.vision_layer=-2"], "reads vision layer -1, this model's encoder layer -2 (set model.vision_layer: -1)"),
    (["model.bridge_options={activation: silu}"], "activation is 'gelu', this model's 'silu'"),
    (["model.bridge=memvp"], "initialises an mlp -> input_space bridge"),
    (["model.language_model=GPT2"], "its language model differs from model.language_model's"),
    (["model.vision_encoder=OTHER"], "its vision tower holds other weights than model.vision_encoder"),
])
def test_a_folder_that_does_not_fit_the_run_is_refused_saying_why(llava_folder, tiny_llama_dir, tiny_dinov2_dir,
                                                                  tiny_gpt2_dir, other_dinov2_dir, overrides, says):
    folder, _ = llava_folder
    overrides = [o.replace("GPT2", str(tiny_gpt2_dir)).replace("OTHER", str(other_dinov2_dir)) for o in overrides]
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1", *overrides])
    model = build_model(recipe.model).model
    with pytest.raises(ConfigError, match="model.init_from=hf:") as error:
        initialise_from(model, f"hf:{folder}", log=lambda *_: None)
    assert says in str(error.value)


def test_a_folder_that_is_not_llava_is_refused(tmp_path, tiny_llama_dir, tiny_dinov2_dir):
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1"])
    model = build_model(recipe.model).model
    with pytest.raises(ConfigError, match="field 'model_type' is 'llama'; hf: reads a LLaVA folder"):
        initialise_from(model, f"hf:{tiny_llama_dir}", log=lambda *_: None)
    with pytest.raises(ConfigError, match="config.json is missing"):
        initialise_from(model, f"hf:{tmp_path / 'nowhere'}", log=lambda *_: None)
