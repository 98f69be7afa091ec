"""The precision benchmark's report, a pure function of its results (``precision.py`` measures): fp32 / bf16 ratios per
bridge, the targets and the printed tables."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_tables import paired_difference  # noqa: E402 (a sibling script, not a package)

PRECISIONS = ("fp32", "bf16")
SPEED_TARGET = 2.0  # bf16 train step at least this many times faster than fp32 (LLaVA-style and MemVP)
CEILING_SHARE_TARGET = 0.5  # the LM's products in a bf16 step at least this share of the bf16 matmul ceiling
ACCURACY_POINTS = 1.0  # bf16 accuracy within this many points of fp32's


def row(results: list[dict], bridge: str, precision: str) -> dict:
    return next(r for r in results if (r["bridge"], r["precision"]) == (bridge, precision))


def ratios(results: list[dict], bridge: str) -> dict:
    """fp32 over bf16 (above 1: bf16 is faster or smaller) for one bridge."""
    fp32, bf16 = row(results, bridge, "fp32"), row(results, bridge, "bf16")
    out = {
        "bridge": bridge,
        "step": fp32["train_step_s"] / bf16["train_step_s"],
        # steps run seconds apart in the same repeat: a slow period of the machine slows both terms of a pair
        "step_paired": statistics.median(a / b for a, b in zip(fp32["steps"], bf16["steps"], strict=True)),
        "latency": fp32["latency_s"] / bf16["latency_s"],
        "tokens_per_s": bf16["tokens_per_s"] / fp32["tokens_per_s"],
        "frozen_weight_bytes": fp32["frozen_weight_bytes"] / bf16["frozen_weight_bytes"],
    }
    if "peak_train_mb" in fp32:
        out["peak_train_memory"] = fp32["peak_train_mb"] / max(bf16["peak_train_mb"], 1e-9)
        out["peak_generate_memory"] = fp32["peak_generate_mb"] / max(bf16["peak_generate_mb"], 1e-9)
    return out


def pooled(rows: list[dict]) -> dict:
    """One arm's runs over several seeds as one: each (seed, question) an item, the accuracy their mean."""
    ids = [f"{r.get('seed', 0)}:{q}" for r in rows for q in r["question_ids"]]
    correct = [c for r in rows for c in r["correct_after"]]
    return {"question_ids": ids, "correct_after": correct, "accuracy_after": 100 * sum(correct) / max(len(correct), 1)}


def accuracy_differences(rows: list[dict]) -> list[dict]:
    """bf16 minus fp32 exact match per configuration, pooled over the seeds both precisions ran, with the paired
    standard error over the same (seed, question) items."""
    found = []
    for config in sorted({r["config"] for r in rows}):
        by_seed = {p: {r.get("seed", 0): r for r in rows if (r["config"], r["precision"]) == (config, p)}
                   for p in PRECISIONS}
        seeds = sorted(set(by_seed["fp32"]) & set(by_seed["bf16"]))
        if not seeds:
            continue
        arms = {p: pooled([by_seed[p][s] for s in seeds]) for p in PRECISIONS}
        diff, se, n = paired_difference(arms["bf16"], arms["fp32"])
        found.append({"config": config, "seeds": seeds, "fp32": arms["fp32"]["accuracy_after"],
                      "bf16": arms["bf16"]["accuracy_after"], "bf16_minus_fp32": diff, "standard_error": se,
                      "questions": n, "met": abs(diff) <= ACCURACY_POINTS})
    return found


def summarise(report: dict) -> dict:
    summary: dict = {"targets": {}}
    results = report.get("results", [])
    bridges = [b for b in ("text", "llava", "memvp") if any(r["bridge"] == b for r in results)]
    summary["ratios"] = [ratios(results, b) for b in bridges]
    for r in summary["ratios"]:
        if r["bridge"] == "text":
            continue
        values = r["step"], r["step_paired"]  # met only if both estimates reach it
        summary["targets"][f"bf16_step_at_least_{SPEED_TARGET:g}x_fp32 ({r['bridge']})"] = {
            "value": values[0], "paired_median": values[1], "met": min(values) >= SPEED_TARGET}
        share = row(results, r["bridge"], "bf16")["products_share_of_bf16_ceiling"]
        summary["targets"][f"lm_products_at_least_{CEILING_SHARE_TARGET:g}_of_bf16_ceiling ({r['bridge']})"] = {
            "value": share, "met": share >= CEILING_SHARE_TARGET}
    if "accuracy" in report:
        summary["accuracy"] = accuracy_differences(report["accuracy"])
        for a in summary["accuracy"]:
            summary["targets"][f"accuracy_within_{ACCURACY_POINTS:g}_point ({a['config']})"] = {
                "value": a["bf16_minus_fp32"], "standard_error": a["standard_error"], "met": a["met"]}
    return summary


