"""MemVP against the LLaVA-style bridge at equal steps, and MemVP's ablations, on Shapes (MemVP paper in miniature).

Every configuration trains from the same seed for the same number of steps at the same batch size, so all see the
same batches in the same order (``vlbridge.train.data_order``), between the packaged DINOv2-S/14 (frozen, features
cached) and the frozen SmolLM2-135M. Recipe settings are the demo's (``vlbridge_cli.demo``): a one-line system
prompt, 5 warm-up steps, lr 1e-3 for the LLaVA-style projector on the 2x2-pooled grid (64 visual tokens) and 3e-3
for MemVP (256 grid features, 320 memory slots) and all its ablations; ``--set KEY=VALUE`` overrides apply to all.

For each (configuration, task) it trains on ``train_{task}.json`` and scores the first ``--eval-samples`` questions
of ``test_{task}.json`` (short: exact match; mc: the parsed option letter) before and after training; the task
``sqa`` does the same with mc's questions in ScienceQA's layout (``data.format=scienceqa``, MemVP's QCM-A prompt,
target ``The answer is X.``: the path of ``recipes/memvp/scienceqa.yaml``, with the frozen encoder); the task
``mc-text`` asks mc's questions for the option's text (the export's ``{split}_mc-text.json``) and
scores the option the model finds most likely (``vlbridge.eval.choice_likelihood``): the frozen SmolLM2-135M does
not map answers to letters, even when told the answer (``benchmarks/mc_letter_probe.py``). It records
trainable parameters, analytic LM forward GFLOPs per sample (``vlbridge.cost.sample_flops``, one answer token, the
mean prompt length of the scored test questions: the same for every configuration), train wall time, seconds per
step and final loss. Each finished pair is written at once to OUT/results/<config>__<task>.json and skipped when the
script runs again (``--force`` redoes it), so a long run that is cut short continues where it stopped.

From whatever results exist it writes OUT/bridge_accuracy.json and OUT/bridge_accuracy.md (all runs; MemVP minus
LLaVA-style per task against the target "at most 1 point below"; the ablations beside the paper's Table 4 with the
direction of each change; the majority-answer baseline and the question-type prior: each test question answered
with its question type's most frequent training answer, what the question alone reaches without the image) and
OUT/accuracy_vs_flops.png (accuracy against LM GFLOPs
per sample, as the paper's Figure 4 right). Differences carry a paired standard error over the same questions.

Defaults: 800 scenes (640 train: 2,560 short / 1,280 mc training questions; 80 test: 320 short / 160 mc), 150 steps
of batch 8 (about one epoch of mc, half of short), all test questions (at most 320). Measured on this 2-core CPU with
nothing else running (two threads; single-thread CPU time is about twice): a step takes 1.5 s (MemVP, short) to
2.4 s (MemVP, mc) and 2.8 s (LLaVA 64 tokens, short) to 3.7 s (LLaVA, mc); scoring a question 0.12 s (MemVP) and
0.2 s (LLaVA); building the model ~10 s; encoding the 720 images once ~1.5 min (then cached on disk). Estimated:
``--suite main`` ~35 min; ``--suite ablations`` (mc-text) ~11 min a configuration at 300 steps (1.7-1.9 s/step,
scoring the 160 questions' options ~1 min before and after).
Other processes on the cores slow all of it several times (the quick ablations took 34 min under a load of 5).

    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --suite main
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --suite ablations
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --suite ablations --tasks short
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --suite scienceqa
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --suite grid --steps 300    # composed pairs
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --configs llava-256 --tasks mc
    python benchmarks/bridge_accuracy.py --out runs/bridge_accuracy --summary-only     # tables and plot again
    python benchmarks/bridge_accuracy.py --out /tmp/acc_quick --quick --suite main    # the pipeline in ~1 min
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import time
from pathlib import Path

from vlbridge.data.shapes_folder import shapes_folder
from vlbridge_cli.demo import COMMON_SETTINGS, DEMO_SETTINGS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_tables import OPTION_TEXT_TASKS, SCIENCEQA_TASKS, TASKS, write_summary  # noqa: E402 (a sibling script, not a package)

# name -> recipe overrides (the bridge, its options, its learning rate: the demo's per bridge)
LLAVA = ["model.bridge=llava", *DEMO_SETTINGS["llava"]]  # 2x2 pooling: 64 visual tokens, lr 1e-3
MEMVP = ["model.bridge=memvp", *DEMO_SETTINGS["memvp"]]  # 256 grid features, 320 slots, lr 3e-3
BLIP2 = ["model.bridge=blip2", "train.lr=1e-4"]  # BLIP-2's stage-2 peak lr (recipes/blip2/stage2.yaml)
CONFIGS: dict[str, list[str]] = {
    "llava": LLAVA,
    "llava-256": [*LLAVA, "model.bridge_options.pool=1"],  # all 256 grid tokens (~3x the cost of 64; in no suite)
    "memvp": MEMVP,
    # the paper's Table 4 ablations (MemVPOptions)
    "memvp-no-visual-prompts": [*MEMVP, "model.bridge_options.visual_prompts=false"],
    "memvp-global": [*MEMVP, "model.bridge_options.features=pooled"],
    "memvp-position-concat": [*MEMVP, "model.bridge_options.position=concat"],
    "memvp-keys-only": [*MEMVP, "model.bridge_options.keys_only=true"],
    "memvp-values-only": [*MEMVP, "model.bridge_options.values_only=true"],
    # not in the paper's table, in no suite
    "memvp-slots-256": [*MEMVP, "model.bridge_options.num_slots=256"],  # one slot per patch, no free memories
    "memvp-scale-1": [*MEMVP, "model.bridge_options.scale=1.0"],  # s = 1 instead of the released 0.1
    # composed pairs (suite "grid"): the Q-Former at BLIP-2's stage-2 lr (MiniLM init, 32 queries), the MLP
    # pairs at their preset's
    "blip2": BLIP2,
    "qformer-memory": [*BLIP2, "model.injection=memory_space"],  # 32 queries as memory slots (no paper has it)
    "mlp-xattn": [*LLAVA, "model.injection=cross_attention"],  # Flamingo's gated blocks over 64 vectors (ditto)
    "patch-input": ["model.bridge=null", "model.vision_encoder=none", "model.connector=patch",
                    "model.connector_options={image_size: 112}", "model.injection=input_space",
                    "train.lr=1e-3"],  # encoder-free: 16-px patches of a 112-px image, 49 tokens
}


SUITES = {
    "main": (["llava", "memvp"], ["short", "mc"]),
    "scienceqa": (["llava", "memvp"], ["sqa"]),
    "grid": (["llava", "memvp", "blip2", "qformer-memory", "mlp-xattn"], ["short"]),
    "ablations": (["memvp", "memvp-no-visual-prompts", "memvp-global", "memvp-position-concat", "memvp-keys-only",
                   "memvp-values-only"], ["mc-text"]),
}

# as the demo: short answers are 1-3 tokens, a letter 1; "The answer is B." 5 and the end of turn a sixth
MAX_NEW_TOKENS = {"short": 5, "mc": 5, "sqa": 8, "mc-text": 5}


def pick(names: str, valid: dict, what: str) -> list[str]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in valid]
    if unknown or not chosen:
        raise SystemExit(f"unknown or no {what} {unknown or chosen}; valid: {list(valid)}")
    return chosen


# --- one (configuration, task) ------------------------------------------------------------------
def shapes_data(out: Path, n: int, seed: int, scienceqa: bool = False) -> Path:
    """The Shapes export (LLaVA JSON, and ScienceQA's layout when ``scienceqa``), made once per (n, seed)."""
    return shapes_folder(out, n, seed, formats=("llava", "scienceqa") if scienceqa else ("llava",))


def data_settings(task: str, data: Path) -> list[str]:
    """The recipe's data section for ``task`` on the Shapes export ``data``."""
    if task in SCIENCEQA_TASKS:
        root = data / "scienceqa"
        return ["data.format=scienceqa", f"data.train={root}", f"data.val={root}"]
    return [f"data.train={data / f'train_{task}.json'}", f"data.val={data / f'val_{task}.json'}",
            f"data.image_root={data}"]


def task_samples(task: str, data: Path, split: str) -> list:
    """The samples of ``split`` (train | val | test) of ``task``, as the trainer reads them."""
    if task in SCIENCEQA_TASKS:
        from vlbridge.datasets.scienceqa import read_scienceqa

        return list(read_scienceqa(data / "scienceqa", split))
    from vlbridge.data.llava_json import read_llava_json

    return list(read_llava_json(data / f"{split}_{task}.json", image_root=data))


def measure_task(task: str, built, images, samples: list, settings) -> tuple[dict, float, list[float]]:
    """Scores (the task's metric in %, the predictions), seconds per question and each question's 0/1: greedy
    answers scored by ``score_sample``, or for the option-text tasks the most likely option."""
    from vlbridge.eval.scoring import score_sample
    from vlbridge_cli.demo import measure

    if task not in OPTION_TEXT_TASKS:
        scores, seconds = measure(built, images, samples, settings)
        return scores, seconds, [score_sample(s, p)[TASKS[task]] for s, p in zip(samples, scores["predictions"])]
    from vlbridge.eval.choice_likelihood import choose_by_likelihood
    from vlbridge.runs import prompt_collator

    collator = prompt_collator(built, images=images, with_answer=True)
    started = time.perf_counter()
    chosen = choose_by_likelihood(built.model, collator, samples)
    seconds = (time.perf_counter() - started) / max(len(samples), 1)
    correct = [float(c == s.meta["answer_index"]) for s, c in zip(samples, chosen)]
    scores = {TASKS[task]: 100 * sum(correct) / max(len(correct), 1), "count": len(samples),
              "predictions": [s.meta["choices"][c] for s, c in zip(samples, chosen)]}
    return scores, seconds, correct


def recipe_settings(config: str, task: str, args, data: Path, run: Path) -> list[str]:
    return [
        *COMMON_SETTINGS, *CONFIGS[config], *data_settings(task, data),
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.seed={args.seed}",
        f"train.threads={args.threads}", "train.eval_every=0", "train.save_every=0",
        "train.eval_samples=1",  # the trainer's own end-of-run check; the scores are measured here, before and after
        f"train.output_dir={run}", f"eval.max_new_tokens={MAX_NEW_TOKENS[task]}", *args.overrides,
    ]


def signature(config: str, task: str, args) -> dict:
    """What makes two results of one (config, task) comparable; a stored result with another one is not reused."""
    return {"config": config, "task": task, "scenes": args.scenes, "data_seed": args.data_seed, "seed": args.seed,
            "steps": args.steps, "batch_size": args.batch_size, "eval_samples": args.eval_samples,
            "settings": [*COMMON_SETTINGS, *CONFIGS[config], *args.overrides]}


def run_one(config: str, task: str, args, data: Path, command: str) -> dict:
    from vlbridge.cost import sample_flops
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.eval.scoring import majority_baseline, question_type_baseline
    from vlbridge.train.objectives import get_objective
    from vlbridge.recipe import load_recipe
    from vlbridge.runs import build_seeded, image_loader
    from vlbridge.train.trainer import train

    run = args.out / "runs" / f"{config}__{task}"
    recipe = load_recipe(None, recipe_settings(config, task, args, data, run))
    train_set, test_set = task_samples(task, data, "train"), task_samples(task, data, "test")
    test_set = test_set[: args.eval_samples] if args.eval_samples else test_set
    settings = GenerationSettings(recipe.eval.max_new_tokens, recipe.eval.batch_size, seed=args.seed)
    metric = TASKS[task]
    started = time.perf_counter()

    built = build_seeded(recipe)  # the bridge's initial weights from train.seed = --seed, for every configuration
    images = image_loader(built, recipe)
    _, prompts = get_objective("lm").collators(built, recipe, images)
    # the LM's text positions of a prompt (the image placeholder is not text): the same for every configuration
    encoded = [prompts.encode(s) for s in test_set]
    text_tokens = round(sum(len(e.input_ids) - e.has_image for e in encoded) / len(encoded))
    flops = sample_flops(built.model, text_tokens)
    before, _, _ = measure_task(task, built, images, test_set, settings)
    result = train(recipe, built=built, overwrite=True)  # a rerun replaces the benchmark's run
    images = image_loader(built, recipe)  # training stored the frozen encoder in its precision: features now in it
    after, seconds_per_sample, correct_after = measure_task(task, built, images, test_set, settings)
    history = result["history"]
    timed = history[1:] or history  # the first step includes one-time work
    tail = history[-max(1, len(history) // 10):]
    row = {
        "config": config, "task": task, "metric": metric, "signature": signature(config, task, args),
        "command": command, "run": str(run), "bridge": recipe.model.bridge,
        "bridge_options": recipe.model.bridge_options, "spec": built.spec.to_dict(), "lr": recipe.train.lr,
        "trainable_parameters": result["report"]["parameters_trainable"],
        "text_tokens": text_tokens, "sequence_length": flops["sequence_length"], "visual_tokens": flops["visual_tokens"],
        "lm_gflops_per_sample": flops["lm"] / 1e9, "connector_gflops_per_sample": flops["connector"] / 1e9,
        "text_only_lm_gflops_per_sample": flops["text_only_lm"] / 1e9,
        "train_wall_seconds": result["wall_seconds"],
        "train_seconds_per_step": sum(h["step_seconds"] for h in timed) / len(timed),
        "inference_seconds_per_sample": seconds_per_sample,
        "final_loss": history[-1]["loss"], "mean_loss_last_steps": sum(h["loss"] for h in tail) / len(tail),
        "loss_curve": [h["loss"] for h in history],
        "eval_samples": len(test_set), "accuracy_before": before[metric], "accuracy_after": after[metric],
        "scores_before": {k: v for k, v in before.items() if k != "predictions"},
        "scores_after": {k: v for k, v in after.items() if k != "predictions"},
        "majority_baseline": majority_baseline(train_set, test_set),
        "question_type_baseline": question_type_baseline(train_set, test_set),
        "question_ids": [s.id for s in test_set],
        "correct_after": correct_after,
        "examples": [{"question": s.turns[0].text.replace("<image>\n", ""), "answer": s.answer, "before": b,
                      "after": a} for s, b, a in list(zip(test_set, before["predictions"], after["predictions"]))[:6]],
        "wall_seconds": time.perf_counter() - started,
    }
    del result, built, images, prompts
    gc.collect()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, runs, results, JSON, table, PNG")
    parser.add_argument("--suite", choices=list(SUITES), default="main",
                        help="main: llava and memvp on short and mc; ablations: the MemVP ablations on mc-text; "
                             "scienceqa: llava and memvp on sqa (the mc questions in ScienceQA's layout, QCM-A)")
    parser.add_argument("--configs",
                        help=f"comma-separated configurations instead of the suite's; valid: {list(CONFIGS)}")
    parser.add_argument("--tasks", help=f"comma-separated tasks instead of the suite's; valid: {list(TASKS)}")
    parser.add_argument("--scenes", type=int, default=800, help="Shapes scenes (80 %% train, 10 %% val, 10 %% test)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Shapes data")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (bridge init, data order, dropout) of all runs")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps, the same for every configuration")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step")
    parser.add_argument("--eval-samples", type=int, default=320,
                        help="first N test questions scored before and after training (0 = all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every configuration, e.g. --set train.lr=5e-4 (repeatable)")
    parser.add_argument("--force", action="store_true", help="run again the pairs whose results already exist")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild the tables and plot from OUT/results")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings to check the pipeline (30 scenes, 2 steps of 4, 6 questions)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenes, args.steps, args.batch_size, args.eval_samples = 30, 2, 4, 6
    configs = pick(args.configs, CONFIGS, "configurations") if args.configs else SUITES[args.suite][0]
    tasks = pick(args.tasks, TASKS, "tasks") if args.tasks else SUITES[args.suite][1]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        write_summary(args.out, command, settings)
        return 0

    from vlbridge.allocator import keep_freed_memory
    from vlbridge.data.llava_json import write_json_atomic

    keep_freed_memory()  # as the vlbridge command does
    started = time.perf_counter()
    data = shapes_data(args.out, args.scenes, args.data_seed, scienceqa=bool(SCIENCEQA_TASKS & set(tasks)))
    todo = [(c, t) for t in tasks for c in configs]  # task by task: each task's comparison completes early
    done = set()
    for config, task in todo if not args.force else []:  # checked before any run: never mix settings
        path = args.out / "results" / f"{config}__{task}.json"
        if path.is_file():
            stored = json.loads(path.read_text()).get("signature")
            if stored != signature(config, task, args):
                raise SystemExit(f"{path} was made with other settings ({stored}); "
                                 "pass --force to redo it or choose another --out")
            done.add((config, task))
    for i, (config, task) in enumerate(todo):
        path = args.out / "results" / f"{config}__{task}.json"
        if (config, task) in done:
            print(f"[{i + 1}/{len(todo)}] {config} on {task}: done before ({path}), skipped")
            continue
        print(f"\n[{i + 1}/{len(todo)}] {config} on {task}: build, score untrained, train {args.steps} steps, score",
              flush=True)
        row = run_one(config, task, args, data, command)
        write_json_atomic(row, path, indent=1)
        print(f"  {config} on {task}: {row['accuracy_before']:.1f} % -> {row['accuracy_after']:.1f} % "
              f"({row['train_seconds_per_step']:.2f} s/step, {row['wall_seconds'] / 60:.1f} min); {path}", flush=True)
        write_summary(args.out, command, settings, show=False)
    write_summary(args.out, command, settings)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
