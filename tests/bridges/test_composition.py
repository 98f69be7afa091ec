"""Composing a bridge by recipe: presets expand to a connector and an injection, the recipe overrides either, and
building checks that the two (and the front end) fit, with errors that say what to change."""

from __future__ import annotations

import pytest
import yaml

from vlbridge.bridges.registry import CONNECTORS, INJECTIONS, build_bridge, resolve_spec
from vlbridge.build import build_model
from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe
from vlbridge_cli.main import main

TINY_QFORMER = ("{init: random, num_query_tokens: 4, "
                "sizes: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}}")


def spec(*overrides):
    return resolve_spec(load_recipe(None, list(overrides)).model)


def test_presets_expand_to_their_pair():
    assert spec("model.bridge=llava").pair == "mlp -> input_space"
    memvp = spec("model.bridge=memvp", "model.bridge_options={num_slots: 64, keys_only: true}")
    assert memvp.pair == "mlp -> memory_space" and memvp.connector_options["init"] == "xavier"
    assert memvp.injection_options["num_slots"] == 64 and memvp.injection_options["visual_in_values"] is False
    assert spec("model.bridge=memvp", "model.bridge_options={visual_prompts: false}").connector == "zeros"
    assert spec("model.bridge=blip2").pair == "qformer -> input_space"


def test_the_recipe_overrides_the_presets_connector_or_injection():
    # another injection: its own defaults, the preset's connector and its options kept
    composed = spec("model.bridge=blip2", "model.bridge_options={num_query_tokens: 8}", "model.injection=memory_space",
                    "model.injection_options={num_slots: 16}")
    assert composed.pair == "qformer -> memory_space"
    assert composed.connector_options["num_query_tokens"] == 8 and composed.injection_options == {"num_slots": 16}
    # the same connector: the options merge over the preset's
    merged = spec("model.bridge=memvp", "model.connector_options={hidden: 64}")
    assert merged.connector_options == {"hidden": 64, "activation": "silu", "layers": 2, "init": "xavier"}
    # another connector: the preset's options were for its own, so they do not carry over
    assert spec("model.bridge=memvp", "model.connector=qformer").connector_options == {}
    # no preset: both named
    bare = spec("model.bridge=null", "model.connector=mlp", "model.injection=cross_attention")
    assert bare.pair == "mlp -> cross_attention" and bare.features == "grid" and bare.pool == 1


@pytest.mark.parametrize("overrides, says", [
    (["model.bridge=nope"], r"unknown bridge preset 'nope' \(model.bridge\); valid: \['blip2', 'llava', 'memvp'\]"),
    (["model.connector=mpl"], r"unknown connector 'mpl' \(model.connector\); valid: \[.*'mlp'"),
    (["model.injection=input"], r"unknown injection 'input' \(model.injection\); valid: \['cross_attention'"),
    (["model.bridge=null", "model.connector=mlp"], r"name both model.connector and model.injection"),
    (["model.bridge=null", "model.bridge_options={pool: 2}", "model.connector=mlp", "model.injection=input_space"],
     r"bridge_options are a preset's"),
])
def test_unknown_names_and_incomplete_pairs_are_refused(overrides, says):
    with pytest.raises(ConfigError, match=says):
        spec(*overrides)


def test_building_checks_the_handshake(tiny_llama_dir, tiny_dinov2_dir):
    common = [f"model.language_model={tiny_llama_dir}", "model.vision_layer=-1"]
    with pytest.raises(ConfigError, match="reads pixels, so there is no vision encoder to run"):
        build_model(load_recipe(None, [*common, f"model.vision_encoder={tiny_dinov2_dir}",
                                       "model.connector=patch"]).model)
    with pytest.raises(ConfigError, match="reads vision features, but model.vision_encoder is none"):
        build_model(load_recipe(None, [*common, "model.vision_encoder=none"]).model)
    with pytest.raises(ConfigError, match=r"gives 16 vectors per image, the injection has room for 8"):
        build_model(load_recipe(None, [*common, f"model.vision_encoder={tiny_dinov2_dir}", "model.bridge=memvp",
                                       "model.bridge_options={num_slots: 8}"]).model)
    with pytest.raises(ConfigError, match=r"unknown injection 'cross_attention' option\(s\) \['every_k'\]"):
        build_model(load_recipe(None, [*common, f"model.vision_encoder={tiny_dinov2_dir}",
                                       "model.injection=cross_attention", "model.injection_options={every_k: 2}"]).model)


def test_a_registered_connectors_declared_input_must_be_what_it_reads():
    from vlbridge.bridges.spec import BridgeSpec

    entry = CONNECTORS["mlp"]
    CONNECTORS["liar"] = entry._replace(consumes="pixels")
    try:
        with pytest.raises(ConfigError, match="registered as reading pixels, its module reads features"):
            build_bridge(BridgeSpec("liar", {}, "input_space", {}), type("LM", (), {"hidden_size": 8})())
    finally:
        del CONNECTORS["liar"]
    assert set(INJECTIONS) == {"input_space", "memory_space", "cross_attention"}


def test_a_composed_pair_trains_evaluates_and_reports_its_cost_from_the_command_line(tmp_path, tiny_llama_dir,
                                                                                    tiny_dinov2_dir, shapes_dir, capsys):
    data = shapes_dir
    pair = ["--set", "model.connector=qformer", "--set", f"model.connector_options={TINY_QFORMER}",
            "--set", "model.injection=memory_space", "--set", "model.injection_options={num_slots: 8}"]
    run = tmp_path / "run"
    recipe = tmp_path / "tiny.yaml"  # the LLaVA-style recipe on the tiny models
    recipe.write_text(yaml.safe_dump({
        "model": {"language_model": str(tiny_llama_dir), "vision_encoder": str(tiny_dinov2_dir), "vision_layer": -1,
                  "bridge": "llava"},
        "data": {"train": str(data / "train_short.json"), "val": str(data / "val_short.json"), "image_root": str(data)},
        "train": {"steps": 2, "batch_size": 2, "eval_samples": 2, "output_dir": str(run)},
        "eval": {"max_new_tokens": 2}}))
    assert main(["info", str(recipe), *pair]) == 0
    out = capsys.readouterr().out
    assert "qformer -> memory_space" in out and "8 memory slots per FFN in 2 layers" in out
    assert main(["train", str(recipe), *pair]) == 0
    assert main(["eval", "--run", str(run), "--data", str(data / "val_short.json"), "--limit", "2"]) == 0
    import json

    meta = json.loads((run / "final" / "meta.json").read_text())
    assert meta["spec"]["connector"] == "qformer" and meta["spec"]["injection"] == "memory_space"


@pytest.mark.parametrize("options, vectors", [("{pool: 2}", 4), ("{features: pooled}", 1)])
def test_the_connectors_cost_counts_the_vectors_it_really_reads(options, vectors, tiny_llama_dir, tiny_dinov2_dir):
    from vlbridge.cost import sample_flops
    from vlbridge.flops import projector_flops

    built = build_model(load_recipe(None, [f"model.language_model={tiny_llama_dir}",
                                           f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1",
                                           f"model.bridge_options={options}"]).model)
    flops = sample_flops(built.model, 10)  # the tiny DINOv2 gives a 4 x 4 grid, 32 wide; the tiny LLaMA is 64 wide
    assert flops["visual_tokens"] == vectors and flops["sequence_length"] == 10 + vectors
    assert flops["connector"] == projector_flops(32, 64, vectors, hidden=64)
