"""The training loop, top to bottom: build, freeze, data, optimizer, report, resume, steps, evaluation,
checkpoints.

What a batch is and how it becomes a loss is the run's objective (``train.objective``,
:mod:`vlbridge.train.objectives`): the LM loss on answer tokens, or BLIP-2 stage 1 (ITC + ITM + ITG).

One loop for one process and for many: it runs through an ``accelerate.Accelerator``
(:mod:`vlbridge.train.distributed`); under ``accelerate launch`` or ``torchrun`` each process reads its
own shard of every global batch (:mod:`vlbridge.train.data_order`) and the model is wrapped in DDP or
FSDP. Every ``train.save_every`` steps the full training state is checkpointed (:mod:`vlbridge.train.state`)
and ``train(..., resume=run_dir)`` continues the run exactly. Bad records and non-finite losses are
handled by :mod:`vlbridge.train.guards`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from vlbridge.build import Built, build_model
from vlbridge.precision import recorded_precision
from vlbridge.precision import resolve as resolve_precision
from vlbridge.runs import image_loader, seed_everything
from vlbridge.data.llava_json import write_json_atomic
from vlbridge.datasets.duplicate_ids import describe_duplicates, find_duplicate_ids
from vlbridge.datasets.training_sets import check_data_format, describe, read_training_set
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.generate_answers import GenerationSettings, batched
from vlbridge.eval.by_type import by_task, format_by_task
from vlbridge.eval.loss import validation_loss
from vlbridge.eval.training_prompts import META_KEY as PROMPTS, training_prompts
from vlbridge.train.checkpoint import META, initialise_from, load_trained_weights, read_meta, save_weights
from vlbridge.train.data_order import DataOrder, shard
from vlbridge.train.distributed import (OnDevice, full_parameters, gather, is_fsdp, load_optimizer_state,
                                       make_accelerator, reduce, trained_weights)
from vlbridge.train.identity import model_identity
from vlbridge.train.guards import NONFINITE_POLICIES, BadRecords, NonFiniteError, is_finite, nonfinite_message
from vlbridge.train.objectives import evaluate, get_objective  # noqa: F401 (evaluate: the lm objective's, public here)
from vlbridge.recipe import Recipe, load_recipe, save_recipe
from vlbridge.train.report import format_report, precompute_message
from vlbridge.train.schedule import warmup_cosine
from vlbridge.train.slowdown import SlowdownDetector
from vlbridge.train.run_folder import describe as describe_files
from vlbridge.train.run_folder import prepare_new_run, prepare_resumed_run, remove_run_files
from vlbridge.train.state import (prune, remove_partial, restore_rng, resumable_checkpoint, resume_conflicts,
                                  save_training_checkpoint)

class MetricsLog:
    """metrics.jsonl (always) and TensorBoard (when installed); ``lines`` keeps what was written so a
    resumed run can rewrite the file to exactly its checkpoint's lines. Only the main process writes."""

    def __init__(self, folder: Path, enabled: bool = True, lines: list[dict] | None = None):
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.lines: list[dict] = list(lines or [])
        self.board = None
        if not enabled:
            return
        # a fresh run starts an empty file; a resumed one continues from its checkpoint's lines
        self.path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        try:
            from torch.utils.tensorboard import SummaryWriter

            last = max((line["step"] for line in self.lines), default=0)
            self.board = SummaryWriter(str(folder / "tensorboard"), purge_step=last + 1)
        except ImportError:
            pass

    def write(self, step: int, **values) -> None:
        line = {"step": step, **values}
        self.lines.append(line)
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        if self.board is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, step)


def _first_good_batch(bad: BadRecords, collator, samples, path: str):
    for sample in samples:
        batch = bad.keep_going(collator, [sample], "fallback")[0]
        if batch is not None:
            return batch
    raise DataError(f"{path}: every record is bad")


def _resume_state(run: Path, recipe: Recipe, world: int, rank: int, log):
    """The state to resume ``run`` from (None: it stopped before its first step checkpoint, so it starts again) and
    the damaged checkpoints newer than it."""
    if not (run / "recipe.yaml").is_file():
        raise ConfigError(f"--resume {run}: not a run folder (recipe.yaml missing)")
    conflicts = resume_conflicts(load_recipe(run / "recipe.yaml").to_dict(), recipe.to_dict())
    if conflicts:
        raise ConfigError(f"--resume {run}: the recipe differs from the run's, so it would not be the same run: "
                          f"{conflicts}")
    if read_meta(run / "final").get("step") == recipe.train.steps:
        raise ConfigError(f"--resume {run}: the run already finished ({run / 'final' / META} is at step "
                          f"{recipe.train.steps}); nothing to resume")
    return resumable_checkpoint(run, rank, world, log)


