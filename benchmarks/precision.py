"""What bf16 buys: the frozen LM stored and run in bf16 against fp32, side by side in one run.

Measured, for each of text-only, LLaVA-style (n visual tokens spliced in) and MemVP (n features as memory slots),
at n = 256 and L = 64 (batch 8, the last 4 text tokens supervised), fp32 and bf16 interleaved repeat by repeat:

- the ceiling: GFLOP/s of the LM's own matrix products (q, k, v, o, gate, up, down at the configuration's token
  count, and the LM head at the supervised rows) as ``nn.Linear`` runs them, fp32 and bf16 (``kernels``);
- the attention kernel's backward in bf16 against fp32 on bf16 copies, by sequence length: why
  ``vlbridge.cpu_bf16_attention`` runs it in fp32 below 192 positions (``kernels``);
- train-step time (forward + backward, the bridge trainable; text-only back-propagates to its input embeddings),
  bf16 as the trainer runs it (frozen weights stored in bf16, the trained parts' products autocast, the bf16
  training attention); one-token latency and generation tokens/s as a loaded run generates (plain ``sdpa``); the
  ratio fp32 / bf16 of the minima and the median of the ratios of steps run side by side;
- achieved GFLOP/s: the step's FLOPs (``torch.utils.flop_counter``, which has no formula for the CPU attention
  kernel: in effect the step's matrix products) over the step's time, and over the products' own time in a profiled
  step (the LM's products alone), each as a fraction of the bf16 ceiling;
- peak memory of a step and of generation (a subprocess, as ``bridge_costs.py``) and the frozen weights' bytes;
- ``--accuracy``: MemVP and the LLaVA-style bridge trained on Shapes short answers for the same steps in fp32 and in
  bf16 (``bridge_accuracy.py``'s configurations and scoring), exact match with the paired standard error of the
  difference over the same questions (and seeds: ``--seeds N`` trains each arm with N seeds; with 320 questions one
  seed's standard error is about 2-3 points, more than the 1-point target).

Visual features are random (cost does not depend on them) and the vision encoder is left out (its features are
cached in training). Targets: bf16 train step >= 2x faster than fp32 for LLaVA-style and MemVP; the LM's products
>= half the bf16 ceiling; accuracy within 1 point. Times on a shared machine are unreliable: run it on a quiet one,
with ``--threads`` the cores.

    python benchmarks/precision.py --out precision.json                                 # the cost part (SmolLM2-135M)
    python benchmarks/precision.py --out precision.json --accuracy runs/precision_accuracy  # and the accuracy part
    python benchmarks/precision.py --quick --lm random                                  # n=8, L=16, SmolLM2's shape
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vlbridge.allocator import keep_freed_memory
from vlbridge.cpu_bf16_attention import NAME as BF16_ATTENTION
from vlbridge.flops import LMShape
from vlbridge.precision import bf16_support, contiguous_head_input, resolve, store_frozen

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bridge_costs  # noqa: E402 (sibling scripts, not a package)
from precision_tables import PRECISIONS, print_report, summarise  # noqa: E402

MATMULS = ("mm", "bmm", "addmm", "baddbmm")  # the products the profiler and the flop counter both name
BRIDGES = ("text", "llava", "memvp")


# --- the ceiling --------------------------------------------------------------------------------------------------
def lm_products(shape: LMShape, tokens: int, supervised: int) -> list[tuple[str, int, int, int, int]]:
    """(name, rows, in, out, count) of the LM's matrix products in one forward pass over ``tokens`` positions."""
    h = shape.head_dim
    products = [("q", tokens, shape.width, shape.heads * h, 1), ("k+v", tokens, shape.width, shape.kv_heads * h, 2),
                ("o", tokens, shape.heads * h, shape.width, 1)]
    d, D = shape.width, shape.ffn_width
    if shape.gated:
        products += [("gate+up", tokens, d, D, 2), ("down", tokens, D, d, 1)]
    else:
        products += [("ffn in", tokens, d, D, 1), ("ffn out", tokens, D, d, 1)]
    return [(f"{name} x{shape.layers}", m, k, n, count * shape.layers) for name, m, k, n, count in products] + \
        [("lm head", supervised, shape.width, shape.vocab, 1)]


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: first-use allocations, the kernel's own set-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_ceiling(shape: LMShape, tokens: int, supervised: int, repeats: int) -> dict:
    """GFLOP/s of each product of :func:`lm_products` in fp32 and bf16 (``F.linear``, weights (out, in) as
    ``nn.Linear`` keeps them), interleaved, and of them all weighted by their FLOPs."""
    rows, totals = [], {p: [0.0, 0.0] for p in PRECISIONS}  # precision -> [flops, seconds]
    g = torch.Generator().manual_seed(0)
    for name, m, k, n, count in lm_products(shape, tokens, supervised):
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) / k ** 0.5
        flops = 2 * m * k * n
        row = {"product": name, "rows": m, "in": k, "out": n}
        for precision in PRECISIONS:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            xp, wp = x.to(dtype), w.to(dtype)
            seconds = best_time(lambda: F.linear(xp, wp), repeats)
            row[f"{precision}_gflops"] = flops / seconds / 1e9
            totals[precision][0] += flops * count
            totals[precision][1] += seconds * count
        rows.append(row)
    return {"tokens": tokens, "products": rows,
            **{f"{p}_gflops": totals[p][0] / totals[p][1] / 1e9 for p in PRECISIONS}}


