"""End to end with the packaged weights: a LLaVA-style run on SmolLM2-135M and DINOv2-S exported, loaded by
transformers, answering as `vlbridge generate` does."""

from __future__ import annotations

import pytest
import torch

from vlbridge_cli.main import main

pytestmark = pytest.mark.slow


def test_packaged_llava_run_exports_and_answers_the_same(tmp_path, shapes_dir, capsys):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlbridge.build import build_model
    from vlbridge.recipe import load_recipe
    from vlbridge.train.checkpoint import save_checkpoint
    from vlbridge.train.parameter_groups import apply_trainable

    recipe = load_recipe(None, ["model.bridge=llava"])  # SmolLM2-135M-Instruct, DINOv2-S at its penultimate layer
    torch.manual_seed(0)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    with torch.no_grad():  # a projector whose vectors the LM notices
        for parameter in built.model.trainable_parameters().values():
            parameter.mul_(3.0)
    save_checkpoint(built.model, recipe, tmp_path / "run" / "final")
    del built
    out = tmp_path / "hf"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert model.config.vision_feature_layer == -2 and model.config.image_seq_length == 256
    image = sorted((shapes_dir / "images").glob("*.png"))[0]
    prompt = "What shape is at the top left?"
    capsys.readouterr()
    assert main(["generate", "--run", str(tmp_path / "run"), "--image", str(image), "--prompt", prompt,
                 "--max-new-tokens", "8"]) == 0
    ours = capsys.readouterr().out.strip()
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    inputs = processor(text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       images=Image.open(image), return_tensors="pt")
    assert inputs["input_ids"].shape[1] > 256  # SmolLM2's system prompt, 256 image tokens, the question
    generated = model.generate(**inputs, max_new_tokens=8)
    theirs = processor.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert theirs == ours and len(ours) > 0
