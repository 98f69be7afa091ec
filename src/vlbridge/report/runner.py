"""Running the report: every bridge trained with the same data, steps, batch and seed, then scored and measured;
each finished bridge's result stored at once (``OUT/results/<bridge>.json``) and reused by a later call with the
same settings, so a long report that was cut short continues where it stopped."""

from __future__ import annotations

import gc
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from vlbridge.data.llava_json import write_json_atomic
from vlbridge.errors import ConfigError
from vlbridge.report import memory
from vlbridge.report.accuracy import EvalSets, measure_accuracy
from vlbridge.report.bridges import check_names, file_name
from vlbridge.report.costs import generation_speed, latency, peak_memory, sample_flops
from vlbridge.report.render import write_report
from vlbridge.report.settings import ReportSettings, check, recipe_settings, signature


def result_path(out: Path, name: str) -> Path:
    return out / "results" / f"{file_name(name)}.json"


def stored_results(out: Path, settings: ReportSettings, force: bool) -> dict[str, dict]:
    """The stored results these settings can reuse; one made with other settings is refused (never mix settings
    in one report). ``force`` deletes the stored results of these settings' bridges first, so all of them run
    again, and a forced report cut short continues without ``force``."""
    done = {}
    for name in settings.names:
        path = result_path(out, name)
        if force:
            path.unlink(missing_ok=True)
        if not path.is_file():
            continue
        row = json.loads(path.read_text())
        stored, expected = row.get("signature") or {}, signature(settings, name)
        if stored != expected:
            changed = [f"{key}: {stored.get(key)!r} there, {expected.get(key)!r} now"
                       for key in sorted(set(stored) | set(expected), key=str) if stored.get(key) != expected.get(key)]
            raise ConfigError(f"{path} holds {name} measured with other settings ({'; '.join(changed)}); run with "
                              "--force to redo it, or choose another --out")
        done[name] = row
    return done


def median_length_sample(samples):
    """The sample whose prompt is of median length (in characters): FLOPs and latency are measured on it."""
    ordered = sorted(samples, key=lambda s: (len(s.prompt_turns[-1].text), s.id))
    return ordered[len(ordered) // 2]


def spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all three training tasks in one batch)."""
    step = max(1, len(items) // count)
    return [items[i * step % len(items)] for i in range(count)]


def run_bridge(name: str, settings: ReportSettings, data: Path, out: Path, sets: EvalSets, log=print) -> dict:
    """Train bridge ``name`` and measure it."""
    from vlbridge.datasets.training_sets import read_training_set
    from vlbridge.recipe import load_recipe
    from vlbridge.runs import build_seeded, image_loader, prompt_collator
    from vlbridge.train.trainer import train

    started = time.perf_counter()
    recipe = load_recipe(None, recipe_settings(settings, name, data, out / "runs" / file_name(name)))
    built = build_seeded(recipe)  # its new weights from the report's seed, whatever ran before
    images = image_loader(built, recipe)
    result = train(recipe, built=built, log=log, overwrite=True)  # a rerun replaces what a stopped one left
    history = result["history"]
    steps = history[1:] or history  # the first step includes one-time work
    log(f"{name}: scoring {sets.sizes()} test items")
    accuracy = measure_accuracy(built, recipe, images, sets, settings.short_tokens, settings.caption_tokens)

    log(f"{name}: measuring FLOPs, latency, generation speed and peak memory")
    model = built.model
    answer = prompt_collator(built, recipe, images, with_answer=True)
    prompt = prompt_collator(built, recipe, images)
    one = median_length_sample(sets.short)
    prompts = prompt(spread(sets.short, settings.generation_batch))
    train_batch = answer(spread(list(read_training_set(recipe.data, "train")), settings.batch_size))
    flops = sample_flops(model, answer([one]))
    costs = {
        "latency_seconds": latency(model, prompt([one]), prompt.pad_id, settings.repeats),
        "generation": generation_speed(model, prompts, prompt.pad_id, settings.new_tokens, settings.repeats),
        "peak_memory": peak_memory(model, train_batch, prompts, prompt.pad_id, settings.new_tokens),
    }
    spec = built.spec
    row = {
        "name": name, "signature": signature(settings, name), "run": str(out / "runs" / file_name(name)),
        "connector": spec.connector, "injection": spec.injection, "spec": spec.to_dict(), "lr": recipe.train.lr,
        "trainable_parameters": result["report"]["parameters_trainable"],
        "visual_vectors": flops["visual_vectors"],
        "flops": flops,
        "train_step_seconds": statistics.median(h["step_seconds"] for h in steps),
        "train_wall_seconds": result["wall_seconds"],
        "final_loss": history[-1]["loss"],
        "loss_curve": [h["loss"] for h in history],
        **costs,
        "accuracy": accuracy,
        "wall_seconds": time.perf_counter() - started,
    }
    del result, built, images, model
    gc.collect()
    return row


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "python": platform.python_version(), "system": platform.system()}


def compose(settings: ReportSettings, command: str, data: Path, sets: EvalSets, rows: list[dict],
            missing: list[str]) -> dict:
    """The report's JSON: settings, data, baselines, one row per finished bridge, and the bridges not yet run."""
    return {"command": command, "settings": settings.to_dict(), "data": {"folder": str(data), "test": sets.sizes()},
            "baselines": sets.baselines(), "memory_method": memory.METHOD, "machine": machine(),
            "bridges": rows, "missing": missing}


def run_report(settings: ReportSettings, out: str | Path, command: str = "", force: bool = False, log=print) -> dict:
    """Train and measure every bridge of ``settings`` not stored yet, and write OUT/report.{json,md,html} and the
    plots after each one (a report cut short still shows what finished)."""
    from vlbridge.data.shapes_folder import shapes_folder

    out = Path(out)
    check(settings)
    names = check_names(list(settings.presets), list(settings.pairs))
    if settings.data and not (Path(settings.data) / "test_mc-text.json").is_file():
        raise ConfigError(f"--data {settings.data} is not a Shapes export with the mc-text files (vlbridge data shapes "
                          "--out DIR)")
    done = stored_results(out, settings, force)  # before any work: refuse mixed settings at once
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = Path(settings.data) if settings.data else shapes_folder(out / "data", settings.scenes, settings.data_seed)
    sets = EvalSets.read(data, settings.eval_samples)
    for i, name in enumerate(names):
        path = result_path(out, name)
        if name in done:
            log(f"[{i + 1}/{len(names)}] {name}: done before ({path}), reused")
            continue
        log(f"\n[{i + 1}/{len(names)}] {name}: train {settings.steps} steps, score, measure")
        done[name] = run_bridge(name, settings, data, out, sets, log)
        write_json_atomic(done[name], path, indent=1)
        write_report(out, compose(settings, command, data, sets, [done[n] for n in names if n in done],
                                  [n for n in names if n not in done]))
    report = compose(settings, command, data, sets, [done[n] for n in names], [])
    write_report(out, report)
    return report
