"""EVE end to end on tiny models: the patch embedding layer from pixels, the patch aligning loss beside the LM loss,
exact resume with the aligner, stage 2 starting from stage 1's PEL and PAL, and inference that builds no encoder."""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vlbridge.bridges.eve.pal import WithAlignment
from vlbridge.data.llava_json import read_llava_json
from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, image_loader, load_run, prompt_collator
from vlbridge.train.checkpoint import TRAINING_WEIGHTS, WEIGHTS
from vlbridge.train.trainer import train

QUIET = {"log": lambda *_: None}


@pytest.fixture
def eve(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, monkeypatch):
    """recipe(run folder, *overrides): EVE's PEL on 56-px canvases (4 x 4 patches of 14 -> a 2 x 2 grid), the tiny
    LLaMA, the tiny DINOv2 as the teacher of a PAL over its 3 hidden-state levels; a private feature cache."""
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    return lambda run, *extra: load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", "model.vision_encoder=none", "model.bridge=null",
        "model.connector=eve_patch", "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}",
        "model.injection=input_space", f"model.teacher_encoder={tiny_dinov2_dir}", "model.teacher_layer=-1",
        "model.aligner=pal", "model.aligner_options={every: 1, heads: 2}",
        f"data.train={shapes_dir / 'train_caption.json'}", f"data.val={shapes_dir / 'val_caption.json'}",
        f"data.image_root={shapes_dir}", "train.steps=4", "train.batch_size=2", "train.eval_samples=2",
        "train.eval_every=0", "train.lr=1e-3", f"train.output_dir={run}", "eval.max_new_tokens=2", *extra])


def test_the_total_loss_is_the_lm_loss_plus_the_weighted_alignment_loss(eve, tmp_path, shapes_dir):
    recipe = eve(tmp_path / "run", "model.aligner_options={every: 1, heads: 2, weight: 0.5}")
    built = build_seeded(recipe, training=True)
    images = image_loader(built, recipe)
    samples = read_llava_json(shapes_dir / "train_caption.json", image_root=shapes_dir)[:3]
    images.precompute(samples)
    batch = prompt_collator(built, recipe, images, with_answer=True)(samples)
    lm_only = built.model(batch)
    total = WithAlignment(built.model)(batch)
    assert total.alignment_sum > 0  # 1 - cos of an untrained PAL's predictions
    torch.testing.assert_close(total.loss_sum, lm_only.loss_sum + 0.5 * total.alignment_sum)
    total.loss_sum.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in built.model.aligner.parameters())
    assert built.model.bridge.connector.patch_embed.weight.grad.abs().sum() > 0  # the PAL's loss reaches the PEL


def test_a_run_keeps_the_aligner_out_of_its_inference_weights_and_loads_without_any_encoder(eve, tmp_path,
                                                                                            monkeypatch):
    run = tmp_path / "run"
    result = train(eve(run), **QUIET)
    assert all(h["alignment"] > 0 for h in result["history"])  # logged each step beside the loss
    assert result["parameter_counts"]["aligner"]["trainable"] > 0  # trains though train.trainable says [bridge]
    inference = load_file(str(run / "final" / WEIGHTS))
    training_only = load_file(str(run / "final" / TRAINING_WEIGHTS))
    assert inference and all(n.startswith("bridge.connector.") for n in inference)
    assert training_only and all(n.startswith("aligner.") for n in training_only)

    def no_encoder(*args, **kwargs):
        raise AssertionError("inference built a vision encoder")

    monkeypatch.setattr("vlbridge.encoders.build_vision_encoder", no_encoder)  # the teacher's too
    loaded, recipe = load_run(run)
    model = loaded.model
    assert model.vision_encoder is None and model.teacher is None and model.aligner is None
    trained = result["built"].model.trainable_state_dict()
    assert all(torch.equal(t, trained[k]) for k, t in model.trainable_state_dict().items())


