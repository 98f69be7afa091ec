"""The training loop end to end on tiny random models and a small Shapes set."""

from __future__ import annotations

import json

import pytest
import torch

from vlbridge.errors import ConfigError
from vlbridge.runs import load_run
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded
from vlbridge.train.trainer import train


def tiny_recipe(tmp_path, shapes_dir, llm, vision, *extra):
    return load_recipe(None, [
        f"model.language_model={llm}", f"model.vision_encoder={vision}", "model.vision_layer=-1",
        f"data.train={shapes_dir / 'train_short.json'}", f"data.val={shapes_dir / 'val_short.json'}",
        f"data.image_root={shapes_dir}", "data.cache_features=false",
        "train.steps=6", "train.batch_size=4", "train.lr=5e-3", "train.warmup_steps=1", "train.eval_every=3",
        "train.eval_samples=4", f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=3", *extra,
    ])


def test_train_saves_a_checkpoint_that_reloads_to_the_same_model(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, "train.grad_accum=2")
    result = train(recipe, log=lambda *_: None)
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "loss" in l] == list(range(1, 7))
    assert any("val_exact_match" in l for l in lines)
    # only the bridge was trained and saved; the LM and encoder are rebuilt from their folders
    trained = result["built"].model.trainable_state_dict()
    assert trained and all(name.startswith("bridge.") for name in trained)
    reloaded, _ = load_run(tmp_path / "run")
    for name, tensor in reloaded.model.trainable_state_dict().items():
        assert torch.equal(tensor, trained[name]), name


def test_eval_loss_logs_the_teacher_forced_validation_loss(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.eval.loss import validation_loss
    from vlbridge.runs import image_loader, prompt_collator

    recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, "train.eval_loss=true")
    result = train(recipe, log=lambda *_: None)
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {l["step"]: l["val_loss"] for l in lines if "val_loss" in l}
    assert sorted(logged) == [3, 6] and logged[3] != logged[6]
    built = result["built"]
    val = read_llava_json(shapes_dir / "val_short.json", image_root=shapes_dir)[:4]
    collator = prompt_collator(built, recipe, image_loader(built, recipe), with_answer=True)
    assert logged[6] == pytest.approx(validation_loss(built.model, collator, val), rel=1e-6)
    built.model.train()
    validation_loss(built.model, collator, val)
    assert built.model.training  # the mode is restored


def test_loss_goes_down_when_overfitting_a_batch(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, "train.steps=12",
                         "train.trainable=[bridge, lm]", "train.lr=1e-2", "train.eval_every=0")
    result = train(recipe, log=lambda *_: None)
    losses = [h["loss"] for h in result["history"]]
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


def test_training_with_lora_trains_only_bridge_and_lora(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, "model.lora_rank=4", "train.steps=2",
                         "train.eval_every=0")
    result = train(recipe, log=lambda *_: None)
    names = set(result["built"].model.trainable_state_dict())
    assert any("lora_A" in n for n in names) and any(n.startswith("bridge.") for n in names)
    assert all(n.startswith("bridge.") or "lora_" in n for n in names)
    assert result["parameter_counts"]["lm"]["trainable"] == 0


def test_unknown_trainable_group_is_rejected(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, "train.trainable=[bridge, brigde]")
    with pytest.raises(ConfigError, match=r"unknown parameter group\(s\) \['brigde'\]; valid"):
        train(recipe, log=lambda *_: None)


def test_a_recipe_builds_the_same_model_whatever_ran_before(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    """Untrained evaluation, the demo and the benchmarks build before training: the bridge's initial weights
    come from the recipe's seed, not from the global generator's state."""
    states = []
    for prior in (1, 2):
        torch.manual_seed(prior)
        recipe = tiny_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir)
        states.append(build_seeded(recipe).model.bridge.state_dict())
    assert states[0].keys() == states[1].keys()
    for name, tensor in states[0].items():
        torch.testing.assert_close(states[1][name], tensor, rtol=0, atol=0, msg=name)