def attention_backward(shape: LMShape, batch: int, lengths: list[int], repeats: int) -> list[dict]:
    """ms of the CPU flash kernel's backward on bf16 tensors, against its fp32 backward on fp32 copies (casts
    included), at the LM's heads, causal with an additive mask, per sequence length."""
    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    rows = []
    for T in lengths:
        g = torch.Generator().manual_seed(T)
        q = torch.randn(batch, shape.heads, T, shape.head_dim, generator=g).bfloat16()
        k, v = (torch.randn(batch, shape.kv_heads, T, shape.head_dim, generator=g).bfloat16() for _ in range(2))
        mask = torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        mask = mask[None, None].expand(batch, 1, T, T).bfloat16()
        out, lse = forward(q, k, v, 0.0, False, attn_mask=mask)
        grad = torch.randn(out.shape, generator=g).bfloat16()
        in_bf16 = best_time(lambda: backward(grad, q, k, v, out, lse, 0.0, False, attn_mask=mask), repeats)

        def in_fp32():
            results = backward(*(t.float() for t in (grad, q, k, v, out)), lse, 0.0, False, attn_mask=mask.float())
            return [r.bfloat16() for r in results]

        rows.append({"sequence": T, "bf16_ms": 1e3 * in_bf16, "fp32_with_casts_ms": 1e3 * best_time(in_fp32, repeats)})
    return rows


# --- the models -------------------------------------------------------------------------------------------------------
def language_models(source: str) -> dict:
    """The LM as loaded (fp32) and a copy stored in bf16, by precision."""
    lm = bridge_costs.load_lm(source)
    other = copy.deepcopy(lm)
    other.model.to(torch.bfloat16)  # the whole LM is frozen: what vlbridge.precision.store_frozen leaves
    contiguous_head_input(other.model)  # as Precision.apply does
    return {"fp32": lm, "bf16": other}


def build(kind: str, precision: str, lms: dict, args):
    model = bridge_costs.build(kind, lms[precision], args.vision_dim, args.slots)
    if precision == "bf16":
        store_frozen(model, torch.bfloat16)
    return model


def attention_for(model, precision: str, training: bool) -> None:
    """As the trainer trains a bf16 LM (``vlbridge.cpu_bf16_attention``) and as a loaded run generates (``sdpa``)."""
    if precision == "bf16":
        model.language_model.model.set_attn_implementation(BF16_ATTENTION if training else "sdpa")


def train_step(model, batch, kind: str, precision: str) -> None:
    """bridge_costs' step, under the autocast the trainer uses (train.precision auto follows model.precision)."""
    attention_for(model, precision, training=True)
    model.train()
    with resolve(precision, "auto", "cpu").autocast("cpu"):
        bridge_costs.train_step(model, batch, kind)