def test_a_run_with_an_aligner_resumes_exactly(eve, tmp_path):
    run = tmp_path / "run"
    recipe = eve(run, "train.save_every=2")
    reference = train(recipe, **QUIET)
    assert any(n.startswith("aligner.") for n in load_file(str(run / "checkpoint-2" / TRAINING_WEIGHTS)))
    shutil.rmtree(run / "final")  # as if it had stopped after its checkpoint at step 2
    resumed = train(recipe, resume=run, **QUIET)
    keys = ("loss", "alignment", "grad_norm")
    assert [[h[k] for k in keys] for h in resumed["history"]] == [[h[k] for k in keys] for h in reference["history"]]
    expected = reference["built"].model.trainable_state_dict()
    got = resumed["built"].model.trainable_state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)


def test_stage_two_starts_from_stage_ones_pel_and_pal_and_trains_the_lm(eve, tmp_path):
    stage1 = tmp_path / "stage1"
    first = train(eve(stage1, "train.steps=2"), **QUIET)
    # lr 0: what stage 2 saves is what it started from
    second = train(eve(tmp_path / "stage2", f"model.init_from={stage1}", "train.trainable=[bridge, lm]",
                       "train.steps=1", "train.lr=0"), **QUIET)
    before = first["built"].model.trainable_state_dict()
    after = second["built"].model.trainable_state_dict()
    assert any(k.startswith("aligner.") for k in before)
    assert all(torch.equal(after[k], t) for k, t in before.items())  # the PEL and the PAL carried over
    assert second["parameter_counts"]["lm"]["trainable"] == second["parameter_counts"]["lm"]["total"] > 0
    saved = load_file(str(tmp_path / "stage2" / "final" / WEIGHTS))
    assert any(k.startswith("language_model.") for k in saved)  # the trained LM is part of the inference weights


@pytest.mark.parametrize("overrides, message", [
    (["model.aligner=null", "model.aligner_options={}"], "teacher_encoder and model.aligner go together"),
    (["model.teacher_encoder=null"], "teacher_encoder and model.aligner go together"),
    (["model.aligner=bogus"], "unknown aligner 'bogus'"),
    (["model.aligner_options={every: 1, bogus: 2}"], r"unknown aligner 'pal' option\(s\) \['bogus'\]"),
])
def test_bad_teacher_and_aligner_settings_are_refused_before_any_model_loads(eve, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_seeded(eve(tmp_path / "run", *overrides), training=True)


def test_an_aligner_needs_a_connector_that_gives_a_grid(eve, tmp_path, tiny_dinov2_dir):
    recipe = eve(tmp_path / "run", f"model.vision_encoder={tiny_dinov2_dir}", "model.connector=mlp",
                 "model.connector_options={}")
    with pytest.raises(ConfigError, match="connector 'mlp' gives no grid"):
        build_seeded(recipe, training=True)


def test_generate_and_eval_from_an_eve_run_read_no_encoder_on_square_and_wide_images(eve, tmp_path, shapes_dir,
                                                                                      monkeypatch, capsys):
    from vlbridge_cli.main import main

    run = tmp_path / "run"
    train(eve(run, "train.steps=1"), **QUIET)

    def no_encoder(*args, **kwargs):
        raise AssertionError("inference built a vision encoder")

    monkeypatch.setattr("vlbridge.encoders.build_vision_encoder", no_encoder)
    for name, size in (("square.png", (56, 56)), ("wide.png", (140, 28))):
        Image.new("RGB", size, (200, 30, 30)).save(tmp_path / name)
        assert main(["generate", "--run", str(run), "--image", str(tmp_path / name), "--prompt", "What color?",
                     "--max-new-tokens", "2"]) == 0
        assert capsys.readouterr().out.endswith("\n")  # the (untrained, possibly empty) answer's line
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", str(run), "--data", str(shapes_dir / "test_short.json"), "--images",
                 str(shapes_dir), "--limit", "2", "--max-new-tokens", "2", "--out", str(out)]) == 0
    assert out.is_file()
