"""A tiny Shapes export in every layout and a saved run of a tiny LLaMA + DINOv2 model."""

from __future__ import annotations

import json

import pytest
import yaml

from vlbridge.build import build_model
from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import export_shapes
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge.recipe import load_recipe


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """12 scenes at 56 px (10 train, 1 val, 1 test) in the LLaVA, COCO, VQAv2 and ScienceQA layouts."""
    out = tmp_path_factory.mktemp("shapes_eval")
    export_shapes(generate_shapes(ShapesConfig(n=12, seed=5, image_size=56)), out)
    return out


@pytest.fixture(scope="session")
def manifest(shapes):
    return json.loads((shapes / "manifest.json").read_text())


def tiny_overrides(llm, vision) -> list[str]:
    # sampling (seeded, recorded) so the random tiny LM writes words rather than only new lines
    return [f"model.language_model={llm}", f"model.vision_encoder={vision}", "model.vision_layer=-1",
            "data.cache_features=false", "eval.do_sample=true", "eval.batch_size=8"]


@pytest.fixture(scope="session")
def recipe_file(tmp_path_factory, tiny_llama_dir, tiny_dinov2_dir):
    folder = tmp_path_factory.mktemp("recipe")
    recipe = load_recipe(None, tiny_overrides(tiny_llama_dir, tiny_dinov2_dir) + [f"train.output_dir={folder / 'out'}"])
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, recipe_file):
    """A run folder as vlbridge train leaves it (final/ holds the bridge-only checkpoint)."""
    recipe = load_recipe(recipe_file)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    folder = tmp_path_factory.mktemp("runs") / "tiny"
    save_checkpoint(built.model, recipe, folder / "final")
    return folder
