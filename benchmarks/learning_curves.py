"""Learning curves on Shapes short answers: validation accuracy per question type against steps and wall time, for
the LLaVA-style bridge and MemVP, with the knobs that decide how fast they learn. What limits learning, measured.

A run is an *arm*: a bridge and its knob settings, written as recipe overrides (``--set`` style) over the settings
of ``bridge_accuracy.py`` (the demo's: a one-line system prompt, 5 warm-up steps, LLaVA-style on the 2x2-pooled
DINOv2-S grid at lr 1e-3, MemVP on 256 grid features in 320 slots at lr 3e-3). Every arm trains from the same seed
between the packaged DINOv2-S/14 (frozen, features cached on disk) and the frozen SmolLM2-135M on the Shapes
export's ``train_short.json``. The trainer evaluates every ``--eval-every`` steps on the first ``--eval-samples``
questions of ``val_short.json`` (greedy answers, exact match after VQA normalisation) and writes the accuracy per
question type and answer type to the run's ``metrics.jsonl`` (``val_by_type``); this script reads it back into the
curve. Knobs and their recipe keys (the ``ARMS`` below; ``--arms`` picks, ``--arm`` adds):

- learning rate ``train.lr``; schedule ``train.warmup_steps``, ``train.min_lr_ratio`` (1 = constant after warm-up);
- batch size ``train.batch_size`` (each arm's batch size overrides ``--batch-size``);
- scenes and epochs: ``--scenes`` per invocation (one data set per OUT); the feature cache makes epochs cheap, so
  ``--steps`` beyond one epoch costs only steps, and every curve point carries its epoch;
- feature layer ``model.vision_layer`` (one hidden-states index; 0 = the patch embeddings);
- visual tokens ``model.bridge_options.pool`` (LLaVA-style: k x k average pooling of the 16 x 16 grid);
- projector width ``model.bridge_options.hidden`` (LLaVA-style: None = the LM's width 576; MemVP: 128);
- prompt format ``model.chat_format`` (plain: ``question\\nanswer<eos>``), ``model.system_prompt`` (null = the
  template's own long one; a short-answer instruction placed in the system prompt);
- MemVP's lambda ``model.bridge_options.lam`` (0.01) and scale s ``model.bridge_options.scale`` (0.1).

Not yet expressible with recipe keys (left out, on purpose: each needs a library change first):

- several feature layers concatenated: ``model.vision_layer`` takes one index (a list of indices whose grids the
  encoder concatenates along the feature axis, with the feature cache keyed by the list);
- the encoder's input resolution: each backbone's preprocessing fixes it (224 px for DINOv2-S); ``--image-size``
  only changes the size the Shapes scenes are drawn at (a ``model.vision_image_size`` that resizes and interpolates
  the ViT's position embeddings would make it a knob); the visual token count is one (``pool`` above);
- a leading space before the answer, and dropping the supervised end-of-turn token: the chat format fixes both (an
  answer prefix and a ``supervise end of turn`` switch in the chat format would make them knobs);
- a short-answer instruction after each question (LLaVA-1.5's "Answer the question using a single word or
  phrase."): the questions come from the data files; only the system-prompt placement is an arm here.

Time: ``wall_seconds`` of a curve point = the feature encoding the trainer reported for the run (the first arm of
an encoder setting encodes every train and val image; later arms load the cached features, and the table says
which) + the sum of the training steps' ``step_seconds`` up to that step. Evaluation time is not counted: it is
measurement, and its share depends on ``--eval-every``. ``metrics.jsonl`` carries no wall clock of its own.

Each finished arm is written to OUT/results/<arm>.json and reused when the script runs again with the same
settings (``--force`` trains it again). From all stored arms it writes OUT/learning_curves.json (settings and
curves), OUT/learning_curves.md (final accuracy overall, per target group and per question type; steps and seconds
to 50 / 60 / 75 %) and OUT/learning_curves.png (accuracy against steps and wall seconds; per question type).

Estimates, not measurements (from the step and scoring times in ``bridge_accuracy.py`` on this 2-core CPU with
nothing else running): defaults (800 scenes, 300 steps of batch 8, about one epoch; evaluation every 50 steps on
320 val questions) take ~20 min per LLaVA-style arm and ~11 min per MemVP arm, ~1.5 min more to encode the 720
images once; the default four arms ~1 h. ``--quick`` checks the pipeline on a few scenes and steps.

    python benchmarks/learning_curves.py --out runs/learning_curves
    python benchmarks/learning_curves.py --out runs/learning_curves --arms memvp,memvp-lam0.1,memvp-scale1
    python benchmarks/learning_curves.py --out runs/learning_curves --steps 600 --eval-every 100 --arms llava
    python benchmarks/learning_curves.py --out runs/learning_curves --arm 'mine=memvp,train.lr=5e-3,train.batch_size=16'
    python benchmarks/learning_curves.py --out /tmp/curves_quick --quick    # the pipeline on tiny settings
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bridge_accuracy  # noqa: E402 (sibling scripts, not a package)
from learning_curves_tables import write_outputs  # noqa: E402

LLAVA, MEMVP = bridge_accuracy.LLAVA, bridge_accuracy.MEMVP
# LLaVA-1.5's short-answer instruction, here in the system prompt (after each question is not expressible)
SHORT_ANSWER = "model.system_prompt=You are a helpful assistant. Answer the question using a single word or phrase."
ARMS: dict[str, list[str]] = {
    "llava": LLAVA,
    "llava-lr3e-4": [*LLAVA, "train.lr=3e-4"],
    "llava-lr3e-3": [*LLAVA, "train.lr=3e-3"],
    "llava-constant-lr": [*LLAVA, "train.min_lr_ratio=1.0"],  # no cosine decay after the warm-up
    "llava-warmup30": [*LLAVA, "train.warmup_steps=30"],
    "llava-batch4": [*LLAVA, "train.batch_size=4"],
    "llava-batch16": [*LLAVA, "train.batch_size=16"],
    "llava-layer-last": [*LLAVA, "model.vision_layer=-1"],  # the last block's output (default -2, the penultimate)
    "llava-layer-6": [*LLAVA, "model.vision_layer=6"],  # the middle of DINOv2-S's 12 blocks
    "llava-256": [*LLAVA, "model.bridge_options.pool=1"],  # all 256 grid tokens (~3x the step cost of 64)
    "llava-pool4": [*LLAVA, "model.bridge_options.pool=4"],  # 16 tokens
    "llava-width-128": [*LLAVA, "model.bridge_options.hidden=128"],  # MemVP's projector width
    "llava-width-2048": [*LLAVA, "model.bridge_options.hidden=2048"],
    "llava-plain-format": [*LLAVA, "model.chat_format=plain"],
    "llava-default-system": [*LLAVA, "model.system_prompt=null"],
    "llava-short-instruction": [*LLAVA, SHORT_ANSWER],
    "memvp": MEMVP,
    "memvp-lr1e-3": [*MEMVP, "train.lr=1e-3"],
    "memvp-lr1e-2": [*MEMVP, "train.lr=1e-2"],
    "memvp-constant-lr": [*MEMVP, "train.min_lr_ratio=1.0"],
    "memvp-batch16": [*MEMVP, "train.batch_size=16"],
    "memvp-layer-last": [*MEMVP, "model.vision_layer=-1"],
    "memvp-width-512": [*MEMVP, "model.bridge_options.hidden=512"],
    "memvp-lam0.001": [*MEMVP, "model.bridge_options.lam=0.001"],
    "memvp-lam0.1": [*MEMVP, "model.bridge_options.lam=0.1"],
    "memvp-scale0.01": [*MEMVP, "model.bridge_options.scale=0.01"],
    "memvp-scale1": [*MEMVP, "model.bridge_options.scale=1.0"],
    "memvp-short-instruction": [*MEMVP, SHORT_ANSWER],
}
DEFAULT_ARMS = "llava,llava-lr3e-3,memvp,memvp-lr1e-2"
QUICK_ARMS = "llava,memvp"
TASK = "short"


# --- arms -----------------------------------------------------------------------------------------------------------
def parse_arm(text: str, arms: dict[str, list[str]]) -> tuple[str, list[str]]:
    """``NAME=ITEM,ITEM,...`` -> (name, overrides). An item is ``KEY=VALUE`` or, first, the name of an arm to start
    from; a comma splits only before ``KEY=``, so YAML values keep theirs
    (``mine=memvp,model.bridge_options={lam: 0.1, scale: 1.0}``)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--arm expects NAME=KEY=VALUE,KEY=VALUE or NAME=ARM,KEY=VALUE; got {text!r}")
    overrides = []
    for i, item in enumerate(re.split(r",(?=\s*[A-Za-z_][\w.]*=)", rest)):
        item = item.strip()
        if "=" in item:
            overrides.append(item)
        elif i == 0 and item in arms:
            overrides.extend(arms[item])
        else:
            raise SystemExit(f"--arm {name}: {item!r} is neither KEY=VALUE nor, first, an arm's name; "
                             f"arms: {list(arms)}")
    return name, overrides