def print_report(report: dict) -> None:
    s, machine = report["settings"], report["machine"]
    print(f"LM {s['lm']}, batch {s['batch']}, n={s['visual']}, L={s['text']}, {s['answer']} supervised tokens, "
          f"{s['new_tokens']} new tokens, {machine['threads']} threads; bf16 on this machine: "
          f"{'fast' if machine['bf16_fast'] else 'emulated'} ({machine['bf16_why']})")
    if "ceilings" in report:
        print("\nthe ceiling: the LM's products as nn.Linear runs them (GFLOP/s)")
        for kind, ceiling in report["ceilings"].items():
            products = ", ".join(f"{p['product']} {p['fp32_gflops']:.0f}/{p['bf16_gflops']:.0f}"
                                 for p in ceiling["products"])
            print(f"  {kind:6} {ceiling['tokens']:>5} rows: fp32 {ceiling['fp32_gflops']:.0f}, "
                  f"bf16 {ceiling['bf16_gflops']:.0f} (x{ceiling['bf16_gflops'] / ceiling['fp32_gflops']:.2f}) "
                  f"[fp32/bf16: {products}]")
    if report.get("attention_backward"):
        print("\nattention backward, ms: the kernel in bf16 / in fp32 on fp32 copies (casts included)")
        print("  " + ", ".join(f"T={a['sequence']}: {a['bf16_ms']:.1f} / {a['fp32_with_casts_ms']:.1f}"
                               for a in report["attention_backward"]))
    if report.get("results"):
        print(f"\n{'bridge':7}{'prec':>6}{'step s':>9}{'1-tok s':>9}{'gen s':>8}{'tok/s':>8}{'step GF/s':>11}"
              f"{'products GF/s':>15}{'of ceiling':>12}{'weights MB':>12}{'train MB':>10}{'gen MB':>8}")
        for r in report["results"]:
            memory = f"{r['peak_train_mb']:>10.0f}{r['peak_generate_mb']:>8.0f}" if "peak_train_mb" in r else ""
            print(f"{r['bridge']:7}{r['precision']:>6}{r['train_step_s']:>9.3f}{r['latency_s']:>9.3f}"
                  f"{r['generate_s']:>8.2f}{r['tokens_per_s']:>8.1f}{r['step_gflops']:>11.1f}"
                  f"{r['products_gflops']:>15.1f}{r['products_share_of_bf16_ceiling']:>12.2f}"
                  f"{r['frozen_weight_bytes'] / 2**20:>12.0f}{memory}")
        print("\nfp32 / bf16 (step: ratio of minima; step_paired: median ratio of steps run side by side)")
        for r in report["summary"]["ratios"]:
            print("  " + f"{r['bridge']}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if k != "bridge"))
    if report["summary"].get("accuracy"):
        print("\naccuracy (exact match, %), bf16 - fp32 with the paired standard error")
        for a in report["summary"]["accuracy"]:
            se = f" ± {a['standard_error']:.1f}" if a["standard_error"] is not None else ""
            print(f"  {a['config']}: fp32 {a['fp32']:.1f}, bf16 {a['bf16']:.1f}, {a['bf16_minus_fp32']:+.1f}{se} "
                  f"({a['questions']} questions x seeds, seeds {a['seeds']})")
    print("\ntargets")
    for name, value in report["summary"]["targets"].items():
        print(f"  {name}: {'MET' if value['met'] else 'NOT MET'} "
              f"{ {k: (round(v, 3) if isinstance(v, float) else v) for k, v in value.items() if k != 'met'} }")
