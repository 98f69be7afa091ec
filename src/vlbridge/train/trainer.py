"""The training loop, top to bottom: build, freeze, data, optimizer, steps, evaluation, checkpoints."""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from vlbridge.batch import Collator
from vlbridge.build import Built, build_model
from vlbridge.data.llava_json import read_llava_json
from vlbridge.errors import ConfigError
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.eval.scoring import score_predictions
from vlbridge.encoders.feature_cache import FeatureCache
from vlbridge.image_inputs import CachedFeatures, PixelImages
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.train.parameter_groups import apply_trainable, format_counts
from vlbridge.train.recipe import Recipe, save_recipe
from vlbridge.train.schedule import warmup_cosine
from vlbridge.weights.cache import cache_dir

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard (when installed)."""

    def __init__(self, folder: Path):
        self.path = folder / "metrics.jsonl"
        self.board = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(folder / "tensorboard"))
        except ImportError:
            pass

    def write(self, step: int, **values) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.board is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, step)


def image_loader(built: Built, recipe: Recipe):
    """Cached features when the encoder is frozen (each image is encoded once), pixels otherwise."""
    encoder = built.model.vision_encoder
    if recipe.data.cache_features and encoder.cacheable:
        return CachedFeatures(encoder, FeatureCache.for_encoder(cache_dir() / "features", encoder))
    return PixelImages(encoder.preprocess)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def evaluate(built: Built, collator: Collator, samples, settings: GenerationSettings) -> dict:
    predictions = generate_answers(built.model, built.tokenizer, collator, samples, settings)
    return score_predictions(samples, predictions) | {"predictions": predictions}


def train(recipe: Recipe, built: Built | None = None, log=print) -> dict:
    """Run ``recipe``; ``built`` is a model already built from ``recipe.model`` (else it is built here)."""
    cfg, data = recipe.train, recipe.data
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {cfg.precision!r}; valid: {sorted(PRECISIONS)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, out / "recipe.yaml")
    metrics = MetricsLog(out)

    # 1. model, and what trains
    seed_everything(cfg.seed)
    built = built or build_model(recipe.model)
    model = built.model
    counts = apply_trainable(model, cfg.trainable)
    log(format_counts(counts))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"train.trainable={cfg.trainable} selects no parameters of this model")

    # 2. data (bad records raise, or are skipped and reported: never silently)
    train_set = read_llava_json(data.train, image_root=data.image_root, on_error=data.on_bad_record)
    val_set = read_llava_json(data.val, image_root=data.image_root, on_error=data.on_bad_record)
    for name, samples in (("train", train_set), ("val", val_set)):
        if samples.skipped:
            log(f"{name}: skipped {len(samples.skipped)} bad records: {[s.id for s in samples.skipped][:20]}")
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"{data.train} has {len(train_set)} samples, fewer than train.batch_size={cfg.batch_size}")
    val_subset = list(val_set[: cfg.eval_samples] if cfg.eval_samples else val_set)
    images = image_loader(built, recipe)
    if isinstance(images, CachedFeatures):
        with tqdm(total=len({s.image for s in train_set + val_subset if s.image}), desc="encoding images",
                  unit="img", leave=False) as bar:
            started = time.perf_counter()
            images.precompute(list(train_set) + val_subset, progress=bar.update)
            log(f"encoded {len(images.table)} images once in {time.perf_counter() - started:.1f} s")
    common = dict(image_tokens=built.image_tokens, max_length=data.max_length, truncation=data.truncation)
    train_collator = Collator(built.tokenizer, built.chat_format, images, **common)
    eval_collator = Collator(built.tokenizer, built.chat_format, images, with_answer=False, **common)
    settings = GenerationSettings(recipe.eval.max_new_tokens, recipe.eval.batch_size, recipe.eval.do_sample,
                                  recipe.eval.temperature, recipe.eval.top_p, cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed)

    def batches():
        while True:  # epochs: a fresh permutation each time, from the run's own generator
            for start in range(0, len(train_set) - cfg.batch_size + 1, cfg.batch_size):
                if start == 0:
                    perm = torch.randperm(len(train_set), generator=order).tolist()
                yield train_collator([train_set[i] for i in perm[start:start + cfg.batch_size]])

    # 3. optimizer and schedule
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    autocast = torch.autocast("cpu", dtype=PRECISIONS[cfg.precision]) if PRECISIONS[cfg.precision] else nullcontext()

    # 4. steps
    stream = batches()
    history, started = [], time.perf_counter()
    model.train()
    bar = tqdm(range(cfg.steps), desc="training", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        micro = [next(stream) for _ in range(cfg.grad_accum)]
        tokens = sum(b.num_supervised for b in micro)  # normalise by the whole step's answer tokens
        loss_value = 0.0
        for batch in micro:
            with autocast:
                output = model(batch)
            loss = output.loss_sum / max(tokens, 1)
            loss.backward()
            loss_value += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad if cfg.clip_grad > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        n_tokens = sum(int(b.attention_mask.sum()) for b in micro)
        n_images = sum(int(b.has_image.sum()) for b in micro)
        record = {"loss": loss_value, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                  "step_seconds": seconds, "tokens_per_s": n_tokens / seconds, "images_per_s": n_images / seconds}
        history.append(record)
        metrics.write(step + 1, **record)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{n_tokens / seconds:.0f}", img_s=f"{n_images / seconds:.1f}")
        last = step + 1 == cfg.steps
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0 and not last) or last:
            scores = evaluate(built, eval_collator, val_subset, settings)
            scores.pop("predictions")
            metrics.write(step + 1, **{f"val_{k}": v for k, v in scores.items()})
            log(f"step {step + 1}: val {scores}")
            model.train()
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last:
            save_checkpoint(model, recipe, out / f"checkpoint-{step + 1}", {"step": step + 1})
    bar.close()
    save_checkpoint(model, recipe, out / "final", {"step": cfg.steps})
    wall = time.perf_counter() - started
    return {"history": history, "val": scores, "wall_seconds": wall, "built": built,
            "parameter_counts": counts, "output_dir": str(out)}
