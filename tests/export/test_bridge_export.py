"""Bridges no Hugging Face class computes: their trained tensors, recipe and a model card, the reason said; the folder
is a vlbridge checkpoint again; BLIP-2's Q-Former also under Hugging Face names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vlbridge_cli.main import main

TINY_QFORMER = ("model.bridge=blip2", "model.bridge_options={init: random, num_query_tokens: 4, sizes: {hidden_size: "
                "32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}}")


@pytest.mark.parametrize("overrides, says", [
    (("model.bridge=memvp",), "mlp -> memory_space bridge: transformers has no model with an MLP projector and "
                              "MemVP's memory-space injection"),
    (("model.connector=perceiver", "model.connector_options={depth: 1, num_latents: 4}",
      "model.injection=cross_attention"), "perceiver -> cross_attention bridge"),
])
def test_a_bridge_without_a_hugging_face_class_exports_its_tensors_and_card(make_run, tiny_llama_dir, tiny_dinov2_dir,
                                                                             photos, tmp_path, capsys, overrides, says):
    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir, *overrides)
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--format", "hf", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert says in captured.err and "no Hugging Face model class exists" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "meta.json", "recipe.yaml", "trained.safetensors"]
    theirs, ours = load_file(out / "trained.safetensors"), load_file(run / "final" / "trained.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    card = (out / "README.md").read_text()
    assert says in card and "## How it was trained" in card and "## Evaluation" in card
    # the export is a vlbridge checkpoint: it answers as the run does
    args = ["generate", "--image", str(photos[0]), "--prompt", "What is it?", "--max-new-tokens", "4"]
    assert main([*args, "--run", str(run)]) == 0
    answer = capsys.readouterr().out
    assert main([*args, "--run", str(out)]) == 0
    assert capsys.readouterr().out == answer


def test_the_card_says_what_the_model_is_how_it_trained_and_how_it_scored(make_run, tiny_llama_dir, tiny_dinov2_dir,
                                                                         tmp_path):
    run, recipe = make_run(tiny_llama_dir, tiny_dinov2_dir, "model.bridge=memvp", "train.steps=30", "train.lr=0.002",
                           "model.lora_rank=2")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in [
        {"step": 10, "loss": 2.0}, {"step": 10, "val_exact_match": 0.25}, {"step": 30, "val_exact_match": 0.5,
                                                                           "val_vqa_accuracy": 0.55}]) + "\n")
    (run / "eval-test_short.json").write_text(json.dumps({"task": None, "data": {"file": "test_short.json"},
                                                          "scores": {"exact_match": 0.375, "count": 8}, "limit": 0}))
    (run / "eval-test_short.results.json").write_text("[]")  # an official-format result file: not a report
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--format", "bridge", "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vlbridge\npipeline_tag: image-text-to-text\n")
    assert "# run: a vlbridge vision-language model (mlp -> memory_space)" in card
    assert "connector `mlp`" in card and "injection `memory_space`" in card and "(preset `memvp`" in card
    assert f"`{tiny_dinov2_dir}` (layer -1" in card and f"`{tiny_llama_dir}` (llama, width 64, 2 layers" in card
    assert "LoRA rank 2" in card and "bridge (" in card and "lora (" in card
    assert "**Steps**: 30 of 30" in card and "lr 0.002" in card
    assert "Validation during training (step 30" in card and "exact_match 0.5, vqa_accuracy 0.55" in card
    assert "exact_match 0.375, count 8 (eval-test_short.json)" in card
    assert card.count("vlbridge eval") == 1
    assert "`--format hf` writes" not in card  # memvp has no class


def test_format_bridge_of_a_llava_run_points_to_format_hf(make_run, tiny_llama_dir, tiny_dinov2_dir, tmp_path, capsys):
    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir)
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--format", "bridge", "--out", str(out)]) == 0
    assert "trained tensors" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "`--format hf` writes mlp -> input_space runs as a Hugging Face LlavaForConditionalGeneration" in card
    assert not (out / "config.json").exists()


def test_blip2_says_why_not_and_writes_the_q_former_under_hugging_face_names(make_run, tiny_llama_dir, tiny_dinov2_dir,
                                                                             tmp_path, capsys):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    from vlbridge.runs import load_run

    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir, *TINY_QFORMER)
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no Blip2ForConditionalGeneration computes this model" in err and "CLS included" in err
    state = load_file(out / "blip2_qformer.safetensors")
    # the names are Blip2ForConditionalGeneration's: every tensor loads into one of the same sizes
    built, _ = load_run(run)
    connector = built.model.bridge.connector
    qformer = connector.qformer
    config = Blip2Config(
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                       "image_size": 56, "patch_size": 14,
                       "layer_norm_eps": 1e-5},  # ln_vision's: nn.LayerNorm's default, as LAVIS
        qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                        "encoder_hidden_size": 32, "vocab_size": 30523},
        text_config={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128},
        num_query_tokens=4)
    hf = Blip2ForConditionalGeneration(config)
    result = hf.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if k.startswith(("qformer.", "query_tokens", "language_projection"))]
    assert torch.equal(hf.query_tokens, qformer.query_tokens)
    assert torch.equal(hf.language_projection.weight, connector.language_projection.weight)
    assert torch.equal(hf.vision_model.post_layernorm.weight, connector.ln_vision.weight)
    # and they compute what ours computes on the same image features
    features = torch.randn(2, 16, 32)
    with torch.no_grad():
        hf.eval(), connector.eval()
        theirs = hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1),
                            encoder_hidden_states=hf.vision_model.post_layernorm(features)).last_hidden_state
        ours = connector(features)
        assert (hf.language_projection(theirs) - ours).abs().max() < 1e-5 * ours.abs().max()


def test_tensors_a_run_took_from_init_from_are_exported_too(make_run, tiny_llama_dir, tiny_dinov2_dir, photos, tmp_path,
                                                            capsys):
    """A run that kept another run's projector frozen (model.init_from) and trained only LoRA: its checkpoint holds
    the LoRA alone, its export both, and answers without the other run."""
    import shutil

    from vlbridge.build import build_model
    from vlbridge.recipe import load_recipe
    from vlbridge.train.checkpoint import initialise_from, save_checkpoint
    from vlbridge.train.parameter_groups import apply_trainable

    source, _ = make_run(tiny_llama_dir, tiny_dinov2_dir, name="source")
    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1", "model.lora_rank=2", f"model.init_from={source}",
                                "train.trainable=[lora]"])
    torch.manual_seed(1)
    built = build_model(recipe.model)
    initialise_from(built.model, source, log=lambda *_: None)
    apply_trainable(built.model, recipe.train.trainable)
    with torch.no_grad():
        for parameter in built.model.trainable_parameters().values():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    run = tmp_path / "lora_only"
    save_checkpoint(built.model, recipe, run / "final")
    assert not [k for k in load_file(run / "final" / "trained.safetensors") if k.startswith("bridge.")]
    out = tmp_path / "export"
    assert main(["export", "--run", str(run), "--format", "bridge", "--out", str(out)]) == 0
    exported = load_file(out / "trained.safetensors")
    projector = load_file(source / "final" / "trained.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in projector.items()) and any("lora_" in k for k in exported)
    args = ["generate", "--image", str(photos[0]), "--prompt", "What is it?", "--max-new-tokens", "4"]
    capsys.readouterr()
    assert main([*args, "--run", str(run)]) == 0
    answer = capsys.readouterr().out
    shutil.rmtree(source)
    assert main([*args, "--run", str(out)]) == 0
    assert capsys.readouterr().out == answer
