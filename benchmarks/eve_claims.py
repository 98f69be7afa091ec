"""EVE's claims measured on Shapes: the PAL helps, stage 1 stabilises stage 2, no encoder is faster, what the LM loses,
accuracy against the LLaVA-style bridge, and the PEL's and PAL's closed-form FLOPs.

All EVE runs go through the one trainer and the shipped recipes (recipes/eve/stage{1,2,3}.yaml: the PEL reads
224-px pixels, 8 x 8 grid cells -> 73 vectors, into SmolLM2-135M; the PAL learns from the frozen DINOv2-S teacher),
with the same seed, batch size and steps per stage, so runs of the same stage see the same batches in the same order.
Each claim (``--claims``, all by default):

- ``pal``: stages 1+2+3 with the PAL vs without it (no teacher, no aligner), equal steps: the teacher-forced
  caption loss on every reference caption of the val images after stage 2 (per image, ± SE), and exact-match
  accuracy on the test short answers after stage 3 (± SE), each difference with its paired SE;
- ``stability``: stage 2 from stage 1 vs stage 2 from a fresh PEL and PAL (both with the PAL, the LM trains):
  loss curve, gradient-norm spikes (steps whose pre-clipping norm, as the trainer logs it, exceeds
  ``--spike-factor`` x the median of the previous ``--spike-window`` steps, from step 6 on), final and val loss;
- ``speed``: image file -> first answer token (batch 1, latency) and images per second (a batch of
  ``--speed-batch``), EVE (no encoder, untrained PEL) vs DINOv2-S + the LLaVA-style MLP (preset llava, 2x2
  pooling), the same 8 x 8 = 64 grid cells per 224-px image (EVE adds its CLS and 8 SPLITs: 73 vectors);
  ``--repeats`` interleaved repeats (the order alternates), medians and spread, and the paired ratio;
- ``text``: the LM loss per token on held-out text (every reference caption of the test images, no image, plain
  text) of the pretrained LM (= after stage 1, which keeps the LM frozen) and after stages 2 and 3;
- ``llava``: accuracy on the same test short answers of the LLaVA-style bridge (recipes/llava_shapes.yaml: frozen
  DINOv2-S features, 64 tokens, frozen LM) trained for the same steps on the same data as EVE's stages: captions
  for stage 1 + stage 2 steps, then short answers for stage 3 steps (LLaVA's own two stages);
- ``flops``: the PEL's ``flops`` and the PAL's ``flops`` against torch's flop counter (ratio within 1 %).

Every warm-up is 1 % of its run (the EVE recipes'). Each finished run (and the flops and speed measurements) is
written at once to OUT/results/<name>.json and reused when the script runs again with the same settings (``--force``
redoes it), so a long run that is cut short continues where it stopped, and claims can be measured in separate calls.
Writes OUT/eve_claims.json (every number, the settings, the command) and OUT/eve_claims.md (the tables) with every
claim whose results are stored with these settings, and OUT/eve_stage2_curves.png (stage 2's loss and gradient norm per
step, from stage 1, fresh, and without the PAL) when those runs are stored.

    python benchmarks/eve_claims.py --out runs/eve_claims                 # the full run (hours: docs/eve.md)
    python benchmarks/eve_claims.py --out /tmp/eve_quick --quick          # the pipeline in tiny runs
    python benchmarks/eve_claims.py --out runs/eve_claims --claims speed,flops
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from vlbridge.data.llava_json import read_llava_json, write_json_atomic
from vlbridge.data.sample import Sample, Turn
from vlbridge.data.shapes_folder import shapes_folder
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.eval.scoring import majority_baseline, question_type_baseline, score_sample
from vlbridge.flops import count_flops
from vlbridge.image_inputs import PixelImages
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, image_loader, prompt_collator
from vlbridge.text.tokenize import IGNORE
from vlbridge.train.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_costs import timed  # noqa: E402 (sibling scripts, not a package)
from eve_claims_tables import compare, markdown, mean_se, plot, summary  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CLAIMS = ("flops", "speed", "pal", "stability", "text", "llava")
# run -> (kind, stage, with the PAL, the run it starts from)
RUNS = {
    "eve_pal_stage1": ("eve", 1, True, None), "eve_pal_stage2": ("eve", 2, True, "eve_pal_stage1"),
    "eve_pal_stage3": ("eve", 3, True, "eve_pal_stage2"),
    "eve_nopal_stage1": ("eve", 1, False, None), "eve_nopal_stage2": ("eve", 2, False, "eve_nopal_stage1"),
    "eve_nopal_stage3": ("eve", 3, False, "eve_nopal_stage2"),
    "eve_fresh_stage2": ("eve", 2, True, None),  # stage 2 from a fresh PEL and PAL
    "llava_captions": ("llava", 2, False, None), "llava_short": ("llava", 3, False, "llava_captions"),
}
PAL_ARM = ["eve_pal_stage1", "eve_pal_stage2", "eve_pal_stage3"]
NEEDS = {  # claim -> the runs it compares
    "pal": [*PAL_ARM, "eve_nopal_stage1", "eve_nopal_stage2", "eve_nopal_stage3"],
    "stability": [*PAL_ARM[:2], "eve_fresh_stage2"],
    "text": PAL_ARM,
    "llava": [*PAL_ARM, "llava_captions", "llava_short"],
}


# --- measurements on a trained model ----------------------------------------------------------------------------
def pixels_loader(built, recipe):
    """Pixels for a pixel connector (the teacher's features are for training only), else the cached features."""
    if built.model.bridge.consumes == "pixels":
        return PixelImages(built.model.preprocess)
    return image_loader(built, recipe)


@torch.no_grad()
def caption_loss(built, recipe, val: list[Sample]) -> dict:
    """Teacher-forced loss per token of every reference caption of each val image, averaged per image."""
    samples = [Sample(f"{s.id}#{i}", (s.turns[0], Turn("assistant", text)), image=s.image, source=s.source)
               for s in val for i, text in enumerate(s.meta.get("answers") or [s.answer])]
    collate = prompt_collator(built, recipe, pixels_loader(built, recipe), with_answer=True)
    model, per_image = built.model.eval(), {}
    for i in range(0, len(samples), 8):
        chunk = samples[i:i + 8]
        batch = collate(chunk)
        rows = model(batch, row_losses=True).row_loss / (batch.labels[:, 1:] != IGNORE).sum(1)
        for s, loss in zip(chunk, rows.tolist()):
            per_image.setdefault(s.id.rsplit("#", 1)[0], []).append(loss)
    values = {k: sum(v) / len(v) for k, v in per_image.items()}
    mean, se = mean_se(list(values.values()))
    return {"mean": mean, "se": se, "images": len(values), "captions": len(samples), "per_image": values}


@torch.no_grad()
def text_loss(built, texts: list[str]) -> dict:
    """The LM alone on plain text: loss per predicted token of each text (its first token predicts nothing)."""
    lm, tokenizer, losses = built.model.language_model.eval(), built.tokenizer, {}
    for i in range(0, len(texts), 16):
        encoded = tokenizer(texts[i:i + 16], padding=True, return_tensors="pt", add_special_tokens=False)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]  # (B, T) each, padded on either side
        first = (mask.cumsum(1) == 1) & (mask == 1)  # each text's first token: nothing before it predicts it
        labels = ids.masked_fill((mask == 0) | first, IGNORE)
        out = lm(lm.embed(ids), mask, labels, row_losses=True)
        for j, (loss, count) in enumerate(zip(out.row_loss.tolist(), (mask.sum(1) - 1).tolist())):
            losses[str(i + j)] = loss / count
    mean, se = mean_se(list(losses.values()))
    return {"mean": mean, "se": se, "texts": len(losses), "per_text": losses}


