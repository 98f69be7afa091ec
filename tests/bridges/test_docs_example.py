"""The worked example of docs/architecture.md, "Adding a connector": its file and its registry line, run as
written, give a connector that every injection takes by recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vlbridge.bridges import registry
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, prompt_collator

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


@pytest.fixture
def example_connector(monkeypatch):
    file, line = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[:2]
    namespace: dict = {}
    exec(compile(file, "pooled_linear.py", "exec"), namespace)  # noqa: S102 - the documentation's own code
    name, entry = line.strip().rstrip(",").split(": ", 1)
    monkeypatch.setitem(registry.CONNECTORS, name.strip('"'), eval(entry, {**namespace, **vars(registry)}))  # noqa: S307
    return name.strip('"')


@pytest.mark.parametrize("injection", sorted(registry.INJECTIONS))
def test_the_documented_connector_trains_with_every_injection(example_connector, injection, tiny_llama_dir,
                                                               tiny_dinov2_dir, tmp_path):
    from PIL import Image

    from vlbridge.data.sample import Sample, Turn

    recipe = load_recipe(None, [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
                                "model.vision_layer=-1", f"model.connector={example_connector}",
                                f"model.injection={injection}"])
    built = build_seeded(recipe)
    assert built.model.bridge.num_visual_tokens(16) == 4  # a 4 x 4 grid pooled 2 x 2
    Image.new("RGB", (56, 56), (200, 30, 30)).save(tmp_path / "red.png")
    sample = Sample("a", (Turn("user", "<image>\nColour?"), Turn("assistant", "red")), image=tmp_path / "red.png")
    out = built.model(prompt_collator(built, with_answer=True)([sample]))
    out.loss_sum.backward()
    assert torch.isfinite(out.loss_sum) and built.model.bridge.connector.proj.weight.grad is not None
    assert built.model.bridge.connector.flops(16) > 0