def recipe_settings(overrides: list[str], args, data: Path, run: Path) -> list[str]:
    """The arm's recipe: the common settings, the Shapes data, the curve's evaluation, the arm, then ``--set``."""
    return [
        *bridge_accuracy.COMMON_SETTINGS, *bridge_accuracy.data_settings(TASK, data),
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.seed={args.seed}",
        f"train.threads={args.threads}", f"train.eval_every={args.eval_every}",
        f"train.eval_samples={args.eval_samples}", "train.save_every=0", f"train.output_dir={run}",
        f"eval.max_new_tokens={bridge_accuracy.MAX_NEW_TOKENS[TASK]}", *overrides, *args.overrides,
    ]


def check_arm(name: str, overrides: list[str], args) -> None:
    """Every key and bridge option of the arm checked before any training: a typo must not cost a run."""
    from vlbridge.bridges.registry import resolve_spec
    from vlbridge.errors import ConfigError
    from vlbridge.recipe import load_recipe

    try:
        resolve_spec(load_recipe(None, recipe_settings(overrides, args, Path("data"), Path("run"))).model)
    except ConfigError as error:
        raise SystemExit(f"arm {name}: {error}") from None


def signature(name: str, overrides: list[str], args) -> dict:
    """What makes two results of one arm comparable; a stored result with another one is not reused."""
    return {"arm": name, "scenes": args.scenes, "data_seed": args.data_seed, "image_size": args.image_size,
            "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every,
            "eval_samples": args.eval_samples,
            "settings": [*bridge_accuracy.COMMON_SETTINGS, *overrides, *args.overrides]}


