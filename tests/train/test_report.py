"""The start-of-run report: FLOPs per step against torch's FLOP counter, the activation-memory estimate
against the tensors autograd really saves, and the report printed and logged before the first step."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vlbridge.batch import ImageInputs
from vlbridge.build import build_model
from vlbridge.data.llava_json import read_llava_json
from vlbridge.flops import LMShape, count_flops
from vlbridge.runs import prompt_collator
from vlbridge.train.parameter_groups import apply_trainable
from vlbridge.train.report import activation_bytes, start_report
from vlbridge.train.trainer import train


def saved_tensor_bytes(model, batch) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``model(batch)``, parameters
    excluded (what activation memory is)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(batch)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


@pytest.mark.parametrize("lm, bridge, trainable", [
    ("llama", "llava", "[bridge]"), ("llama", "memvp", "[bridge]"), ("gpt2", "llava", "[bridge, lm]"),
])
def test_flops_and_activation_memory_match_what_torch_measures(make_recipe, shapes_dir, tiny_llama_dir, tiny_gpt2_dir,
                                                               lm, bridge, trainable):
    folder = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir}[lm]
    recipe = make_recipe(f"model.language_model={folder}", f"model.bridge={bridge}", f"train.trainable={trainable}")
    built = build_model(recipe.model)
    counts = apply_trainable(built.model, recipe.train.trainable)
    samples = read_llava_json(shapes_dir / "train_short.json", image_root=shapes_dir)
    collator = prompt_collator(built, with_answer=True)
    built.model.train()

    # FLOPs: one sample (no padding), forward and backward, encoder run on pixels
    report = start_report(built, counts, recipe.train.trainable, collator, samples[:1], samples_per_micro_batch=1,
                          micro_batches_per_step=1, cached_features=False, precision="fp32")
    batch = collator(samples[:1])
    measured = count_flops(lambda: built.model(batch).loss_sum.backward())
    assert report["train_flops_per_step"] == pytest.approx(measured, rel=0.06)

    # activation memory: a padded batch of 4 on cached features (the encoder saves nothing then)
    batch = collator(samples[:4])
    with torch.no_grad():
        features = built.model.vision_encoder(batch.images.pixel_values)
    batch = dataclasses.replace(batch, images=ImageInputs(grid=features.grid, pooled=features.pooled))
    lm, injection = built.model.language_model, built.model.bridge.injection
    tokens = batch.input_ids.numel() + 4 * (built.image_tokens - 1)
    estimate = activation_bytes(LMShape.of(lm), tokens, batch.num_supervised, weights_train="lm" in trainable) \
        + injection.activation_bytes(lm, tokens, built.model.bridge.num_visual_tokens(16), 4)
    assert estimate == pytest.approx(saved_tensor_bytes(built.model, batch), rel=0.15)


def test_report_is_printed_and_logged_before_the_first_step(make_recipe, tmp_path):
    messages = []
    result = train(make_recipe("train.steps=1", "train.eval_samples=1"), log=messages.append)
    report = result["report"]
    assert messages[0].startswith("group") and "bridge" in messages[0]
    assert "training FLOPs per step" in messages[0] and "activation memory per micro-batch" in messages[0]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 0, "parameters_total": report["parameters_total"],
                        "parameters_trainable": report["parameters_trainable"],
                        "train_flops_per_step": report["train_flops_per_step"],
                        "activation_bytes_per_micro_batch": report["activation_bytes_per_micro_batch"]}
    assert lines[1]["step"] == 1 and "loss" in lines[1]
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == json.loads(json.dumps(report))
    counts = result["parameter_counts"]
    assert report["parameters_trainable"] == counts["bridge"]["trainable"] > 0
    assert report["parameters_total"] == sum(c["total"] for c in counts.values())
    assert report["samples_per_step"] == 4 and report["forward_flops_per_sample"]["vision_encoder"] > 0


def test_a_clip_costs_its_frames_in_the_encoder_and_the_connector(make_recipe, tmp_path):
    from PIL import Image

    from vlbridge.data.sample import Sample, Turn

    frames = []
    for t in range(3):
        frames.append(tmp_path / f"f{t}.png")
        Image.new("RGB", (56, 56), (40 * t, 200, 90)).save(frames[-1])
    clip = Sample("clip", (Turn("user", "<image>\nWhich way did it move?"), Turn("assistant", "right")),
                  frames=tuple(frames))
    recipe = make_recipe("model.bridge=null", "model.connector=perceiver", "model.injection=input_space",
                         "model.connector_options={depth: 1, num_latents: 4, heads: 2, head_dim: 8, max_frames: 4}")
    built = build_model(recipe.model)
    counts = apply_trainable(built.model, recipe.train.trainable)
    collator = prompt_collator(built, with_answer=True)
    built.model.train()
    report = start_report(built, counts, recipe.train.trainable, collator, [clip], samples_per_micro_batch=1,
                          micro_batches_per_step=1, cached_features=False, precision="fp32")
    assert report["mean_frames_per_image_sample"] == 3
    encoder = built.model.vision_encoder
    height, width = encoder.backbone.preprocessing.output_size
    with torch.no_grad():
        one_frame = count_flops(lambda: encoder(torch.zeros(1, 3, height, width)))
    assert report["forward_flops_per_sample"]["vision_encoder"] == 3 * one_frame
    inputs = built.model.bridge.num_visual_inputs(built.model.num_connector_inputs)
    assert report["forward_flops_per_sample"]["bridge"] == built.model.bridge.connector.flops(3 * inputs)
    # and the step's total is what torch counts on the clip's batch
    batch = collator([clip])
    measured = count_flops(lambda: built.model(batch).loss_sum.backward())
    assert report["train_flops_per_step"] == pytest.approx(measured, rel=0.06)
