"""What a bridge costs: text-only LM vs. LLaVA-style input space vs. MemVP memory space, on one LM.

For n visual tokens and L text tokens (batch B, the last ``--answer`` text tokens supervised) it measures,
side by side in one run:
- trainable parameters (the bridge; the LM is frozen);
- forward FLOPs per sample, analytic (``vlbridge.flops``) and measured (torch's flop counter, batch 1),
  plus measured forward+backward FLOPs of a training step;
- train-step time: forward + backward with only the bridge trainable. Text-only has no bridge: its step
  back-propagates to the input embeddings, the least any bridge below the first layer costs;
- latency of a one-token answer (prefill + one LM-head row), generation of ``--new-tokens`` tokens with
  the KV cache (tokens/s overall and for the decoding steps alone);
- peak memory: in a subprocess whose glibc mmap threshold is fixed (freed tensors go back to the OS, so
  resident memory follows live tensors), the peak resident set size above the resident size just before
  the step (Linux ``/proc/self/clear_refs`` resets the peak), for a training step and for generation.
Visual features are random (B, n, d_v): cost does not depend on their content; the frozen vision encoder
is left out (its features are cached in training). Times are the minimum over ``--repeats`` runs after a
warm-up, interleaved across bridges (in turns, so that no bridge always follows the same one) so machine
load hits them alike; median is recorded too, and the training step's minor page faults. Each (n, L) group
times the text-only LM again beside its bridges (one table row each), so that its ratios compare steps
timed in the same minutes: this machine has slow periods of seconds to minutes. Timing runs
keep freed memory for reuse, as the ``vlbridge`` command does (``vlbridge.allocator``); ``--default-malloc``
times with glibc's adaptive thresholds instead, under which the LLaVA-style step page-faults its large
activations back every step. When other processes share the cores, use ``--threads 1``: OpenMP threads
that wait for a busy core spin, and a 2-thread forward measured here went from 1.4 s to 8.5 s (1 thread:
1.5 s).

    python benchmarks/bridge_costs.py --out bridge_costs.json            # full grid, SmolLM2-135M
    python benchmarks/bridge_costs.py --quick --lm random                # n=256, L=64, random-init SmolLM2 shape
    python benchmarks/bridge_costs.py --quick --bridges text memvp --repeats 15 --no-memory   # MemVP / text step
    python benchmarks/bridge_costs.py --quick --bridges text memvp --lm random-360m         # ... on a wider LM
    python benchmarks/bridge_costs.py --plot-only --results bridge_costs.json --accuracy acc.json --plot acc.png
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from vlbridge.allocator import keep_freed_memory
from vlbridge.batch import Batch, ImageInputs
from vlbridge.bridges.registry import build_preset
from vlbridge.flops import (LMShape, count_flops, input_space_flops, memory_space_flops, projector_flops,
                            text_only_flops)
from vlbridge.models.language_model import LanguageModel, count_parameters
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID
from vlbridge.vlm import VisionLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_tables import BRIDGES, accuracy_points, plot_accuracy_vs_flops, print_report, summarise  # noqa: E402

# Random-weight models by name, for --lm: a random-init model costs what the pretrained one of the same shape
# costs. The SmolLM2 family's shapes (Hugging Face configs), so that MemVP's overhead can be measured at
# widths closer to the paper's (its +1 % per layer is for d = 4096; the overhead shrinks as d grows).
SMOLLM2 = dict(vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True)
RANDOM_SHAPES = {
    "random": dict(SMOLLM2, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,  # SmolLM2-135M
                   num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    "random-360m": dict(SMOLLM2, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                        num_attention_heads=15, num_key_value_heads=5, rope_theta=100000.0),
    "random-1.7b": dict(SMOLLM2, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                        num_attention_heads=32, num_key_value_heads=32, rope_theta=130000.0),
}


# --- the models ---------------------------------------------------------------------------------
def load_lm(source: str) -> LanguageModel:
    if source in RANDOM_SHAPES:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**RANDOM_SHAPES[source]))
    else:
        from vlbridge.weights import load_language_model

        try:
            model, _ = load_language_model(source)
        except Exception as error:  # the packaged weights may be missing: say how to go on
            sys.exit(f"cannot load the language model {source!r} ({error}).\n"
                     "Pass --lm PATH (a local Hugging Face causal-LM folder) or --lm random "
                     "(a random-init model with SmolLM2-135M's shape; costs are the same; "
                     f"other shapes: {', '.join(sorted(RANDOM_SHAPES))}).")
    model.generation_config.eos_token_id = None  # always generate exactly --new-tokens tokens
    return LanguageModel(model.eval())


def build(kind: str, lm: LanguageModel, vision_dim: int, slots: int) -> VisionLanguageModel:
    """text: the LM alone (a LLaVA model fed text-only batches never runs its bridge)."""
    name, options = ("memvp", {"num_slots": slots}) if kind == "memvp" else ("llava", {})
    return VisionLanguageModel(lm, build_preset(name, vision_dim, lm, options))


def release(model: VisionLanguageModel) -> None:
    detach = getattr(model.bridge.injection, "detach", None)
    if detach is not None:
        detach()  # take MemVP's hooks off the shared LM


def make_batch(kind: str, batch: int, text: int, num_visual: int, vision_dim: int, answer: int, vocab: int,
               prompt_only: bool = False) -> Batch:
    """``batch`` rows of ``text`` text tokens (random ids), the last ``answer`` supervised; image rows
    carry a placeholder after the first token and random grid features."""
    g = torch.Generator().manual_seed(text * 1000 + num_visual)
    ids = torch.randint(10, vocab, (batch, text), generator=g)
    image = kind != "text"
    if image:
        ids = torch.cat([ids[:, :1], torch.full((batch, 1), IMAGE_TOKEN_ID), ids[:, 1:]], 1)
    mask = torch.ones_like(ids)
    labels = None
    if not prompt_only:
        labels = torch.full_like(ids, IGNORE)
        labels[:, -answer:] = ids[:, -answer:]
    grid = torch.randn(batch, num_visual, vision_dim, generator=g) if image else None
    return Batch(ids, mask, labels, torch.full((batch,), image), ImageInputs(grid=grid),
                 padding_side="left" if prompt_only else "right")


def train_step(model: VisionLanguageModel, batch: Batch, kind: str) -> None:
    if kind == "text":  # nothing trains: back-propagate to the input embeddings instead
        lm = model.language_model
        embeds = lm.embed(batch.input_ids).detach().requires_grad_(True)
        out = lm(embeds, batch.attention_mask, batch.labels)
    else:
        out = model(batch)
    (out.loss_sum / out.num_tokens).backward()
    model.zero_grad(set_to_none=True)


def analytic_flops(kind: str, shape: LMShape, text: int, num_visual: int, answer: int, vision_dim: int,
                   slots: int) -> int:
    if kind == "text":
        return text_only_flops(shape, text, answer)
    if kind == "llava":
        return (input_space_flops(shape, text, num_visual, answer)
                + projector_flops(vision_dim, shape.width, num_visual, hidden=shape.width))
    return memory_space_flops(shape, text, slots, answer) + projector_flops(vision_dim, shape.width, num_visual, 128)


def timed(fn, cpu: list | None = None, faults: list | None = None) -> float:
    """Wall time of ``fn()``; its process CPU time (all threads) is appended to ``cpu`` when given
    (less sensitive than wall time to other processes competing for the cores), its minor page faults
    to ``faults``."""
    start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    if faults is not None:
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
    return elapsed


# --- memory (subprocess) ------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_above_current_mb(fn) -> float:
    """Peak resident memory while ``fn()`` runs, above the resident memory just before (MB)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = _status_kb("VmRSS")
    fn()
    return max(0, _status_kb("VmHWM") - before) / 1024