# --- one arm --------------------------------------------------------------------------------------------------------
# the trainer reports filling the feature table only as this line (vlbridge.train.report.precompute_message)
ENCODING_LINE = re.compile(r"(?:loaded (?P<loaded>\d+) cached features)?(?: and )?"
                           r"(?:encoded (?P<encoded>\d+) images once)? in (?P<seconds>[\d.]+) s")


class TrainerLog:
    """The trainer's ``log``: prints every message and keeps what the feature encoding took."""

    def __init__(self):
        self.encoding = {"seconds": 0.0, "encoded": 0, "loaded": 0}

    def __call__(self, message: str, *args, **kwargs) -> None:
        print(message, *args, **kwargs)
        found = ENCODING_LINE.match(str(message))
        if found:
            self.encoding = {"seconds": float(found["seconds"]), "encoded": int(found["encoded"] or 0),
                             "loaded": int(found["loaded"] or 0)}


def read_curve(metrics: Path, encoding_seconds: float, samples_per_step: int, train_size: int) -> list[dict]:
    """The curve points of a run's ``metrics.jsonl``: one per evaluation, with its step, epoch, the seconds of the
    steps so far (and with the encoding), overall exact match and exact match per question and answer type."""
    points, train_seconds = [], 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        train_seconds += record.get("step_seconds", 0.0)  # a step's line comes before its evaluation's
        if "val_exact_match" not in record:
            continue
        types = record.get("val_by_type", {}).get(TASK, {})
        points.append({
            "step": record["step"], "epoch": record["step"] * samples_per_step / train_size,
            "train_seconds": train_seconds, "wall_seconds": encoding_seconds + train_seconds,
            "overall": record["val_exact_match"],
            "by_question_type": {t: row["exact_match"] for t, row in types.get("question_type", {}).items()},
            "by_answer_type": {t: row["exact_match"] for t, row in types.get("answer_type", {}).items()},
            "type_counts": {t: row["count"] for t, row in types.get("question_type", {}).items()},
        })
    return points


