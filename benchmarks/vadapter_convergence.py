"""PaLM2-VAdapter's claim in miniature: a tiny LM first aligned as a captioning decoder, then used as the adapter,
converges faster and ends better than the usual Perceiver-resampler adapter (METHODS.md 3.2).

Same frozen DINOv2-S/14 (features cached), same frozen SmolLM2-135M, same Shapes data (captions and short answers
mixed), batch, steps, learning rate and seed (so the same batches in the same order), four adapters each giving
``--latents`` soft tokens, through the shipped recipes (recipes/vadapter/):

(a) the baseline: a 6-layer Perceiver resampler (perceiver_baseline.yaml);
(b) the adapter after stage 1: stage1.yaml (the tiny LM, SmolLM2's first ``--tiny-layers`` layers, trained with a
    1-layer resampler as a captioning decoder for ``--stage1-steps``), then stage2.yaml from it;
(c) the same adapter without stage 1 (stage2.yaml with no init_from: a fresh resampler, the pretrained tiny LM);
(d) (b)'s 1-layer resampler alone (FC_in and one layer at the tiny LM's width, no tiny LM), fresh.

Each run logs the teacher-forced validation caption loss every ``--eval-every`` steps (train.eval_loss); at the end:
val caption loss over all val captions, CIDEr-D of greedy captions, short-answer exact match on val questions (each
with its standard error), trainable parameters, and each connector's FLOPs, closed form against torch's counter.

On clips (``--clips N``: Shapes clips of ``--frames`` frames, shapes moving by whole cells), (a) and (b) train again
with frame embeddings (connector option max_frames) on the clips' captions and short answers for ``--clip-steps``
((b) from the same stage-1 run, whose captioning saw single images only) and are scored on the val clips' questions
by type: the motion questions (which way a shape moved, how many moved) and the others.

Writes OUT/vadapter_convergence.json and OUT/vadapter_convergence.png (validation loss against steps); with
``--arms none --clips N`` the clip part alone (reusing OUT's stage-1 run when its settings are the same), into
OUT/vadapter_convergence_clips.json.

    python benchmarks/vadapter_convergence.py --out runs/vadapter_convergence      # the recorded run
    python benchmarks/vadapter_convergence.py --out runs/vadapter_convergence --arms none --clips 400  # on clips
    python benchmarks/vadapter_convergence.py --out /tmp/va --quick --lm DIR --tiny-lm DIR --encoder DIR  # tests
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from vlbridge.bridges.qformer.objective import references
from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.shapes_folder import shapes_folder
from vlbridge.eval.generate_answers import GenerationSettings
from vlbridge.eval.loss import validation_loss
from vlbridge.eval.scoring import score_sample
from vlbridge.flops import count_flops
from vlbridge.metrics.caption import caption_scores
from vlbridge.recipe import load_recipe
from vlbridge.runs import image_loader, prompt_collator
from vlbridge.train.trainer import evaluate, train

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "vadapter"
ARMS = {  # name -> (description, recipe, uses stage 1)
    "a": ("6-layer resampler (baseline)", "perceiver_baseline.yaml", False),
    "b": ("VAdapter, stage 2 after stage 1", "stage2.yaml", True),
    "c": ("VAdapter without stage 1", "stage2.yaml", False),
    "d": ("1-layer resampler only", "perceiver_baseline.yaml", False),
}


MOTION_TYPES = ("direction", "moved_count")  # the clip questions only motion answers (src/vlbridge/data/shapes_clip_questions.py)


def clips_data(out: Path, n: int, frames: int) -> Path:
    """Shapes clips (LLaVA JSON, frames under clips/), made once per (n, frames), beside a few scenes."""
    from vlbridge.data.shapes_clips_dataset import ClipsConfig, generate_clips
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes

    folder = out / f"shapes_clips_n{n}_f{frames}"
    if not (folder / "manifest.json").is_file():
        export_shapes(generate_shapes(ShapesConfig(n=10, seed=0)), folder, ["llava"], workers=2,
                      clips=generate_clips(ClipsConfig(n=n, num_frames=frames, seed=0)))
    return folder


def mean_and_error(values: list[float]) -> dict:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    n = len(values)
    mean = sum(values) / n
    error = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "stderr": error, "n": n}


def connector_flops(connector, num_inputs: int) -> dict:
    """The connector's closed-form FLOPs for one image against torch's counter on the same input."""
    example = connector.example_input(num_inputs)
    with torch.no_grad():
        measured = count_flops(lambda: connector(example))
    analytic = connector.flops(num_inputs)
    return {"analytic": analytic, "measured": measured, "ratio": analytic / measured}


def first_step_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose validation loss is at or below ``target``."""
    return next((step for step, loss in curve if loss <= target), None)


