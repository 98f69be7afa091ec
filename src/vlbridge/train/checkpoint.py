"""Checkpoints hold only what was trained (safetensors) and the resolved recipe (YAML).

The frozen encoder and LM are rebuilt from the recipe (their packages or folders), so a checkpoint of a
MemVP or LLaVA bridge is a few MB. Nothing is unpickled when loading. Writes are atomic: a checkpoint
folder is written under a temporary name and renamed, so an interrupted save never leaves a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import vlbridge
from vlbridge.errors import ConfigError
from vlbridge.train.recipe import Recipe, load_recipe, save_recipe

WEIGHTS = "trained.safetensors"
RECIPE = "recipe.yaml"
META = "meta.json"


def save_checkpoint(model, recipe: Recipe, folder: Path, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    state = {k: v.contiguous() for k, v in model.trainable_state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    save_recipe(recipe, tmp / RECIPE)
    meta = {
        "vlbridge": vlbridge.__version__,
        "torch": torch.__version__,
        "bridge": recipe.model.bridge,
        "language_model": recipe.model.language_model,
        "vision_encoder": recipe.model.vision_encoder,
        "parameters": {k: list(v.shape) for k, v in state.items()},
        **(extra or {}),
    }
    (tmp / META).write_text(json.dumps(meta, indent=1))
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return folder


def load_trained_weights(model, folder: Path) -> None:
    """Load a checkpoint's trained tensors into ``model``; every name and shape must match exactly."""
    folder = Path(folder)
    path = folder / WEIGHTS
    if not path.is_file():
        raise ConfigError(f"{folder} is not a checkpoint: {WEIGHTS} is missing")
    state = load_file(str(path))
    own = dict(model.named_parameters())
    missing = sorted(set(model.trainable_state_dict()) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
    if unexpected or wrong or missing:
        raise ConfigError(
            f"checkpoint {folder} does not fit this model: "
            f"unexpected {unexpected[:5]}, shape mismatch {wrong[:5]}, missing {missing[:5]}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def load_run(folder: str | Path, overrides: list[str] = ()):
    """Rebuild the model of a checkpoint (or of a run folder's ``final`` checkpoint) with its weights."""
    from vlbridge.build import build_model
    from vlbridge.train.parameter_groups import apply_trainable

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() and (folder / "final" / WEIGHTS).is_file():
        folder = folder / "final"
    if not (folder / RECIPE).is_file():
        raise ConfigError(f"{folder} is not a run or checkpoint folder ({RECIPE} missing)")
    recipe = load_recipe(folder / RECIPE, list(overrides))
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    load_trained_weights(built.model, folder)
    return built, recipe