def run_arm(name: str, overrides: list[str], args, data: Path, command: str) -> dict:
    from vlbridge.recipe import load_recipe
    from vlbridge.train.trainer import train

    run = args.out / "runs" / name
    recipe = load_recipe(None, recipe_settings(overrides, args, data, run))
    train_size = len(bridge_accuracy.task_samples(TASK, data, "train"))
    samples_per_step = recipe.train.batch_size * recipe.train.grad_accum
    log = TrainerLog()
    started = time.perf_counter()
    result = train(recipe, overwrite=True, log=log)  # a rerun replaces the benchmark's run
    curve = read_curve(run / "metrics.jsonl", log.encoding["seconds"], samples_per_step, train_size)
    row = {
        "arm": name, "signature": signature(name, overrides, args), "command": command, "run": str(run),
        "overrides": overrides, "bridge": recipe.model.bridge, "bridge_options": recipe.model.bridge_options,
        "lr": recipe.train.lr, "batch_size": recipe.train.batch_size, "steps": recipe.train.steps,
        "train_questions": train_size, "epochs": recipe.train.steps * samples_per_step / train_size,
        "trainable_parameters": result["report"]["parameters_trainable"], "encoding": log.encoding,
        "train_seconds": sum(h["step_seconds"] for h in result["history"]),
        "final_loss": result["history"][-1]["loss"], "loss_curve": [h["loss"] for h in result["history"]],
        "curve": curve, "run_seconds": time.perf_counter() - started,  # with building and evaluations
    }
    del result
    gc.collect()
    return row


def stored_results(arms: dict[str, list[str]], args) -> set[str]:
    """The arms already stored with this invocation's settings; one stored with others stops the script."""
    done = set()
    for name, overrides in arms.items():
        path = args.out / "results" / f"{name}.json"
        if path.is_file() and not args.force:
            stored = json.loads(path.read_text()).get("signature")
            if stored != signature(name, overrides, args):
                raise SystemExit(f"{path} was made with other settings ({stored}); "
                                 "pass --force to redo it or choose another --out")
            done.add(name)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, runs, results, JSON, table, PNG")
    parser.add_argument("--arms", help=f"comma-separated arms (default {DEFAULT_ARMS}; --quick: {QUICK_ARMS}); "
                                       f"valid: {list(ARMS)}")
    parser.add_argument("--arm", dest="extra_arms", action="append", default=[], metavar="NAME=ITEM,ITEM",
                        help="add an arm: recipe overrides KEY=VALUE, optionally after an arm's name to start from, "
                             "e.g. --arm 'mine=memvp,train.lr=5e-3' (repeatable; run besides --arms)")
    parser.add_argument("--scenes", type=int, default=800, help="Shapes scenes (80 %% train, 10 %% val, 10 %% test)")
    parser.add_argument("--image-size", type=int, default=224,
                        help="size the Shapes scenes are drawn at (the encoder resizes to its own input size)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Shapes data")
    parser.add_argument("--seed", type=int, default=0, help="training seed (bridge init, data order, dropout)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every arm")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step (an arm may set its own)")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between the curve's evaluations")
    parser.add_argument("--eval-samples", type=int, default=320,
                        help="first N val questions of each evaluation (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every arm, after the arm's own (repeatable)")
    parser.add_argument("--force", action="store_true", help="train again the arms whose results already exist")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings to check the pipeline: 30 scenes, 4 steps of 4, evaluation every 2 steps "
                             "on 6 questions")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.steps, args.batch_size, args.eval_every, args.eval_samples = 30, 4, 4, 2, 6
    chosen = bridge_accuracy.pick(args.arms or (QUICK_ARMS if args.quick else DEFAULT_ARMS), ARMS, "arms")
    arms = {name: ARMS[name] for name in chosen} | dict(parse_arm(a, ARMS) for a in args.extra_arms)
    for name, overrides in arms.items():
        check_arm(name, overrides, args)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    from vlbridge.allocator import keep_freed_memory
    from vlbridge.data.llava_json import write_json_atomic
    from vlbridge.data.shapes_folder import shapes_folder

    keep_freed_memory()  # as the vlbridge command does
    args.out.mkdir(parents=True, exist_ok=True)
    done = stored_results(arms, args)  # checked before any run: never mix settings
    data = shapes_folder(args.out, args.scenes, args.data_seed, image_size=args.image_size)
    started = time.perf_counter()
    for i, (name, overrides) in enumerate(arms.items()):
        path = args.out / "results" / f"{name}.json"
        if name in done:
            print(f"[{i + 1}/{len(arms)}] {name}: done before ({path}), reused")
            continue
        print(f"\n[{i + 1}/{len(arms)}] {name}: train {args.steps} steps, evaluate every {args.eval_every}", flush=True)
        row = run_arm(name, overrides, args, data, command)
        write_json_atomic(row, path, indent=1)
        last = row["curve"][-1]
        print(f"  {name}: {last['overall']:.1f} % at step {last['step']} ({last['wall_seconds'] / 60:.1f} min of "
              f"encoding and steps); {path}", flush=True)
        write_outputs(args.out, command, settings, show=False)
    write_outputs(args.out, command, settings)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