def accuracy(built, recipe, test: list[Sample], seed: int) -> dict:
    """Greedy exact match (%) on the test short answers, with each question's 0/1."""
    settings = GenerationSettings(recipe.eval.max_new_tokens, recipe.eval.batch_size, seed=seed)
    collate = prompt_collator(built, recipe, pixels_loader(built, recipe))
    predictions = generate_answers(built.model, built.tokenizer, collate, test, settings)
    correct = {s.id: 100 * score_sample(s, p)["exact_match"] for s, p in zip(test, predictions)}
    mean, se = mean_se(list(correct.values()))
    return {"mean": mean, "se": se, "questions": len(correct), "per_question": correct,
            "examples": [{"question": s.turns[0].text.split("\n")[-1], "answer": s.answer, "prediction": p}
                         for s, p in list(zip(test, predictions))[:6]]}


# --- runs --------------------------------------------------------------------------------------------------------
def overrides(name: str, args, data: Path) -> list[str]:
    """Run ``name``'s settings over its recipe: data, steps, batch, seed, where it starts from, the user's."""
    kind, stage, pal, parent = RUNS[name]
    steps = args.stage_steps[stage - 1] if kind == "eve" else (
        args.stage_steps[0] + args.stage_steps[1] if stage == 2 else args.stage_steps[2])
    task = "short" if stage == 3 else "caption"
    settings = [f"data.train={data / f'train_{task}.json'}", f"data.val={data / f'val_{task}.json'}",
                f"data.image_root={data}", f"train.steps={steps}", f"train.batch_size={args.batch_size}",
                f"train.seed={args.seed}", f"train.threads={args.threads}",
                f"train.warmup_steps={max(1, round(steps / 100))}",
                "train.eval_every=0", "train.eval_samples=1", "train.save_every=0",
                f"train.output_dir={args.out / 'runs' / name}",
                f"model.init_from={args.out / 'runs' / parent if parent else 'null'}"]
    if args.lm:
        settings.append(f"model.language_model={args.lm}")
    if kind == "eve":
        settings += [f"model.teacher_encoder={args.teacher}"] if args.teacher else []
        settings += [*args.eve_set, *args.overrides]
        if not pal:  # after the user's settings: nothing may bring the aligner back
            settings += ["model.teacher_encoder=null", "model.aligner=null", "model.aligner_options={}"]
    else:
        settings += [f"model.vision_encoder={args.encoder}"] if args.encoder else []
        settings += ["model.bridge_options={pool: 2}", *args.llava_set, *args.overrides]
    return settings


