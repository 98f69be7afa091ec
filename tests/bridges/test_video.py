"""Clips end to end on tiny models: the encoder reads each frame, the perceiver connector reads the clip with its
frame embeddings, and the input-space, memory-space and cross-attention injections train on and generate from the
clip's tokens. Connectors that cannot read a clip, and clips longer than the frame embeddings, are refused naming
the record."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import DataError
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.image_inputs import CachedFeatures
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, prompt_collator
from vlbridge.train.parameter_groups import apply_trainable

PERCEIVER = "model.connector_options={depth: 1, num_latents: 4, heads: 2, head_dim: 8, max_frames: 4}"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Four 56x56 frames of a square moving right."""
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for t in range(4):
        image = Image.new("RGB", (56, 56), (200, 200, 200))
        image.paste((220, 30, 40), (4 + 12 * t, 20, 16 + 12 * t, 32))
        path = folder / f"f{t}.png"
        image.save(path)
        paths.append(path)
    return paths


def clip(rid: str, frames, question="Which way did the square move?", answer="right") -> Sample:
    return Sample(rid, (Turn("user", f"<image>\n{question}"), Turn("assistant", answer)), frames=tuple(frames),
                  source="clips.json")


@pytest.fixture(scope="module")
def samples(frames):
    return [clip("forward", frames[:3]),
            Sample("text", (Turn("user", "Name a shape."), Turn("assistant", "circle"))),
            clip("backward", frames[2::-1], answer="left"),
            clip("count", frames[1:], "How many frames show the square?", "3")]


def build(lm_dir, encoder_dir, connector="perceiver", injection="input_space", *options):
    encoder = ["model.vision_encoder=none"] if connector == "patch" else \
        [f"model.vision_encoder={encoder_dir}", "model.vision_layer=-1"]
    recipe = load_recipe(None, [f"model.language_model={lm_dir}", *encoder, "model.bridge=null",
                                f"model.connector={connector}", f"model.injection={injection}",
                                "data.cache_features=false", *options])
    return build_seeded(recipe)


@pytest.mark.parametrize("injection", ["input_space", "memory_space", "cross_attention"])
def test_a_clip_trains_and_generates_with_each_injection(injection, samples, tiny_llama_dir, tiny_dinov2_dir):
    built = build(tiny_llama_dir, tiny_dinov2_dir, "perceiver", injection, PERCEIVER)
    model = built.model
    apply_trainable(model, ["bridge"])
    batch = prompt_collator(built, with_answer=True)(samples)
    assert batch.images.num_frames == 3 and batch.images.pixel_values.shape == (3, 3, 3, 56, 56)
    visual, lengths = model.visual_tokens(batch)
    assert visual.shape == (4, 4, model.bridge.injection.input_width(model.language_model)) and lengths is None
    assert visual[1].abs().sum() == 0  # the text-only row

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    # memory space (p_v = 0) and cross-attention (gates at 0) start as no-ops: the second step reaches the connector
    for _ in range(2):
        optimizer.zero_grad()
        output = model(batch)
        (output.loss_sum / output.num_tokens).backward()
        optimizer.step()
    frame_embs = model.bridge.connector.resampler.frame_embs
    assert frame_embs.grad is not None and frame_embs.grad[:3].abs().sum() > 0
    assert frame_embs.grad[3].abs().sum() == 0  # no clip has a fourth frame
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable and "bridge.connector.resampler.frame_embs" in changed

    # features from the cache give the same clip tokens as the encoder run on the frames' pixels
    model.eval()
    cached = prompt_collator(built, images=CachedFeatures(model.vision_encoder), with_answer=True)(samples)
    assert cached.images.grid.shape == (3, 3, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.visual_tokens(cached)[0], model.visual_tokens(batch)[0],
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(cached).loss_sum, model(batch).loss_sum, atol=1e-4, rtol=1e-4)

    # batched greedy generation on clips (and a text-only row) equals one by one
    model.language_model.model.generation_config.eos_token_id = None
    prompts = prompt_collator(built)
    batched = generate_answers(model, built.tokenizer, prompts, samples, GenerationSettings(3, len(samples)))
    single = generate_answers(model, built.tokenizer, prompts, samples, GenerationSettings(3, 1))
    assert batched == single and len(batched) == len(samples)


