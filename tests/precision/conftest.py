"""Fixtures of the precision tests: trainer recipes on the tiny random models (as tests/train's)."""

from __future__ import annotations

import pytest

from vlbridge.recipe import load_recipe


@pytest.fixture
def make_recipe(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    """``make_recipe(*overrides)``: a fast recipe (tiny LLaMA, tiny DINOv2 reading pixels) writing to
    ``tmp_path/run``."""

    def make(*extra):
        return load_recipe(None, [
            f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
            "model.vision_layer=-1", f"data.train={shapes_dir / 'train_short.json'}",
            f"data.val={shapes_dir / 'val_short.json'}", f"data.image_root={shapes_dir}", "data.cache_features=false",
            "train.steps=4", "train.batch_size=4", "train.lr=5e-3", "train.warmup_steps=1", "train.eval_every=0",
            "train.eval_samples=2", f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=2", *extra,
        ])

    return make