def recipe_of(name: str, args, data: Path):
    kind, stage = RUNS[name][:2]
    path = RECIPES / "eve" / f"stage{stage}.yaml" if kind == "eve" else RECIPES / "llava_shapes.yaml"
    return load_recipe(path, overrides(name, args, data))


def signature(name: str, args, data: Path) -> dict:
    """What makes a stored result reusable: the run's settings, the measurements' sizes, its parent's signature."""
    parent = RUNS[name][3]
    return {"run": name, "settings": overrides(name, args, data), "eval_samples": args.eval_samples,
            "val_images": args.val_images, "text_images": args.text_images,
            "parent": signature(parent, args, data) if parent else None}


def stored(name: str, expected: dict, args, reuse: bool = True) -> dict | None:
    """OUT/results/<name>.json when it was made with ``expected`` settings (and a run's checkpoint is still there)."""
    path = args.out / "results" / f"{name}.json"
    if not reuse or not path.is_file():
        return None
    row = json.loads(path.read_text())
    if row.get("signature") != expected or (name in RUNS and not (args.out / "runs" / name / "final").is_dir()):
        return None
    return row


def run_one(name: str, args, data: Path, sets: dict, done: dict) -> dict:
    """Train run ``name`` (after the run it starts from) and measure it, or reuse its stored result."""
    if name in done:
        return done[name]
    expected = signature(name, args, data)
    row = stored(name, expected, args, reuse=not args.force)
    if row is not None:
        print(f"{name}: done before ({args.out / 'results' / name}.json), reused", flush=True)
        done[name] = row
        return row
    kind, stage, _, parent = RUNS[name]
    if parent:
        run_one(parent, args, data, sets, done)  # the run it starts from, first
    print(f"\n{name}: training {kind} stage {stage}", flush=True)
    recipe = recipe_of(name, args, data)
    result = train(recipe, log=args.log, overwrite=True)  # not stored: replace what a stopped run left
    built, history = result["built"], result["history"]
    row = {"run": name, "signature": expected, "trainable": result["report"]["parameters_trainable"],
           "lm_trainable": result["parameter_counts"].get("lm", {}).get("trainable", 0),
           "history": [{k: h[k] for k in ("loss", "alignment", "grad_norm", "step_seconds") if k in h}
                       for h in history],
           "seconds_per_step": statistics.median(h["step_seconds"] for h in history[1:] or history),
           "train_wall_seconds": result["wall_seconds"]}
    if stage < 3:
        row["val_caption_loss"] = caption_loss(built, recipe, sets["val_caption"])
    else:
        row["accuracy"] = accuracy(built, recipe, sets["test_short"], args.seed)
    if kind == "eve":
        row["text_loss"] = text_loss(built, sets["texts"])
    write_json_atomic(row, args.out / "results" / f"{name}.json", indent=1)
    del result, built
    gc.collect()
    done[name] = row
    return row


def claim_signature(claim: str, args, data: Path) -> dict:
    """What makes a stored flops or speed result reusable."""
    return {"claim": claim, "eve": overrides("eve_pal_stage3", args, data),
            "llava": overrides("llava_short", args, data), "sizes": sorted(args.flops_sizes),
            "repeats": args.repeats, "speed_batch": args.speed_batch, "eval_samples": args.eval_samples,
            "threads": args.threads}