def arm_settings(arm: str, args, data: Path, run: Path, stage1: Path | None, clips: bool = False) -> list[str]:
    """An arm's recipe settings: on Shapes scenes, or on clips (frame embeddings, the clips' files and steps)."""
    model = [f"model.language_model={args.lm}", f"model.vision_encoder={args.encoder}"]
    if args.vision_layer is not None:
        model.append(f"model.vision_layer={args.vision_layer}")
    heads = f"heads: {args.heads}, head_dim: {args.head_dim}" + (f", max_frames: {args.frames}" if clips else "")
    if arm in ("b", "c"):
        model.append(f"model.connector_options={{language_model: {args.tiny_lm}, layers: {args.tiny_layers}, "
                     f"num_latents: {args.latents}, resampler_depth: 1, {heads}, attention: causal}}")
        model.append(f"model.init_from={stage1 if arm == 'b' else 'null'}")
    elif arm == "a":
        model.append(f"model.connector_options={{depth: 6, num_latents: {args.latents}, {heads}}}")
    else:  # (d): (b)'s resampler, FC_in to the tiny LM's width, and no tiny LM
        model.append(f"model.connector_options={{depth: 1, num_latents: {args.latents}, {heads}, "
                     f"width: {args.tiny_width}}}")
    if clips:
        return model + common_settings(args, data, run, args.clip_steps, args.lr, "val_clip_caption.json") + [
            f"data.train=[{data / 'train_clip_caption.json'}, {data / 'train_clip_short.json'}]"]
    return model + common_settings(args, data, run, args.steps, args.lr) + [
        f"data.train=[{data / 'train_caption.json'}, {data / 'train_short.json'}]"]


def common_settings(args, data: Path, run: Path, steps: int, lr: float, val: str = "val_caption.json") -> list[str]:
    return [f"data.val={data / val}", f"data.image_root={data}", f"train.steps={steps}",
            f"train.batch_size={args.batch}", f"train.lr={lr}", f"train.warmup_steps={max(1, steps // 20)}",
            f"train.eval_every={args.eval_every}", f"train.eval_samples={args.eval_captions}", "train.eval_loss=true",
            f"train.seed={args.seed}", f"train.threads={args.threads}", "train.save_every=0",
            f"train.output_dir={run}", f"eval.max_new_tokens={args.caption_tokens}", *args.overrides]