def memory_probe(args) -> None:
    """Runs in the subprocess: one JSON line per configuration."""
    torch.set_num_threads(args.threads)
    lm = load_lm(args.lm)
    vocab = lm.config.vocab_size
    print(json.dumps({"model_rss_mb": _status_kb("VmRSS") / 1024}), flush=True)
    warm = build("llava", lm, args.vision_dim, args.slots)  # first-use allocations (autograd, thread pools)
    train_step(warm, make_batch("llava", 2, 8, 4, args.vision_dim, args.answer, vocab), "llava")
    warm.eval()
    warm.generate(make_batch("llava", 2, 8, 4, args.vision_dim, args.answer, vocab, prompt_only=True),
                  max_new_tokens=2, pad_token_id=0)
    del warm
    for kind, n, L in configurations(args):
        model = build(kind, lm, args.vision_dim, args.slots)
        train = make_batch(kind, args.batch, L, n, args.vision_dim, args.answer, vocab)
        prompt = make_batch(kind, args.batch, L, n, args.vision_dim, args.answer, vocab, prompt_only=True)
        model.train()
        train_mb = peak_above_current_mb(lambda: train_step(model, train, kind))
        model.eval()
        generate_mb = peak_above_current_mb(lambda: model.generate(prompt, max_new_tokens=args.new_tokens, pad_token_id=0))
        release(model)
        print(json.dumps({"bridge": kind, "n": n, "L": L, "train_mb": train_mb, "generate_mb": generate_mb}), flush=True)