def test_the_frames_order_reaches_the_visual_tokens(frames, tiny_llama_dir, tiny_dinov2_dir):
    built = build(tiny_llama_dir, tiny_dinov2_dir, "perceiver", "input_space", PERCEIVER)
    collate = prompt_collator(built)
    with torch.no_grad():
        forward = built.model.visual_vectors(collate([clip("a", frames)]))
        backward = built.model.visual_vectors(collate([clip("a", frames[::-1])]))
    assert not torch.allclose(forward, backward, atol=1e-4)  # the frame embeddings tell the order


def test_bridge_pools_each_frame_alone():
    from vlbridge.bridges.bridge import Bridge
    from vlbridge.bridges.connectors.perceiver import PerceiverOptions, build_perceiver

    class Recording(torch.nn.Module):
        def __init__(self, connector):
            super().__init__()
            self.connector, self.seen = connector, []

        def forward(self, features):
            self.seen.append(features)
            return self.connector(features)

    torch.manual_seed(0)
    perceiver = build_perceiver(8, 6, PerceiverOptions(depth=1, num_latents=3, heads=2, head_dim=4, max_frames=4))
    bridge = Bridge(perceiver, injection=None, pool=2)  # the injection is not used by forward
    grid = torch.randn(2, 3, 16, 8)  # (B, F, 4x4 grid, d_v)
    out, _ = bridge(grid)
    assert out.shape == (2, 3, 6)
    expected = torch.cat([bridge.pool_grid(grid[:, t])[:, None] for t in range(3)], dim=1)  # (B, F, 4, d_v)
    torch.testing.assert_close(bridge.pool_grid(grid), expected)
    pooled = Bridge(perceiver, injection=None, features="pooled")
    assert pooled(None, torch.randn(2, 3, 8))[0].shape == (2, 3, 6)


@pytest.mark.parametrize("connector, options, message", [
    ("mlp", [], "MLPProjector connector reads one image per sample"),
    ("qformer", ["model.connector_options={init: random, num_query_tokens: 4, sizes: {hidden_size: 32, "
                 "num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}}"], "connector reads one image"),
    ("patch", [], "connector reads one image per sample"),
    ("perceiver", ["model.connector_options={depth: 1, num_latents: 4, heads: 2, head_dim: 8}"],
     "no frame embeddings (connector option max_frames is unset)"),
    ("perceiver", ["model.connector_options={depth: 1, num_latents: 4, heads: 2, head_dim: 8, max_frames: 2}"],
     "a clip of 3 frames, more than the PerceiverConnector connector's frame embeddings allow (connector option "
     "max_frames=2)"),
])
def test_a_clip_the_connector_cannot_read_is_refused_naming_the_record(connector, options, message, samples,
                                                                      tiny_llama_dir, tiny_dinov2_dir):
    built = build(tiny_llama_dir, tiny_dinov2_dir, connector, "input_space", *options)
    batch = prompt_collator(built, with_answer=True)(samples)
    for run in (lambda: built.model(batch), lambda: built.model.generate(prompt_collator(built)(samples), 2)):
        with pytest.raises(DataError) as error:
            run()
        assert message in str(error.value)
        assert (error.value.file, error.value.record, error.value.field) == ("clips.json", "forward", "image")
    if "one image" in message:
        assert "perceiver and tiny_lm" in str(error.value)


def test_the_documented_clip_commands_at_toy_size(tmp_path, monkeypatch, tiny_llama_dir, tiny_dinov2_dir, capsys):
    """docs/data.md: write Shapes clips, train a perceiver on them (cached frame features), evaluate on test clips."""
    from vlbridge_cli.main import main

    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "shapes"
    assert main(["data", "shapes", "--out", str(data), "--n", "3", "--clips", "12", "--image-size", "56",
                 "--formats", "llava"]) == 0
    settings = [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                "model.vision_layer=-1", "model.connector=perceiver",
                "model.connector_options={depth: 1, num_latents: 4, heads: 2, head_dim: 8, max_frames: 4}",
                f"data.train={data / 'train_clip_short.json'}", f"data.val={data / 'val_clip_short.json'}",
                f"data.image_root={data}", "train.steps=2", "train.batch_size=4", "train.eval_every=2",
                "train.eval_samples=2", f"train.output_dir={tmp_path / 'run'}"]
    assert main(["train", "recipes/llava_shapes.yaml", *(x for s in settings for x in ("--set", s))]) == 0
    assert main(["eval", "--run", str(tmp_path / "run"), "--data", str(data / "test_clip_short.json")]) == 0
    result = json.loads((tmp_path / "run" / "eval-test_clip_short.json").read_text())
    assert result["scores"]["short"]["count"] == 3  # one test clip, three questions about it