def final_scores(built, recipe, val_captions: list, val_short: list, args) -> dict:
    """Val caption loss (all captions), CIDEr-D of greedy captions, short-answer exact match, with errors."""
    images = image_loader(built, recipe)
    train_collator = prompt_collator(built, recipe, images, with_answer=True)
    per_caption = [validation_loss(built.model, train_collator, [s]) for s in val_captions]
    collator = prompt_collator(built, recipe, images)
    captions = evaluate(built, collator, val_captions, GenerationSettings(max_new_tokens=args.caption_tokens))
    cider = caption_scores({s.id: references(s) for s in val_captions},
                           dict(zip((s.id for s in val_captions), captions["predictions"])))
    answers = evaluate(built, collator, val_short, GenerationSettings(max_new_tokens=args.answer_tokens))
    correct = [100 * score_sample(s, p)["exact_match"] for s, p in zip(val_short, answers["predictions"])]
    return {"val_caption_loss": validation_loss(built.model, train_collator, val_captions),
            "val_caption_loss_per_caption": mean_and_error(per_caption),
            "cider_d": {**mean_and_error([v["CIDEr"] for v in cider["per_image"].values()]),
                        "corpus": cider["corpus"]["CIDEr"]},
            "short_answer_exact_match": mean_and_error(correct),
            "examples": [{"caption": p, "reference": references(s)[0]}
                         for s, p in zip(val_captions[:3], captions["predictions"])]}


def clip_scores(built, recipe, val_clips: list, args) -> dict:
    """Exact match on the val clips' short answers, over all, the motion questions, and each question type."""
    collator = prompt_collator(built, recipe, image_loader(built, recipe))
    answers = evaluate(built, collator, val_clips, GenerationSettings(max_new_tokens=args.answer_tokens))
    by_type = defaultdict(list)
    for sample, prediction in zip(val_clips, answers["predictions"]):
        by_type[sample.meta["question_type"]].append(100 * score_sample(sample, prediction)["exact_match"])
    motion = [v for kind in MOTION_TYPES for v in by_type.get(kind, [])]
    return {"exact_match": mean_and_error([v for values in by_type.values() for v in values]),
            "motion": mean_and_error(motion) if motion else None,
            "by_question_type": {kind: mean_and_error(values) for kind, values in sorted(by_type.items())}}