def measure_once(claim: str, args, data: Path, measure) -> None:
    """The flops or speed claim, measured unless stored with the same settings."""
    expected = claim_signature(claim, args, data)
    if stored(claim, expected, args, reuse=not args.force) is None:
        print(f"\n{claim}: measuring", flush=True)
        write_json_atomic({"signature": expected, "result": measure()}, args.out / "results" / f"{claim}.json",
                          indent=1)


# --- the claims without training -----------------------------------------------------------------------------------
def flops_claim(args, data: Path) -> list[dict]:
    """The PEL's and the PAL's closed-form FLOPs against torch's counter."""
    built = build_seeded(recipe_of("eve_pal_stage1", args, data), training=True)
    pel, pal = built.model.bridge.connector, built.model.aligner
    rows = []
    for size in sorted({pel.image_size, *args.flops_sizes}):
        n = (size // pel.patch) ** 2
        example = pel.example_input(n)  # (1, 4, size, size), all valid
        with torch.no_grad():
            measured = count_flops(lambda: pel(example))
        rows.append({"part": "PEL", "size": f"{size} px", "analytic": pel.flops(n), "measured": measured})
    cells = (pel.image_size // pel.cell) ** 2
    levels = torch.randn(cells, len(pal.levels), built.model.language_model.config.hidden_size)
    with torch.no_grad():
        measured = count_flops(lambda: pal(levels))
    rows.append({"part": "PAL", "size": f"{cells} cells", "analytic": pal.flops(cells), "measured": measured})
    for row in rows:
        row["ratio"] = row["measured"] / row["analytic"]
        row["within_1_percent"] = abs(row["ratio"] - 1) <= 0.01
    return rows


def speed_claim(args, data: Path, test: list[Sample]) -> dict:
    """EVE (no encoder) vs DINOv2-S + the LLaVA-style MLP: image file -> first answer token, interleaved."""
    models = {"eve": build_seeded(recipe_of("eve_pal_stage3", args, data)),  # inference: no teacher, no PAL
              "llava": build_seeded(recipe_of("llava_short", args, data))}
    collate = {k: prompt_collator(b) for k, b in models.items()}  # pixels: the encoder runs on every image
    images = [s for s in test if s.image is not None]
    batch = [images[i % len(images)] for i in range(args.speed_batch)]

    def first_token(key, samples):
        with torch.no_grad():
            models[key].model.generate(collate[key](samples), max_new_tokens=1)

    rows = {}
    for key, built in models.items():
        model = built.model.eval()
        example = collate[key](images[:1])
        with torch.no_grad():  # pixels -> visual vectors: the encoder (if any) and the connector
            vectors, lengths = model.visual_tokens(example)
            front_end = count_flops(lambda: model.visual_tokens(example))
        connector = model.bridge.connector
        cells = int(connector.grid_shapes(example.images.pixel_values).prod()) if key == "eve" else vectors.shape[1]
        rows[key] = {"visual_vectors": int(lengths[0]) if lengths is not None else vectors.shape[1],
                     "grid_cells": cells, "front_end_gflops": front_end / 1e9, "latency_s": [], "images_per_s": []}
        first_token(key, images[:1])  # warm-up
        first_token(key, batch)
    for repeat in range(args.repeats):
        for key in (["eve", "llava"] if repeat % 2 == 0 else ["llava", "eve"]):
            one = [images[repeat % len(images)]]
            rows[key]["latency_s"].append(timed(lambda: first_token(key, one)))
            rows[key]["images_per_s"].append(len(batch) / timed(lambda: first_token(key, batch)))
    ratios = {"latency_llava_over_eve": summary([a / b for a, b in zip(rows["llava"]["latency_s"],
                                                                        rows["eve"]["latency_s"])]),
              "images_per_s_eve_over_llava": summary([a / b for a, b in zip(rows["eve"]["images_per_s"],
                                                                             rows["llava"]["images_per_s"])])}
    for row in rows.values():
        row["latency"], row["throughput"] = summary(row["latency_s"]), summary(row["images_per_s"])
    return {"rows": rows, "paired": ratios, "threads": torch.get_num_threads(), "batch": len(batch),
            "repeats": args.repeats}


# --- putting it together ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, runs, results, JSON and tables")
    parser.add_argument("--claims", default=",".join(CLAIMS), help=f"comma-separated subset of {list(CLAIMS)}")
    parser.add_argument("--scenes", type=int, default=600, help="Shapes scenes (80 %% train, 10 %% val, 10 %% test)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Shapes data")
    parser.add_argument("--image-size", type=int, default=224, help="Shapes image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="training seed (init, data order) of every run")
    parser.add_argument("--stage-steps", type=int, nargs=3, default=[300, 300, 300], metavar=("S1", "S2", "S3"),
                        help="optimizer steps of stages 1, 2 and 3 (the recipes': 300 each)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step, every run")
    parser.add_argument("--eval-samples", type=int, default=0, help="first N test short answers scored (0 = all)")
    parser.add_argument("--val-images", type=int, default=0, help="val images for the caption loss (0 = all)")
    parser.add_argument("--text-images", type=int, default=0, help="test images whose captions are the held-out "
                        "text (0 = all)")
    parser.add_argument("--spike-factor", type=float, default=3.0, help="a spike: grad norm > this x running median")
    parser.add_argument("--spike-window", type=int, default=20, help="steps in the running median")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing repeats (speed)")
    parser.add_argument("--speed-batch", type=int, default=8, help="images per batch for images per second")
    parser.add_argument("--flops-sizes", type=int, nargs="*", default=[672], help="PEL canvas sizes counted besides "
                        "the run's")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--lm", help="language model of every run (default: the recipes', smollm2-135m)")
    parser.add_argument("--teacher", help="EVE's teacher encoder (default: the recipes', dinov2-small)")
    parser.add_argument("--encoder", help="the LLaVA-style bridge's encoder (default: the recipe's, dinov2-small)")
    parser.add_argument("--eve-set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override of the EVE runs (repeatable)")
    parser.add_argument("--llava-set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override of the LLaVA-style runs (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override of every run (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the pipeline: 30 scenes, "
                        "2 steps a stage of batch 2, 6 questions, 2 val and text images, 2 repeats, no 672-px count")
    parser.add_argument("--force", action="store_true", help="measure and train again what is stored")
    parser.add_argument("--quiet", action="store_true", help="no trainer log")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.stage_steps, args.batch_size, args.eval_samples = 30, [2, 2, 2], 2, 6
        args.val_images, args.text_images, args.repeats, args.speed_batch, args.flops_sizes = 2, 2, 2, 2, []
    claims = [c.strip() for c in args.claims.split(",") if c.strip()]
    if not claims or set(claims) - set(CLAIMS):
        raise SystemExit(f"unknown or no claims {claims}; valid: {list(CLAIMS)}")
    args.log = (lambda *a, **k: None) if args.quiet else print
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    from vlbridge.allocator import keep_freed_memory

    keep_freed_memory()  # as the vlbridge command does
    if args.threads:
        torch.set_num_threads(args.threads)
    data = shapes_folder(args.out, args.scenes, args.data_seed, args.image_size)

    def first(items, n):
        return items[:n] if n else items

    test_short = first(read_llava_json(data / "test_short.json", image_root=data), args.eval_samples)
    test_caption = first(read_llava_json(data / "test_caption.json", image_root=data), args.text_images)
    sets = {"test_short": test_short,
            "val_caption": first(read_llava_json(data / "val_caption.json", image_root=data), args.val_images),
            "texts": [t for s in test_caption for t in (s.meta.get("answers") or [s.answer])]}
    if "flops" in claims:
        measure_once("flops", args, data, lambda: flops_claim(args, data))
    if "speed" in claims:
        measure_once("speed", args, data, lambda: speed_claim(args, data, test_short))
    done: dict = {}
    for claim in claims:
        for name in NEEDS.get(claim, []):
            run_one(name, args, data, sets, done)

    # the report: every claim whose results are stored with these settings, from this call or earlier ones
    runs = {n: r for n in RUNS if (r := stored(n, signature(n, args, data), args)) is not None}
    complete = [c for c in CLAIMS if c in NEEDS and all(n in runs for n in NEEDS[c])]
    train_short = read_llava_json(data / "train_short.json", image_root=data)
    report = {"command": command, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(args).items() if k != "log"},
              "data": str(data), "claims": {}, "runs": runs,
              "baselines": {"majority": majority_baseline(train_short, test_short),
                            "question_type": question_type_baseline(train_short, test_short)}}
    for claim in ("flops", "speed"):
        if (measured := stored(claim, claim_signature(claim, args, data), args)) is not None:
            report["claims"][claim] = measured["result"]
    report["claims"].update(compare(runs, complete, args.spike_factor, args.spike_window))
    report["wall_seconds"] = time.perf_counter() - started
    write_json_atomic(report, args.out / "eve_claims.json", indent=1)
    text = markdown(report)
    (args.out / "eve_claims.md").write_text(text)
    plotted = plot(runs, args.out / "eve_stage2_curves.png")  # the stability claim's curves
    print("\n" + text)
    print(f"wrote {args.out / 'eve_claims.json'} and {args.out / 'eve_claims.md'}"
          + (f" and {args.out / 'eve_stage2_curves.png'}" if plotted else "")
          + f" ({report['wall_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