def measure_memory(args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    command = [sys.executable, __file__, "--memory-probe", *args.argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {"model_rss_mb": rows[0]["model_rss_mb"],
            **{(r["bridge"], r["n"], r["L"]): r for r in rows[1:]}}


# --- the benchmark ------------------------------------------------------------------------------
def configurations(args):
    """(bridge, n, L) of ``args.bridges``, text-only once per L (it has no visual tokens)."""
    for L in args.text:
        if "text" in args.bridges:
            yield "text", 0, L
        for n in args.visual:
            yield from ((k, n, L) for k in args.bridges if k != "text")


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = load_lm(args.lm)
    shape = LMShape.of(lm)
    vocab = shape.vocab
    results = []
    for L in args.text:
        for n in args.visual:
            group = list(args.bridges)  # text-only too, so that every ratio compares steps timed side by side
            models = {k: build(k, lm, args.vision_dim, args.slots) for k in group}
            train = {k: make_batch(k, args.batch, L, n, args.vision_dim, args.answer, vocab) for k in group}
            one = {k: make_batch(k, 1, L, n, args.vision_dim, args.answer, vocab) for k in group}
            prompt = {k: make_batch(k, args.batch, L, n, args.vision_dim, args.answer, vocab, prompt_only=True)
                      for k in group}
            rows = {}
            for k in group:
                m = models[k]
                m.train()
                rows[k] = {
                    "bridge": k, "n": 0 if k == "text" else n, "L": L, "group_n": n,  # timed beside the n-token rows
                    "slots": args.slots if k == "memvp" else 0,
                    "trainable_parameters": 0 if k == "text" else count_parameters(m.bridge, trainable_only=True),
                    "flops_analytic": analytic_flops(k, shape, L, n, args.answer, args.vision_dim, args.slots),
                    "flops_measured": count_flops(lambda: m(one[k])),  # text rows: the LM alone
                    "train_flops_measured": count_flops(lambda: train_step(m, one[k], k)),
                }
                train_step(m, train[k], k)  # warm-up
            steps = {k: [] for k in group}
            steps_cpu = {k: [] for k in group}
            steps_faults = {k: [] for k in group}
            latency = {k: [] for k in group}
            generation = {k: [] for k in group}
            for repeat in range(args.repeats):  # interleaved so that load on the machine hits all alike,
                turn = repeat % len(group)  # in turn order so that no bridge always runs after the same one
                for k in group[turn:] + group[:turn]:
                    models[k].train()
                    steps[k].append(timed(lambda: train_step(models[k], train[k], k), steps_cpu[k], steps_faults[k]))
                    models[k].eval()
                    with torch.no_grad():
                        latency[k].append(timed(lambda: models[k].generate(prompt[k], max_new_tokens=1, pad_token_id=0)))
                        generation[k].append(timed(lambda: models[k].generate(prompt[k], max_new_tokens=args.new_tokens,
                                                                             pad_token_id=0)))
            for k in group:
                step, lat, gen = min(steps[k]), min(latency[k]), min(generation[k])
                rows[k].update({
                    "train_step_s": step, "train_step_s_median": statistics.median(steps[k]),
                    "train_step_s_runs": steps[k],  # in repeat order, for ratios of steps run side by side
                    "train_step_cpu_s": min(steps_cpu[k]),
                    "train_step_page_faults": statistics.median(steps_faults[k]),
                    "latency_s": lat, "latency_s_median": statistics.median(latency[k]),
                    "generate_s": gen, "generate_s_median": statistics.median(generation[k]),
                    "tokens_per_s": args.batch * args.new_tokens / gen,
                    "decode_tokens_per_s": args.batch * (args.new_tokens - 1) / max(gen - lat, 1e-9),
                })
                results.append(rows[k])
                release(models[k])
            print(f"  measured L={L} n={n} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    if not args.no_memory:
        print("  measuring peak memory in a subprocess...", file=sys.stderr, flush=True)
        memory = measure_memory(args)
        for row in results:
            probe = memory[(row["bridge"], row["n"], row["L"])]
            row["peak_train_mb"], row["peak_generate_mb"] = probe["train_mb"], probe["generate_mb"]
    settings = {k: v for k, v in vars(args).items() if k not in ("memory_probe", "plot_only", "results", "argv")}
    return {
        "settings": settings,
        "lm_shape": asdict(shape),
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                    "python": platform.python_version()},
        "results": results,
        "model_rss_mb": memory["model_rss_mb"] if not args.no_memory else None,
        "seconds": time.perf_counter() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m",
                        help="registry name, a local Hugging Face causal-LM folder, or random weights in a SmolLM2 "
                             f"shape: {', '.join(RANDOM_SHAPES)} ('random' = SmolLM2-135M's)")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--visual", type=int, nargs="+", default=[49, 256], help="visual token counts n")
    parser.add_argument("--text", type=int, nargs="+", default=[32, 64, 128], help="text lengths L")
    parser.add_argument("--answer", type=int, default=4, help="supervised (answer) tokens at the end of the text")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated for the tokens/s measure")
    parser.add_argument("--slots", type=int, default=320, help="MemVP memory slots M (preset default 320)")
    parser.add_argument("--vision-dim", type=int, default=384, help="vision feature width d_v (DINOv2-S: 384)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measure (minimum reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--bridges", nargs="+", choices=BRIDGES, default=list(BRIDGES),
                        help="the bridges to measure (e.g. text memvp: the step-time target in a third of the time)")
    parser.add_argument("--quick", action="store_true", help="only n=256 and L=64 (the targets' configuration)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--default-malloc", action="store_true",
                        help="time with glibc's adaptive malloc thresholds instead of keeping freed memory "
                             "(vlbridge.allocator), to see what the page faults cost")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--accuracy", help="JSON {bridge: accuracy} to plot against the FLOPs of --plot-at")
    parser.add_argument("--plot", default="accuracy_vs_flops.png", help="PNG for --accuracy")
    parser.add_argument("--plot-at", type=int, nargs=2, default=[256, 64], metavar=("N", "L"),
                        help="the (n, L) configuration whose FLOPs the accuracy plot uses")
    parser.add_argument("--plot-only", action="store_true", help="plot from --results instead of measuring")
    parser.add_argument("--results", help="results JSON of an earlier run (with --plot-only)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # repeated to the memory probe
    args.bridges = [k for k in BRIDGES if k in args.bridges]  # the table's order
    if args.quick:
        args.visual, args.text = [256], [64]
    if args.memory_probe:
        memory_probe(args)
        return 0
    if args.plot_only:
        if not (args.results and args.accuracy):
            parser.error("--plot-only needs --results and --accuracy")
        report = json.loads(Path(args.results).read_text())
    else:
        if not args.default_malloc:
            keep_freed_memory()  # as the vlbridge command does; the memory probe sets its own thresholds
        report = run(args)
        report["summary"] = summarise(report)
        print_report(report)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
            print(f"\nresults: {args.out}")
    if args.accuracy:
        print(f"plot: {plot_accuracy_vs_flops(accuracy_points(report, args.accuracy, *args.plot_at), args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