def train(recipe: Recipe, built: Built | None = None, log=print, resume: str | Path | None = None,
          overwrite: bool = False) -> dict:
    """Run ``recipe``; ``built`` is a model already built from ``recipe.model`` (else it is built here).

    ``resume``: a run folder; the run continues from its latest complete step checkpoint, exactly as if it had
    never stopped (the recipe must be the run's own, up to :data:`RESUME_MAY_CHANGE` keys).
    ``overwrite``: ``train.output_dir`` may hold another run, whose files are removed first; without it such a
    folder is refused (:mod:`vlbridge.train.run_folder`)."""
    if resume is not None and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    cfg, data = recipe.train, recipe.data
    if cfg.on_nonfinite not in NONFINITE_POLICIES:
        raise ConfigError(f"train.on_nonfinite={cfg.on_nonfinite!r}; valid: {list(NONFINITE_POLICIES)}")
    bad = BadRecords(data.on_bad_record)
    check_data_format(data)  # before the model is built: a typo here should not cost a model load
    objective = get_objective(cfg.objective)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = make_accelerator()
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    log = log if main else (lambda *args, **kwargs: None)
    out = Path(resume) if resume is not None else Path(cfg.output_dir)
    if resume is not None:  # the run continues in its own folder, wherever it was moved to
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(cfg, output_dir=str(out)))
        cfg = recipe.train
    # every process checks the folder before any of them writes, so all decide the same
    earlier = []
    if resume is None:
        earlier = prepare_new_run(out, overwrite)
    else:
        prepare_resumed_run(out)
    accelerator.wait_for_everyone()
    if main:
        if earlier:
            log(f"--overwrite: removing the earlier run's files from {out}: {describe_files(earlier)}")
            remove_run_files(earlier)
        remove_partial(out)
    state, damaged = _resume_state(out, recipe, world, rank, log) if resume is not None else (None, [])
    accelerator.wait_for_everyone()  # every process has read the checkpoint it resumes from
    if main:
        if damaged:
            log(f"removing the damaged {describe_files(damaged)} (the resumed run writes them again)")
        for folder in damaged:
            shutil.rmtree(folder, ignore_errors=True)
        if resume is not None:  # a kill between a save and its pruning leaves one checkpoint too many
            prune(out, cfg.keep_checkpoints)
        save_recipe(recipe, out / "recipe.yaml")
    accelerator.wait_for_everyone()
    metrics = MetricsLog(out, enabled=main, lines=state.metric_lines if state else [])

    # a resumed run keeps the precision it recorded; a new one resolves `auto` on this machine (vlbridge.precision)
    precision = resolve_precision(recipe.model.precision, cfg.precision, accelerator.device, fsdp=is_fsdp(accelerator),
                                  recorded=recorded_precision(read_meta(state.folder)) if state is not None else None)

    # 1. model, and what trains
    seed_everything(cfg.seed)  # also the data order's and dropout's
    built = built or build_model(recipe.model, training=True)
    model = built.model
    if recipe.model.teacher_encoder is not None and model.teacher is None:
        raise ConfigError("model.teacher_encoder is set but the model given to train() has no teacher: build it with "
                          "build_model(recipe.model, training=True) (or build_seeded(recipe, training=True))")
    counts = objective.set_trainable(model, cfg.trainable, log)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"train.trainable={cfg.trainable} selects no parameters of this model")
    initialised = initialise_from(model, recipe.model.init_from, log) if recipe.model.init_from else None
    identity = {**model_identity(model, set(model.trainable_parameters())), "precision": precision.to_meta()}
    if state is not None:  # before any wrapping: the checkpoint is checked against this very model
        load_trained_weights(model, state.folder, recipe, expected=set(model.trainable_parameters()))
    precision.apply(model, training=True)  # once what trains is known: trained parameters stay fp32

    # 2. data (bad records raise, or are skipped and reported at the end: never silently)
    train_set, val_set = read_training_set(data, "train"), read_training_set(data, "val")  # data.format's reader
    bad.add_skipped_on_read("train", train_set.skipped)
    bad.add_skipped_on_read("val", val_set.skipped)
    if bad.entries:
        log(f"reading: {bad.summary()}")
    if duplicates := find_duplicate_ids({"train": train_set, "val": val_set}):  # a warning: no record is lost
        log(f"warning: {describe_duplicates(duplicates)}")
    if len(train_set) < cfg.batch_size * world:
        raise ConfigError(f"{describe(data, 'train')} has {len(train_set)} samples, fewer than "
                          f"train.batch_size={cfg.batch_size} x {world} processes")
    val_subset = list(val_set[: cfg.eval_samples] if cfg.eval_samples else val_set)
    images = image_loader(built, recipe)
    if images.cached or built.model.teacher is not None:
        with accelerator.main_process_first():  # the first process fills the disk cache, the others read it
            todo = list(train_set) + val_subset
            with tqdm(total=len({s.image for s in todo if s.image}), desc="encoding images", unit="img",
                      leave=False, disable=not main) as bar:
                started = time.perf_counter()
                bad.keep_going(lambda s: images.precompute(s, progress=bar.update), todo, "encoding images")
                log(precompute_message(images, bar.n, time.perf_counter() - started))
    train_collator, eval_collator = objective.collators(built, recipe, images)
    if bad.policy == "skip":  # evaluation must not meet a bad record halfway through generation
        val_subset = [s for chunk in batched(val_subset, recipe.eval.batch_size)
                      for s in bad.keep_going(eval_collator, chunk, "validation")[1]]
    settings = GenerationSettings(recipe.eval.max_new_tokens, recipe.eval.batch_size, recipe.eval.do_sample,
                                  recipe.eval.temperature, recipe.eval.top_p, cfg.seed)
    order = DataOrder(len(train_set), cfg.batch_size * world, cfg.seed)

    # 3. what this run trains and costs, before the first step
    report = objective.report(built, counts, cfg.trainable, train_collator, list(train_set),
                              samples_per_micro_batch=cfg.batch_size, micro_batches_per_step=cfg.grad_accum * world,
                              cached_features=images.cached, precision=precision.activations)
    report["precision"] = precision.to_meta()
    if initialised is not None:
        report["init_from"] = initialised
    log(format_report(report))
    if state is None and main:
        write_json_atomic(report, out / "report.json", indent=1)
        metrics.write(0, parameters_total=report["parameters_total"],
                      parameters_trainable=report["parameters_trainable"],
                      train_flops_per_step=report["train_flops_per_step"],
                      activation_bytes_per_micro_batch=report["activation_bytes_per_micro_batch"])

    # 4. optimizer, schedule, processes
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    wrapped, optimizer = accelerator.prepare(objective.loss_module(model), optimizer)
    autocast = precision.autocast(accelerator.device.type)

    # 5. resume: everything else of the training state, random generators last
    history, start = [], 0
    if state is not None:
        load_optimizer_state(wrapped, optimizer, state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        order.load_state_dict(state.data_order)
        bad.load_state_dict(state.bad_records)
        history, start = list(state.history), state.step
        restore_rng(*state.rng)
        log(f"resumed {out} from {state.folder.name} at step {start}")
    elif resume is not None:
        log(f"{out} has no step checkpoint yet (train.save_every={cfg.save_every}): starting it again from step 0")

    def micro_batch(stage: str):
        samples = [train_set[i] for i in shard(order.next_global(), rank, world)]
        batch = bad.keep_going(train_collator, samples, stage)[0]
        return batch.to(accelerator.device) if batch is not None else None

    # 6. steps
    scores, predictions, fallback = {}, [], None
    started = time.perf_counter()
    slowdown = SlowdownDetector()  # warns when steps get far slower than the first ones (a busy CPU)
    wrapped.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="training", unit="step",
               disable=not main)
    for step in bar:
        t0 = time.perf_counter()
        micro = [micro_batch(f"step {step + 1}") for _ in range(cfg.grad_accum)]
        real = [b for b in micro if b is not None]
        if real:
            fallback = real[-1]
        elif fallback is None:
            fallback = _first_good_batch(bad, train_collator, train_set, describe(data, "train")).to(accelerator.device)
        # normalise by the answer tokens of the whole step on all processes; DDP averages gradients over
        # processes, hence the factor world: the update equals one process with the global batch
        tokens, = reduce(accelerator, [sum(b.num_supervised for b in real)])
        scale = max(tokens, 1) / world
        loss_value, offenders, terms = 0.0, [], {}
        for i, batch in enumerate(micro):
            # a micro-batch whose every sample was bad still runs (weight 0) so processes stay in step
            sync = accelerator.no_sync(wrapped) if i < len(micro) - 1 else nullcontext()
            with sync:
                with autocast:
                    output = wrapped(batch if batch is not None else fallback)
                loss = output.loss_sum / scale if batch is not None else output.loss_sum * 0.0
                accelerator.backward(loss)
            value = loss.item()
            for key, term in objective.terms(output).items():  # e.g. stage 1's itc, itm, itg
                terms[key] = terms.get(key, 0.0) + (term.item() / scale if batch is not None else 0.0)
            if not math.isfinite(value):
                offenders.append({"process": rank, "micro_batch": i + 1, "loss": value,
                                  "samples": batch.sample_ids if batch is not None else []})
            loss_value += value
        loss_value, *term_values = reduce(accelerator, [loss_value, *terms.values()], "mean")
        max_norm = cfg.clip_grad if cfg.clip_grad > 0 else float("inf")
        grad_norm = float(accelerator.clip_grad_norm_(list(wrapped.parameters()), max_norm))
        finite = is_finite(loss_value, grad_norm)
        if finite:
            optimizer.step()
        else:  # the same on every process: the loss is reduced and the gradients are synchronised
            message = nonfinite_message(step + 1, loss_value, grad_norm, gather(accelerator, offenders),
                                        gather(accelerator, [s for b in real for s in b.sample_ids]), cfg.on_nonfinite)
            if cfg.on_nonfinite == "stop":
                bar.close()
                raise NonFiniteError(message)
            log(message)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        if warning := slowdown.observe(step + 1, seconds, torch.get_num_threads()):
            log(warning)
        n_tokens, n_images = reduce(accelerator, [sum(int(b.attention_mask.sum()) for b in real),
                                                  sum(int(b.has_image.sum()) for b in real)])
        record = {"loss": loss_value, **dict(zip(terms, term_values)), "lr": scheduler.get_last_lr()[0],
                  "grad_norm": grad_norm,
                  "step_seconds": seconds, "tokens_per_s": n_tokens / seconds, "images_per_s": n_images / seconds}
        if not finite:
            record["update_skipped"] = True
        history.append(record)
        metrics.write(step + 1, **record)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{n_tokens / seconds:.0f}", img_s=f"{n_images / seconds:.1f}")
        last = step + 1 == cfg.steps
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
            scores = objective.evaluate(built, eval_collator, val_subset, settings, accelerator, wrapped)
            if cfg.eval_loss:  # every process computes it on all of val_subset: the same number everywhere
                with full_parameters(accelerator, wrapped):
                    scores["loss"] = validation_loss(model, OnDevice(train_collator, accelerator.device), val_subset,
                                                     recipe.eval.batch_size)
            predictions = scores.pop("predictions")
            by_type = by_task(val_subset, predictions)  # accuracy per question / answer type, {} without types
            metrics.write(step + 1, **{f"val_{k}": v for k, v in scores.items()},
                          **({"val_by_type": by_type} if by_type else {}))
            log(f"step {step + 1}: val {scores}" + (f"\n{format_by_task(by_type)}" if by_type else ""))
            wrapped.train()
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and not last:
            save_training_checkpoint(out, step + 1, accelerator=accelerator, wrapped=wrapped, model=model,
                                     optimizer=optimizer, scheduler=scheduler, order=order, recipe=recipe,
                                     identity=identity, history=history, metric_lines=metrics.lines,
                                     bad_records=bad, keep=cfg.keep_checkpoints)
    bar.close()

    # 7. the final bridge-only checkpoint, the last predictions and the bad records, never silently
    weights = trained_weights(accelerator, wrapped, model)
    skipped = list({e["record"]: e for e in gather(accelerator, bad.state_dict())}.values())
    if main:
        save_weights(out / "final", recipe, weights, identity,
                     {"step": cfg.steps, PROMPTS: training_prompts(train_set)})  # eval's default prompts
        write_json_atomic([{"id": s.id, "prediction": p} for s, p in zip(val_subset, predictions)],
                          out / "predictions.json", indent=1)
        if skipped:
            write_json_atomic(skipped, out / "skipped_records.json", indent=1)
    if skipped:
        log(f"{BadRecords.summarise(skipped)}\n  details in {out / 'skipped_records.json'}")
    accelerator.wait_for_everyone()
    wall = time.perf_counter() - started
    return {"history": history, "val": scores, "wall_seconds": wall, "built": built, "parameter_counts": counts,
            "output_dir": str(out), "report": report, "skipped_records": skipped, "process_index": rank}
