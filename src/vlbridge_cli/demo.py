"""vlbridge demo: Shapes data -> train bridges between DINOv2-S and SmolLM2 -> evaluate -> compare."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from vlbridge.errors import ConfigError

HELP = ("The main demo: build Shapes data, train bridges between the packaged DINOv2-S and SmolLM2-135M, "
        "compare accuracy and cost side by side, then answer questions about real photos.")

# scikit-image ships these photos inside its package (no download)
PHOTO_QUESTIONS = [
    ("chelsea", "What animal is this?"),
    ("astronaut", "What is the person wearing?"),
    ("coffee", "What color is the cup?"),
]


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="folder for data, runs and summary.json (default: out/demo)")
    parser.add_argument("--bridges", default="llava,memvp",
                        help="comma-separated bridge presets to train and compare (default: llava,memvp)")
    parser.add_argument("--scenes", type=int, default=400, help="Shapes scenes to generate, 80 %% for training")
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per bridge")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step")
    parser.add_argument("--eval-samples", type=int, default=100, help="test questions scored before and after")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of training")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every bridge, e.g. --set train.lr=5e-4 (repeatable)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="torch threads (default 0 = all cores). With another CPU-bound job on the machine, all "
                             "cores can make each step several times slower (a 1.2 s step took 8-27 s): give fewer "
                             "threads then, e.g. half the cores, or run the demo on a quiet machine")


# recipe settings of the demo (everything else: the recipe defaults). A one-line system prompt instead
# of SmolLM2's default keeps the prompt short (cost grows with every token on this CPU).
COMMON_SETTINGS = ["model.system_prompt=You are a helpful assistant.", "train.warmup_steps=5"]
DEMO_SETTINGS = {
    "llava": ["model.bridge_options={pool: 2}", "train.lr=1e-3"],  # 2x2 pooling: 64 visual tokens
    "memvp": ["train.lr=3e-3"],  # 256 grid features as 320 memory slots; the sequence stays text-only
}


def recipe_for(bridge: str, args, data: Path, out: Path):
    from vlbridge.recipe import load_recipe

    return load_recipe(None, [
        f"model.bridge={bridge}", *COMMON_SETTINGS, *DEMO_SETTINGS.get(bridge, []),
        f"data.train={data / 'train_short.json'}", f"data.val={data / 'val_short.json'}", f"data.image_root={data}",
        f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", f"train.seed={args.seed}",
        "train.eval_every=0", f"train.eval_samples={args.eval_samples}", f"train.output_dir={out / bridge}",
        "eval.max_new_tokens=5", f"train.threads={args.threads}", *args.overrides,
    ])


def measure(built, loader, samples, settings):
    """Accuracy and seconds per sample of greedy answers."""
    from vlbridge.runs import prompt_collator
    from vlbridge.train.trainer import evaluate

    collator = prompt_collator(built, images=loader)
    started = time.perf_counter()
    scores = evaluate(built, collator, samples, settings)
    return scores, (time.perf_counter() - started) / max(len(samples), 1)


def table(rows: list[dict], majority: float) -> str:
    head = f"{'bridge':<8}{'trainable':>12}{'LM GFLOPs/sample':>18}{'train s/step':>14}{'infer s/sample':>16}" \
           f"{'acc before':>12}{'acc after':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['bridge']:<8}{r['trainable_parameters']:>12,}{r['lm_gflops_per_sample']:>18.2f}"
                     f"{r['train_seconds_per_step']:>14.2f}{r['inference_seconds_per_sample']:>16.3f}"
                     f"{r['accuracy_before']:>11.1f}%{r['accuracy_after']:>10.1f}%")
    lines.append(f"majority-answer baseline on the same questions: {majority:.1f}%")
    return "\n".join(lines)


def type_table(before: dict, after: dict) -> str:
    """Exact match per question and answer type before and after training (:mod:`vlbridge.eval.by_type`)."""
    from vlbridge.eval.by_type import format_table

    return format_table([("before", before, "exact_match"), ("after", after, "exact_match")])


def answer_photos(built, folder: Path, settings) -> list[dict]:
    import skimage.data
    from PIL import Image

    from vlbridge.data.sample import Sample, Turn
    from vlbridge.eval.generate_answers import generate_answers
    from vlbridge.runs import prompt_collator

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for name, question in PHOTO_QUESTIONS:
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        samples.append(Sample(name, (Turn("user", f"<image>\n{question}"),), image=path))
    collator = prompt_collator(built)
    answers = generate_answers(built.model, built.tokenizer, collator, samples, settings)
    return [{"photo": s.image.name, "question": q, "answer": a} for s, (_, q), a in zip(samples, PHOTO_QUESTIONS, answers)]


def run(args) -> int:
    from transformers.utils import logging as transformers_logging

    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes
    from vlbridge.eval.by_type import by_task
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.eval.scoring import majority_baseline
    from vlbridge.cost import sample_flops
    from vlbridge.runs import build_seeded, image_loader
    from vlbridge.train.trainer import train

    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = all cores), got {args.threads}")
    transformers_logging.disable_progress_bar()  # one bar per weight load would bury the demo's own output
    started = time.perf_counter()
    out = Path(args.out)
    data = out / "data"
    print(f"[1/4] generating Shapes data ({args.scenes} scenes) in {data}")
    export_shapes(generate_shapes(ShapesConfig(n=args.scenes, seed=args.seed)), data, ["llava"])
    train_set = list(read_llava_json(data / "train_short.json"))
    test_set = list(read_llava_json(data / "test_short.json"))[: args.eval_samples]
    majority = majority_baseline(train_set, test_set)
    settings = GenerationSettings(max_new_tokens=5, batch_size=16)

    rows, photos = [], {}
    bridges = [b.strip() for b in args.bridges.split(",") if b.strip()]
    for i, bridge in enumerate(bridges):
        recipe = recipe_for(bridge, args, data, out / "runs")
        print(f"\n[2/4] bridge '{bridge}' ({i + 1}/{len(bridges)}): build, score untrained, train {args.steps} steps, score")
        built = build_seeded(recipe)  # the same initial weights whatever ran before in the process
        loader = image_loader(built, recipe)
        before, _ = measure(built, loader, test_set, settings)
        result = train(recipe, built=built, overwrite=True)  # a rerun replaces the demo's own runs
        loader = image_loader(built, recipe)  # training stored the frozen encoder in its precision: its features now
        after, seconds_per_sample = measure(built, loader, test_set, settings)
        steps = result["history"][1:] or result["history"]  # the first step includes warm-up work
        text_tokens = round(sum(len(built.tokenizer.encode(s.turns[0].text)) for s in test_set) / len(test_set)) + 30
        rows.append({
            "bridge": bridge,
            "trainable_parameters": sum(v.numel() for v in built.model.trainable_state_dict().values()),
            "lm_gflops_per_sample": sample_flops(built.model, text_tokens)["total"] / 1e9,
            "train_seconds_per_step": sum(h["step_seconds"] for h in steps) / len(steps),
            "inference_seconds_per_sample": seconds_per_sample,
            "accuracy_before": before["exact_match"], "accuracy_after": after["exact_match"],
            # exact match per question and answer type, with counts and standard errors
            "by_type_before": by_task(test_set, before["predictions"]).get("short", {}),
            "by_type_after": by_task(test_set, after["predictions"]).get("short", {}),
            "final_loss": result["history"][-1]["loss"], "train_wall_seconds": result["wall_seconds"],
            "examples": [{"question": s.turns[0].text.replace("<image>\n", ""), "answer": s.answer, "prediction": p}
                         for s, p in list(zip(test_set, after["predictions"]))[:6]],
        })
        for example in rows[-1]["examples"]:
            print(f"   Q: {example['question']:<45} truth: {example['answer']:<12} answer: {example['prediction']}")
        photos[bridge] = answer_photos(built, out / "photos", settings)
        del built, loader

    print("\n[3/4] side by side (Shapes short-answer test questions)\n")
    print(table(rows, majority))
    for row in rows:
        print(f"\n{row['bridge']}: exact match by type (percent ± standard error; a few questions per type)")
        print(type_table(row["by_type_before"], row["by_type_after"]))
    if photos:
        print("\n[4/4] real photos from scikit-image, answered by each bridge (trained on Shapes only)")
        for index, (name, question) in enumerate(PHOTO_QUESTIONS):
            print(f"   {name + '.png':<14} Q: {question}")
            for bridge, answers in photos.items():
                print(f"   {'':<14} {bridge:>8}: {answers[index]['answer']}")
    wall = time.perf_counter() - started
    summary = {"rows": rows, "majority_baseline": majority, "photos": photos, "wall_seconds": wall,
               "settings": {k: v for k, v in vars(args).items() if k != "run"}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nDone in {wall / 60:.1f} min; summary in {out / 'summary.json'}")
    if rows:
        serve = ["vlbridge", "serve", *(a for r in rows for a in ("--run", str(out / "runs" / r["bridge"])))]
        print("\nAsk the trained runs about your own images in a browser, answers side by side (inside the "
              f"environment: source .venv/bin/activate):\n   {shlex.join(serve)}\n   then open http://127.0.0.1:7860")
    return 0