def generate(model, batch, precision: str, tokens: int):
    attention_for(model, precision, training=False)
    model.eval()
    with torch.no_grad():
        return model.generate(batch, max_new_tokens=tokens, pad_token_id=0)


def step_flops(model, batch, kind: str) -> tuple[int, int]:
    """(all FLOPs, the matrix products' FLOPs) of one fp32 training step, by torch's flop counter (it counts no
    FLOPs for the CPU flash-attention kernel)."""
    with FlopCounterMode(display=False) as counter:
        train_step(model, batch, kind, "fp32")
    counts = counter.get_flop_counts().get("Global", {})
    products = sum(v for op, v in counts.items() if str(op).split(".")[-1] in MATMULS)
    return counter.get_total_flops(), products


def products_seconds(model, batch, kind: str, precision: str) -> float:
    """Seconds the matrix products take in one profiled training step (their own time, not their callers')."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        train_step(model, batch, kind, precision)
    return sum(e.self_cpu_time_total for e in profiled.key_averages() if e.key in {f"aten::{m}" for m in MATMULS}) / 1e6


def frozen_bytes(lm) -> int:
    return sum(p.numel() * p.element_size() for p in lm.parameters())


# --- peak memory (a subprocess) --------------------------------------------------------------------------------------
def memory_probe(args) -> None:
    """Runs in the subprocess: one JSON line per (bridge, precision), as bridge_costs' probe."""
    torch.set_num_threads(args.threads)
    lms = language_models(args.lm)
    vocab = lms["fp32"].config.vocab_size
    n, L = args.visual, args.text
    for kind in args.bridges:
        for precision in PRECISIONS:
            model = build(kind, precision, lms, args)
            train, prompt = (bridge_costs.make_batch(kind, args.batch, L, n, args.vision_dim, args.answer, vocab,
                                                     prompt_only=only) for only in (False, True))
            train_step(model, train, kind, precision)  # first-use allocations
            generate(model, prompt, precision, 2)
            row = {"bridge": kind, "precision": precision,
                   "train_mb": bridge_costs.peak_above_current_mb(lambda: train_step(model, train, kind, precision)),
                   "generate_mb": bridge_costs.peak_above_current_mb(
                       lambda: generate(model, prompt, precision, args.new_tokens))}
            bridge_costs.release(model)
            print(json.dumps(row), flush=True)