def curve(run: Path) -> list[tuple[int, float]]:
    """(step, validation caption loss) as the run logged it."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["val_loss"]) for line in lines if "val_loss" in line]


def plot(results: dict, stage1_steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, result in results.items():
        steps, losses = zip(*result["curve"])
        label = f"({arm}) {result['name']}" + (f" [+{stage1_steps} stage-1 steps]" if arm == "b" else "")
        ax.plot(steps, losses, marker="o", markersize=3, label=label)
    ax.set(xlabel="stage-2 step", ylabel="validation caption loss (per token)",
           title="PaLM2-VAdapter vs the Perceiver resampler, frozen SmolLM2-135M")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, runs, JSON and PNG")
    parser.add_argument("--data", type=Path, help="an existing Shapes export (default: made in OUT from --n)")
    parser.add_argument("--n", type=int, default=800, help="Shapes scenes when the data is made here")
    parser.add_argument("--quick", action="store_true", help="a few steps and samples, to check the pipeline")
    parser.add_argument("--arms", default="a,b,c,d", help=f"which of {list(ARMS)} to run")
    parser.add_argument("--lm", default="smollm2-135m", help="the large LM (frozen)")
    parser.add_argument("--tiny-lm", default="smollm2-135m", help="the tiny LM, truncated to --tiny-layers")
    parser.add_argument("--tiny-layers", type=int, default=4, help="decoder layers kept in the tiny LM")
    parser.add_argument("--tiny-width", type=int, default=576, help="the tiny LM's width (the resampler's in (b)-(d))")
    parser.add_argument("--encoder", default="dinov2-small", help="the frozen vision encoder")
    parser.add_argument("--vision-layer", type=int, help="the encoder's grid layer (default: the preset's)")
    parser.add_argument("--latents", type=int, default=64, help="soft tokens into the large LM, every arm")
    parser.add_argument("--heads", type=int, default=8, help="resampler heads")
    parser.add_argument("--head-dim", type=int, default=64, help="resampler head width")
    parser.add_argument("--stage1-steps", type=int, default=150, help="(b)'s stage-1 steps")
    parser.add_argument("--stage1-lr", type=float, default=2e-4, help="stage-1 peak learning rate")
    parser.add_argument("--steps", type=int, default=150, help="stage-2 steps, every arm")
    parser.add_argument("--lr", type=float, default=2e-4, help="stage-2 peak learning rate, every arm")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--eval-every", type=int, default=25, help="validation loss every N steps")
    parser.add_argument("--eval-captions", type=int, default=40, help="val captions of the periodic evaluation")
    parser.add_argument("--final-captions", type=int, default=80, help="val captions of the final scores (0 = all)")
    parser.add_argument("--final-questions", type=int, default=300, help="val short answers scored (0 = all)")
    parser.add_argument("--caption-tokens", type=int, default=30, help="greedy tokens per caption")
    parser.add_argument("--answer-tokens", type=int, default=6, help="greedy tokens per short answer")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every run (stage 1 and every arm), e.g. train.precision=fp32")
    parser.add_argument("--clips", type=int, default=0, help="Shapes clips for (a) vs (b) on clips (0 = no clip part)")
    parser.add_argument("--clip-arms", default="a,b", help="which of (a), (b) train on clips")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--clip-steps", type=int, default=150, help="training steps of (a) and (b) on clips")
    parser.add_argument("--clip-questions", type=int, default=0, help="val clip questions scored (0 = all)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.stage1_steps, args.steps, args.batch, args.eval_every = 40, 3, 4, 2, 2
        args.eval_captions, args.final_captions, args.final_questions, args.caption_tokens = 2, 3, 4, 4
        args.clip_steps, args.clip_questions = 2, 6
    arms = [a.strip() for a in args.arms.split(",") if a.strip() and a.strip() != "none"]
    clip_arms = [a.strip() for a in args.clip_arms.split(",") if a.strip()] if args.clips else []
    if (not arms and not clip_arms) or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms {args.arms!r}: choose from {list(ARMS)} (or none, with --clips)")
    if any(a not in ("a", "b") for a in clip_arms):
        raise SystemExit(f"--clip-arms {args.clip_arms!r}: choose from ['a', 'b']")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = args.data or shapes_folder(out, args.n, 0)
    val_captions = list(read_llava_json(data / "val_caption.json", image_root=data))
    val_short = list(read_llava_json(data / "val_short.json", image_root=data))
    val_captions = val_captions[:args.final_captions or None]
    val_short = val_short[:args.final_questions or None]

    stage1 = None
    numbers: dict = {}
    if "b" in arms + clip_arms:  # stage 1: the tiny LM as a captioning decoder
        stage1 = out / "stage1"
        settings = [f"model.language_model={args.tiny_lm}", f"model.language_model_layers={args.tiny_layers}",
                    f"model.vision_encoder={args.encoder}",
                    f"model.connector_options={{depth: 1, num_latents: {args.latents}, heads: {args.heads}, "
                    f"head_dim: {args.head_dim}, width: {args.tiny_width}}}",
                    *common_settings(args, data, stage1, args.stage1_steps, args.stage1_lr),
                    f"data.train={data / 'train_caption.json'}"]
        if args.vision_layer is not None:
            settings.append(f"model.vision_layer={args.vision_layer}")
        done = stage1 / "benchmark_stage1.json"  # a finished stage 1 of the same settings is reused
        if done.is_file() and json.loads(done.read_text())["settings"] == settings:
            print(f"reusing the stage-1 run in {stage1} (same settings)")
            wall = json.loads(done.read_text())["wall_seconds"]
        else:
            wall = train(load_recipe(RECIPES / "stage1.yaml", settings), overwrite=True)["wall_seconds"]
            done.write_text(json.dumps({"settings": settings, "wall_seconds": wall}))
        numbers["stage1"] = {"steps": args.stage1_steps, "curve": curve(stage1), "wall_seconds": wall}

    results = {}
    for arm in arms:
        name, recipe_file, _ = ARMS[arm]
        run = out / f"arm_{arm}"
        recipe = load_recipe(RECIPES / recipe_file, arm_settings(arm, args, data, run, stage1))
        result = train(recipe, overwrite=True)  # the benchmark's own folders: a rerun replaces them
        built = result["built"]
        connector = built.model.bridge.connector
        results[arm] = {
            "name": name, "curve": curve(run), "wall_seconds": result["wall_seconds"],
            "step_seconds_median": statistics.median(h["step_seconds"] for h in result["history"]),
            "trainable_parameters": result["parameter_counts"]["bridge"]["trainable"],
            "connector_flops": connector_flops(connector, built.model.num_connector_inputs),
            **final_scores(built, recipe, val_captions, val_short, args),
        }
        del result, built

    on_clips = {}
    if args.clips:
        clips = clips_data(out, args.clips, args.frames)
        val_clips = list(read_llava_json(clips / "val_clip_short.json", image_root=clips))
        val_clips = val_clips[:args.clip_questions or None]
        for arm in clip_arms:
            run = out / f"clips_{arm}"
            recipe = load_recipe(RECIPES / ARMS[arm][1], arm_settings(arm, args, clips, run, stage1, clips=True))
            result = train(recipe, overwrite=True)
            on_clips[arm] = {"name": ARMS[arm][0], "curve": curve(run), "wall_seconds": result["wall_seconds"],
                             **clip_scores(result["built"], recipe, val_clips, args)}
            del result

    summary = {}
    if "a" in results and "b" in results:
        target = results["a"]["curve"][-1][1]
        reached = first_step_reaching(results["b"]["curve"], target)
        summary = {"baseline_final_val_loss": target, "b_steps_to_reach_it": reached,
                   "b_fraction_of_baseline_steps": None if reached is None else reached / args.steps,
                   "stage1_steps_beside_it": args.stage1_steps}
    numbers |= {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"folder": str(data), "val_captions": len(val_captions), "val_questions": len(val_short)},
        "arms": results, "convergence": summary, "clips": on_clips,
        **({"clips_data": {"folder": str(clips), "val_questions": len(val_clips)}} if args.clips else {}), "wall_seconds": time.perf_counter() - started,
    }
    report = out / ("vadapter_convergence.json" if results else "vadapter_convergence_clips.json")  # clips alone
    report.write_text(json.dumps(numbers, indent=1))
    if results:
        plot(results, args.stage1_steps, out / "vadapter_convergence.png")
    print(f"{'arm':<38}{'trainable':>11}{'val loss':>10}{'CIDEr-D':>16}{'short EM %':>16}{'FLOPs a/m':>11}")
    for arm, r in results.items():
        cider, em = r["cider_d"], r["short_answer_exact_match"]
        print(f"({arm}) {r['name']:<34}{r['trainable_parameters']:>11,}{r['val_caption_loss']:>10.4f}"
              f"{cider['mean']:>9.3f} ±{cider['stderr']:.3f}{em['mean']:>10.1f} ±{em['stderr']:.1f}"
              f"{r['connector_flops']['ratio']:>11.4f}")
    if summary:
        reached = summary["b_steps_to_reach_it"]
        print(f"(b) reaches (a)'s final val loss {summary['baseline_final_val_loss']:.4f} at step "
              f"{reached if reached is not None else 'never'} of {args.steps} (+{args.stage1_steps} stage-1 steps)")
    for arm, r in on_clips.items():
        em, motion = r["exact_match"], r["motion"]
        kinds = ", ".join(f"{kind} {v['mean']:.1f}" for kind, v in r["by_question_type"].items())
        print(f"clips ({arm}) {r['name']}: exact match {em['mean']:.1f} ±{em['stderr']:.1f} %"
              + (f", motion questions {motion['mean']:.1f} ±{motion['stderr']:.1f} %" if motion else "")
              + f" ({kinds})")
    print(f"wrote {report}" + (f" and {out / 'vadapter_convergence.png'}" if results else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
