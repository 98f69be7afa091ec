"""Assembly for inference and evaluation, outside the training loop and the CLI: a model from a run folder or
from a recipe, its image loader, and its collators. The CLI, the demo and the benchmarks all go through here."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from vlbridge.batch import Collator
from vlbridge.build import Built, build_model
from vlbridge.encoders.feature_cache import FeatureCache
from vlbridge.errors import ConfigError
from vlbridge.image_inputs import CachedFeatures, PixelImages, WithTeacher
from vlbridge.precision import resolve as resolve_precision
from vlbridge.recipe import Recipe, load_recipe
from vlbridge.train.checkpoint import (RECIPE, initialise_from, load_trained_weights, read_meta, read_state,
                                       resolve_checkpoint)
from vlbridge.train.identity import SOURCES
from vlbridge.train.parameter_groups import apply_trainable, group_of
from vlbridge.weights.cache import cache_dir


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators: NumPy's too, so a run's saved random state (which includes it)
    is the same in every process that runs the recipe, resumed or not."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_seeded(recipe: Recipe, training: bool = False) -> Built:
    """The recipe's model, its new weights (the bridge's) drawn from ``recipe.train.seed`` whatever the global
    generators held before: one recipe builds one model, in any process and after any other work. ``training``
    also builds the teacher encoder, if the recipe names one."""
    seed_everything(recipe.train.seed)
    return build_model(recipe.model, training)


def image_loader(built: Built, recipe: Recipe):
    """Cached features when the encoder is frozen (each image is encoded once), pixels otherwise (a trained
    encoder, or no encoder: the connector reads pixels); with the teacher's cached features beside them when the
    model has a teacher (training)."""
    encoder, teacher = built.model.vision_encoder, built.model.teacher
    images = PixelImages(built.model.preprocess)
    if encoder is not None and recipe.data.cache_features and encoder.cacheable:
        images = CachedFeatures(encoder, FeatureCache.for_encoder(cache_dir() / "features", encoder))
    if teacher is None:
        return images
    disk = FeatureCache.for_encoder(cache_dir() / "features", teacher) if recipe.data.cache_features else None
    return WithTeacher(images, CachedFeatures(teacher, disk))


def prompt_collator(built: Built, recipe: Recipe | None = None, images=None, with_answer: bool = False) -> Collator:
    """Samples -> batches for ``built``: prompts only (left-padded, for generation) unless ``with_answer``.
    ``images``: how images are read (default: pixels with the front end's preprocessing); ``recipe``: its data
    length limits (default: none)."""
    images = images if images is not None else PixelImages(built.model.preprocess)
    limits = {} if recipe is None else {"max_length": recipe.data.max_length, "truncation": recipe.data.truncation}
    return Collator(built.tokenizer, built.chat_format, images, image_tokens=built.image_tokens,
                    with_answer=with_answer, **limits)


def load_run(folder: str | Path, overrides: list[str] = (), allow_unidentified: bool = False) -> tuple[Built, Recipe]:
    """Rebuild the model of a checkpoint (or of a run folder's ``final`` checkpoint) with its weights.

    What the checkpoint holds is read from the checkpoint itself. ``overrides`` (``key=value``) change the
    recipe first: e.g. ``model.language_model=/my/copy`` loads a bridge-only checkpoint onto the same LM from
    another folder (its fingerprint must match). ``allow_unidentified``: load a checkpoint that records no LM and
    encoder identity (no ``meta.json``), which is refused otherwise (or set ``VLBRIDGE_ALLOW_UNIDENTIFIED_CHECKPOINT=1``)."""
    folder = resolve_checkpoint(folder)
    if not (folder / RECIPE).is_file():
        raise ConfigError(f"{folder} is not a run or checkpoint folder ({RECIPE} missing)")
    recipe = load_recipe(folder / RECIPE, list(overrides))
    built = build_model(recipe.model)
    held = set(read_state(folder, read_meta(folder)))
    # new tensors (neither the LM's nor the encoder's, which are rebuilt from their sources) that the checkpoint
    # lacks were not trained in this run: they came from init_from (e.g. a frozen stage-1 part)
    untrained = [n for n, _ in built.model.named_parameters() if n not in held and group_of(n) not in SOURCES]
    if recipe.model.init_from and untrained:
        initialise_from(built.model, recipe.model.init_from, log=lambda *_: None, allow_unidentified=allow_unidentified)
    for name, parameter in built.model.named_parameters():
        parameter.requires_grad_(name in held)  # the identity fingerprints what stays frozen
    load_trained_weights(built.model, folder, recipe, allow_unidentified=allow_unidentified)
    resolve_precision(recipe.model.precision, recipe.train.precision).apply(built.model)  # frozen parts: bf16 or fp32
    return built, recipe


def load_model(run: str | Path | None = None, recipe: str | Path | None = None,
               overrides: list[str] = (), allow_unidentified: bool = False) -> tuple[Built, Recipe]:
    """A trained model from a ``run`` folder, or an untrained one from a ``recipe`` file (None: the built-in
    defaults; its seed draws the bridge; its trainable groups are marked so the model identity fingerprints
    what stays frozen). ``allow_unidentified``: see :func:`load_run`."""
    if run is not None and recipe is not None:
        raise ConfigError("give a run folder or a recipe, not both")
    if run is not None:
        return load_run(run, overrides, allow_unidentified)
    loaded = load_recipe(recipe, list(overrides))
    built = build_seeded(loaded)
    apply_trainable(built.model, loaded.train.trainable)
    resolve_precision(loaded.model.precision, loaded.train.precision).apply(built.model)
    return built, loaded