def measure_memory(args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    done = subprocess.run([sys.executable, __file__, "--memory-probe", *args.argv], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {(r["bridge"], r["precision"]): r for r in rows}


# --- the cost part -------------------------------------------------------------------------------------------------
def run_costs(args) -> dict:
    torch.set_num_threads(args.threads)
    lms = language_models(args.lm)
    shape = LMShape.of(lms["fp32"])
    n, L, B = args.visual, args.text, args.batch
    vocab = shape.vocab
    supervised = B * args.answer
    ceilings = {kind: matmul_ceiling(shape, B * (L + (n if kind == "llava" else 0)), supervised, args.repeats)
                for kind in args.bridges}
    attention = attention_backward(shape, B, args.attention_lengths, args.repeats) if args.attention_lengths else []
    items = [(kind, precision) for kind in args.bridges for precision in PRECISIONS]
    models = {item: build(*item, lms, args) for item in items}
    batches = {kind: (bridge_costs.make_batch(kind, B, L, n, args.vision_dim, args.answer, vocab),
                      bridge_costs.make_batch(kind, B, L, n, args.vision_dim, args.answer, vocab, prompt_only=True))
               for kind in args.bridges}
    rows = {}
    for kind, precision in items:
        model, (train, prompt) = models[(kind, precision)], batches[kind]
        train_step(model, train, kind, precision)  # warm-up
        generate(model, prompt, precision, 2)
        rows[(kind, precision)] = {"bridge": kind, "precision": precision, "n": 0 if kind == "text" else n, "L": L,
                                   "steps": [], "latencies": [], "generations": []}
    for kind in args.bridges:
        flops, products = step_flops(models[(kind, "fp32")], batches[kind][0], kind)
        for precision in PRECISIONS:
            rows[(kind, precision)].update(step_flops=flops, product_flops=products,
                                           product_seconds=products_seconds(models[(kind, precision)],
                                                                            batches[kind][0], kind, precision))
    for repeat in range(args.repeats):  # interleaved, in turns, so that load on the machine hits all alike
        turn = repeat % len(items)
        for kind, precision in items[turn:] + items[:turn]:
            model, (train, prompt) = models[(kind, precision)], batches[kind]
            row = rows[(kind, precision)]
            row["steps"].append(bridge_costs.timed(lambda: train_step(model, train, kind, precision)))
            row["latencies"].append(bridge_costs.timed(lambda: generate(model, prompt, precision, 1)))
            row["generations"].append(bridge_costs.timed(lambda: generate(model, prompt, precision, args.new_tokens)))
    results = []
    for (kind, precision), row in rows.items():
        step, generation = min(row["steps"]), min(row["generations"])
        ceiling = ceilings[kind]["bf16_gflops"]
        row.update({
            "train_step_s": step, "train_step_s_median": statistics.median(row["steps"]),
            "latency_s": min(row["latencies"]), "generate_s": generation,
            "tokens_per_s": B * args.new_tokens / generation,
            "step_gflops": row["step_flops"] / step / 1e9,
            "products_gflops": row["product_flops"] / row["product_seconds"] / 1e9,
            "frozen_weight_bytes": frozen_bytes(lms[precision]),
        })
        row["step_share_of_bf16_ceiling"] = row["step_gflops"] / ceiling
        row["products_share_of_bf16_ceiling"] = row["products_gflops"] / ceiling
        results.append(row)
    for model in models.values():
        bridge_costs.release(model)
    if not args.no_memory:
        memory = measure_memory(args)
        for row in results:
            probe = memory[(row["bridge"], row["precision"])]
            row["peak_train_mb"], row["peak_generate_mb"] = probe["train_mb"], probe["generate_mb"]
    return {"lm_shape": shape.__dict__, "ceilings": ceilings, "attention_backward": attention, "results": results}


# --- the accuracy part --------------------------------------------------------------------------------------------
def accuracy_arm(config: str, precision: str, args, data: Path) -> dict:
    """``config`` of bridge_accuracy.py trained on Shapes short answers in ``precision``, scored on the test split."""
    import bridge_accuracy

    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.recipe import load_recipe
    from vlbridge.runs import build_seeded, image_loader
    from vlbridge.train.trainer import train

    run = args.accuracy / "runs" / f"{config}__{precision}"
    settings = bridge_accuracy.recipe_settings(config, "short", args, data, run)
    recipe = load_recipe(None, [*settings, f"model.precision={precision}", f"train.precision={precision}"])
    test_set = bridge_accuracy.task_samples("short", data, "test")
    test_set = test_set[: args.eval_samples] if args.eval_samples else test_set
    built = build_seeded(recipe)  # the same bridge initialisation, data order and dropout in both precisions
    result = train(recipe, built=built, overwrite=True)
    images = image_loader(built, recipe)  # after training: the encoder is stored in the run's precision
    scores, seconds, correct = bridge_accuracy.measure_task(
        "short", built, images, test_set, GenerationSettings(recipe.eval.max_new_tokens, recipe.eval.batch_size,
                                                             seed=args.seed))
    history = result["history"]
    timed = history[1:] or history
    return {"config": config, "precision": precision, "task": "short", "metric": "exact_match",
            "settings": settings,
            "recorded_precision": result["report"]["precision"],
            "accuracy_after": scores["exact_match"], "question_ids": [s.id for s in test_set],
            "correct_after": correct, "final_loss": history[-1]["loss"], "loss_curve": [h["loss"] for h in history],
            "train_seconds_per_step": sum(h["step_seconds"] for h in timed) / len(timed),
            "inference_seconds_per_sample": seconds}


def run_accuracy(args) -> list[dict]:
    """Every (configuration, precision, seed) arm, each stored as it finishes and reused by a later call."""
    from vlbridge.data.llava_json import write_json_atomic
    from vlbridge.data.shapes_folder import DEFAULT_IMAGE_SIZE, shapes_folder

    data = shapes_folder(args.accuracy, args.scenes, args.data_seed, image_size=args.image_size or DEFAULT_IMAGE_SIZE)
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        arm_args = argparse.Namespace(**{**vars(args), "seed": seed})
        for config in ("llava", "memvp"):
            for precision in PRECISIONS:
                path = args.accuracy / "results" / f"{config}__{precision}__seed{seed}.json"
                if path.is_file() and not args.force:
                    print(f"{config} in {precision}, seed {seed}: done before ({path}), reused", flush=True)
                    rows.append(json.loads(path.read_text()))
                    continue
                print(f"{config} in {precision}, seed {seed}: train {args.steps} steps, score", flush=True)
                row = accuracy_arm(config, precision, arm_args, data) | {"seed": seed}
                write_json_atomic(row, path, indent=1)
                rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m", help="registry name, a local Hugging Face causal-LM folder, or "
                        f"random weights in a SmolLM2 shape: {', '.join(bridge_costs.RANDOM_SHAPES)}")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--visual", type=int, default=256, help="visual tokens n")
    parser.add_argument("--text", type=int, default=64, help="text tokens L")
    parser.add_argument("--answer", type=int, default=4, help="supervised (answer) tokens at the end of the text")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the tokens/s measure")
    parser.add_argument("--slots", type=int, default=320, help="MemVP memory slots M (preset default 320)")
    parser.add_argument("--vision-dim", type=int, default=384, help="vision feature width d_v (DINOv2-S: 384)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measure (minimum reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--bridges", nargs="+", choices=BRIDGES, default=list(BRIDGES), help="the bridges to measure")
    parser.add_argument("--attention-lengths", type=int, nargs="*", default=[64, 128, 192, 256, 320],
                        help="sequence lengths of the attention-backward comparison (none: skip it)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--no-costs", action="store_true", help="only the accuracy part")
    parser.add_argument("--quick", action="store_true",
                        help="a small configuration to check the pipeline: n=8, L=16, batch 2, 2 repeats, 3 new "
                             "tokens; with --accuracy: 30 scenes, 2 steps of 4, 6 questions")
    parser.add_argument("--out", help="write the results as JSON here")
    # the accuracy part
    parser.add_argument("--accuracy", type=Path, help="folder for the accuracy part's data, runs and results")
    parser.add_argument("--scenes", type=int, default=800, help="Shapes scenes (80 %% train, 10 %% val, 10 %% test)")
    parser.add_argument("--image-size", type=int, help="Shapes image size (default: the export's)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Shapes data")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every arm (the first, with --seeds)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds per arm (--seed, --seed + 1, ...): the differences pool them, question by question")
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of every arm")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per step of the accuracy arms")
    parser.add_argument("--eval-samples", type=int, default=320, help="first N test questions scored (0 = all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every accuracy arm (repeatable)")
    parser.add_argument("--force", action="store_true", help="train again the accuracy arms that have results")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.bridges = [k for k in BRIDGES if k in args.bridges]
    if args.quick:
        args.visual, args.text, args.batch, args.answer, args.repeats, args.new_tokens = 8, 16, 2, 2, 2, 3
        args.attention_lengths = [16, 32] if args.attention_lengths else []
        args.scenes, args.steps, args.batch_size, args.eval_samples = 30, 2, 4, 6
    if args.memory_probe:
        memory_probe(args)
        return 0
    keep_freed_memory()  # as the vlbridge command does; the memory probe sets its own thresholds
    started = time.perf_counter()
    support = bf16_support("cpu")
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in ("memory_probe", "argv")},
              "machine": {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor(),
                          "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bf16_fast": support.fast,
                          "bf16_why": support.why}}
    if not args.no_costs:
        report |= run_costs(args)
    if args.accuracy is not None:
        report["accuracy"] = run_accuracy(args)
    report["summary"] = summarise(report)
    report["seconds"] = time.perf_counter() - started
    print_report(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
