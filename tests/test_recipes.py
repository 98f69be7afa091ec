"""Every shipped recipe loads, names a buildable bridge (its options parse, its teacher and aligner go together),
and the staged recipes start from the run their previous stage writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlbridge.bridges.registry import CONNECTORS, INJECTIONS, build_aligner, parse_options, resolve_spec
from vlbridge.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def test_the_recipes_are_found():
    assert len(RECIPES) >= 11 and {"eve", "vadapter"} <= {p.parent.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_recipe_loads_and_names_a_buildable_bridge(path):
    recipe = load_recipe(path)
    spec = resolve_spec(recipe.model)
    parse_options(CONNECTORS[spec.connector].options, spec.connector_options, spec.connector)
    parse_options(INJECTIONS[spec.injection][0], spec.injection_options, spec.injection)
    build_aligner(recipe.model, None, None)  # checks the teacher / aligner pair and options, builds nothing


@pytest.mark.parametrize("method, stages, same_connector", [("eve", 3, True), ("blip2", 2, False)])  # BLIP-2's
def test_each_stage_starts_from_the_previous_stages_run(method, stages, same_connector):  # stage-1 heads go
    folder = Path(__file__).resolve().parents[1] / "recipes" / method
    recipes = [load_recipe(folder / f"stage{k}.yaml") for k in range(1, stages + 1)]
    assert recipes[0].model.init_from is None
    for before, after in zip(recipes, recipes[1:]):
        assert after.model.init_from == before.train.output_dir
        if same_connector:  # the stages' tensors must fit one another
            assert resolve_spec(after.model).connector_options == resolve_spec(before.model).connector_options


def test_vadapter_stage_two_builds_its_adapter_from_stage_one():
    folder = Path(__file__).resolve().parents[1] / "recipes" / "vadapter"
    stage1, stage2 = (load_recipe(folder / f"stage{k}.yaml") for k in (1, 2))
    assert stage2.model.init_from == stage1.train.output_dir and "lm" in stage1.train.trainable
    adapter, resampler = resolve_spec(stage2.model).connector_options, resolve_spec(stage1.model).connector_options
    assert adapter["layers"] == stage1.model.language_model_layers  # the tiny LM's depth
    assert adapter["language_model"] == stage1.model.language_model
    assert (adapter["resampler_depth"], adapter["num_latents"], adapter["heads"], adapter["head_dim"]) == (
        resampler["depth"], resampler["num_latents"], resampler["heads"], resampler["head_dim"])
