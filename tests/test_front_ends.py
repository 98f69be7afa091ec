"""Visual front ends: no encoder (a connector reads pixels at each image's own aspect ratio), and a frozen teacher
encoder that exists only in training, its cached features in every batch, its tensors never trained or saved."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vlbridge.data.llava_json import read_llava_json
from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, image_loader, load_run, prompt_collator
from vlbridge.train.checkpoint import WEIGHTS
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge.train.trainer import train


@pytest.fixture
def encoder_free(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, monkeypatch):
    """A patch connector reading pixels, input space, the tiny DINOv2 as the teacher of a patch aligning layer; a
    private feature cache."""
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    return lambda *extra: load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", "model.vision_encoder=none", "model.bridge=null",
        "model.connector=patch", "model.connector_options={image_size: 56, patch: 14}", "model.injection=input_space",
        f"model.teacher_encoder={tiny_dinov2_dir}", "model.teacher_layer=-1", "model.aligner=pal",
        "model.aligner_options={every: 1, heads: 2}",
        f"data.train={shapes_dir / 'train_short.json'}", f"data.val={shapes_dir / 'val_short.json'}", f"data.image_root={shapes_dir}",
        "train.steps=2", "train.batch_size=2", "train.eval_samples=2", f"train.output_dir={tmp_path / 'run'}",
        "eval.max_new_tokens=2", *extra])


def test_the_teacher_is_built_for_training_only_and_stays_frozen(encoder_free):
    recipe = encoder_free()
    assert build_seeded(recipe).model.teacher is None  # inference: no encoder runs at all
    built = build_seeded(recipe, training=True)
    assert built.model.vision_encoder is None and built.model.teacher is not None
    counts = apply_trainable(built.model, ["bridge"])
    assert counts["teacher"]["trainable"] == 0 and counts["teacher"]["total"] > 0
    with pytest.raises(ConfigError, match="teacher encoder stays frozen"):
        apply_trainable(built.model, ["bridge", "teacher"])


def test_batches_carry_the_teachers_cached_features_and_forward_gives_the_visual_positions(encoder_free, shapes_dir,
                                                                                           tmp_path):
    recipe = encoder_free()
    built = build_seeded(recipe, training=True)
    images = image_loader(built, recipe)
    samples = read_llava_json(shapes_dir / "train_short.json", image_root=shapes_dir)[:3]
    images.precompute(samples)
    assert any((tmp_path / "cache" / "features").rglob("*.safetensors"))  # on disk: a second run skips the teacher
    batch = prompt_collator(built, recipe, images, with_answer=True)(samples)
    assert batch.images.pixel_values.shape == (3, 4, 56, 56)  # pixels for the connector, with a valid-pixel channel
    with torch.no_grad():
        expected = built.model.teacher(built.model.teacher.preprocess([Image.open(s.image) for s in samples])).grid
    torch.testing.assert_close(batch.images.teacher, expected)  # (3, 16, 32): the teacher's penultimate grid
    out = built.model(batch, output_hidden_states=True)
    assert len(out.hidden_states) == built.model.language_model.config.num_hidden_layers + 1
    visual, lengths = built.model.visual_tokens(batch)
    assert out.visual_positions.sum(1).tolist() == lengths.tolist() == [16, 16, 16]
    assert out.hidden_states[-1].shape[:2] == out.visual_positions.shape


def test_a_run_with_a_teacher_saves_neither_the_teacher_nor_needs_it_to_load(encoder_free, tmp_path):
    recipe = encoder_free()
    result = train(recipe, log=lambda *_: None)
    teacher = {n: p.clone() for n, p in result["built"].model.named_parameters() if n.startswith("teacher.")}
    assert teacher and all(torch.equal(p, result["built"].model.get_parameter(n)) for n, p in teacher.items())
    saved = load_file(str(tmp_path / "run" / "final" / WEIGHTS))
    assert saved and not any(n.startswith("teacher.") for n in saved)
    assert set(saved) == {n for n in saved if n.startswith("bridge.connector.")}
    meta = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())
    assert meta["vision_encoder"] is None and meta["untrained"] == []
    loaded, _ = load_run(tmp_path / "run")
    assert loaded.model.teacher is None and loaded.model.vision_encoder is None


def test_training_a_teacher_recipe_with_a_model_built_for_inference_is_refused(encoder_free):
    recipe = encoder_free()
    with pytest.raises(ConfigError, match="has no teacher"):
        train(recipe, built=build_seeded(recipe), log=lambda *_: None)
