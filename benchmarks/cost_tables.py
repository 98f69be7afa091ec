"""The cost benchmark's report, a pure function of its results: ratios between the bridges per (n, L) group, the
targets, the printed table and the accuracy-vs-FLOPs plot (``bridge_costs.py`` measures)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

BRIDGES = ("text", "llava", "memvp")


def find(results, bridge, n, L):
    """``bridge``'s row timed in the (n, L) group (a text-only row has n = 0 and its group's n as ``group_n``)."""
    return next(r for r in results if (r["bridge"], r.get("group_n", r["n"]), r["L"]) == (bridge, n, L))


# (measure, result field) compared as a / b for each pair (a, b) of PAIRS: above 1, a costs more
RATIOS = (("flops", "flops_analytic"), ("step", "train_step_s"), ("step_cpu", "train_step_cpu_s"),
          ("latency", "latency_s"))
PAIRS = (("llava", "text"), ("memvp", "text"), ("llava", "memvp"))


def paired_step_ratio(a: dict, b: dict) -> float:
    """Median over repeats of a's step time / b's in the same repeat. Each repeat runs the bridges one after
    the other, seconds apart, so a slow period of the machine (this VM has some, of seconds to minutes) slows both
    terms of a pair; the ratio of the minima pairs the fastest step of each, possibly from different periods."""
    return statistics.median(x / y for x, y in zip(a["train_step_s_runs"], b["train_step_s_runs"], strict=True))


def summarise(report: dict) -> dict:
    """Per (n, L): ``{measure}_{a}_over_{b}`` for each pair of measured bridges, and the targets."""
    results, s = report["results"], report["settings"]
    bridges = s.get("bridges", BRIDGES)
    ratios = []
    for L in s["text"]:
        for n in s["visual"]:
            rows = {b: find(results, b, n, L) for b in bridges}
            ratio = {"n": n, "L": L}
            for a, b in PAIRS:
                if a in rows and b in rows:
                    for measure, field in RATIOS:
                        ratio[f"{measure}_{a}_over_{b}"] = rows[a][field] / rows[b][field]
                    ratio[f"step_paired_{a}_over_{b}"] = paired_step_ratio(rows[a], rows[b])
            if "llava" in rows and "memvp" in rows:
                ratio["tokens_per_s_memvp_over_llava"] = rows["memvp"]["tokens_per_s"] / rows["llava"]["tokens_per_s"]
            ratios.append(ratio)
    worst = max(abs(r["flops_measured"] / r["flops_analytic"] - 1) for r in results)
    key = next((r for r in ratios if (r["n"], r["L"]) == (256, 64)), {})
    targets = {"measured_flops_within_3pct": {"worst_relative_difference": worst, "met": worst <= 0.03}}
    if "step_memvp_over_text" in key:  # met only if both estimates are at most 1.15
        values = key["step_memvp_over_text"], key["step_paired_memvp_over_text"]
        targets["memvp_step_at_most_1.15x_text (n=256, L=64)"] = {
            "value": values[0], "paired_median": values[1], "met": max(values) <= 1.15}
    if "step_llava_over_memvp" in key:
        share = key["step_llava_over_memvp"] / key["flops_llava_over_memvp"]
        targets["llava_over_memvp_step_at_least_80pct_of_flops_ratio (n=256, L=64)"] = {
            "step_ratio": key["step_llava_over_memvp"], "flops_ratio": key["flops_llava_over_memvp"],
            "share": share, "met": share >= 0.8}
    return {"ratios": ratios, "targets": targets}


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"LM {s['lm']} ({report['lm_shape']['layers']} layers, d={report['lm_shape']['width']}), "
          f"batch {s['batch']}, {s['answer']} supervised tokens, {s['new_tokens']} new tokens, "
          f"{report['machine']['threads']} threads, MemVP slots {s['slots']}")
    header = (f"{'bridge':7}{'n':>5}{'L':>5}{'params':>10}{'GFLOP/s.':>10}{'measured':>10}{'step s':>9}"
              f"{'faults':>8}{'1-tok s':>9}{'gen s':>8}{'tok/s':>8}{'dec tok/s':>10}{'train MB':>10}{'gen MB':>8}")
    print(header)
    for r in report["results"]:
        mem = (f"{r['peak_train_mb']:>10.0f}{r['peak_generate_mb']:>8.0f}" if "peak_train_mb" in r else "")
        print(f"{r['bridge']:7}{r['n']:>5}{r['L']:>5}{r['trainable_parameters']:>10,}{r['flops_analytic'] / 1e9:>10.2f}"
              f"{r['flops_measured'] / r['flops_analytic']:>10.4f}{r['train_step_s']:>9.2f}"
              f"{r['train_step_page_faults']:>8.0f}{r['latency_s']:>9.2f}"
              f"{r['generate_s']:>8.2f}{r['tokens_per_s']:>8.1f}{r['decode_tokens_per_s']:>10.1f}{mem}")
    print("\n(faults: the training step's minor page faults, median over repeats)")
    print("\nratios (analytic forward FLOPs; times are min over repeats; step_paired: median over repeats of "
          "the ratio of steps run side by side)")
    for r in report["summary"]["ratios"]:
        parts = []
        for measure in [m for m, _ in RATIOS] + ["step_paired"]:
            pairs = [f"{a}/{b} {r[f'{measure}_{a}_over_{b}']:.3f}x" for a, b in PAIRS if f"{measure}_{a}_over_{b}" in r]
            if pairs:
                parts.append(f"{measure} " + ", ".join(pairs))
        if "tokens_per_s_memvp_over_llava" in r:
            parts.append(f"tok/s memvp/llava {r['tokens_per_s_memvp_over_llava']:.3f}x")
        print(f"n={r['n']:>3} L={r['L']:>3}: " + " | ".join(parts))
    print("\ntargets")
    for name, value in report["summary"]["targets"].items():
        print(f"  {name}: {'MET' if value['met'] else 'NOT MET'} "
              f"{ {k: round(v, 4) for k, v in value.items() if k != 'met'} }")


def plot_accuracy_vs_flops(points: list[dict], path: str | Path) -> Path:
    """Scatter of accuracy against forward FLOPs per sample; ``points``: dicts with name, flops, accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for p in points:
        axis.scatter(p["flops"] / 1e9, p["accuracy"], s=40)
        axis.annotate(p["name"], (p["flops"] / 1e9, p["accuracy"]), textcoords="offset points", xytext=(5, 4))
    axis.set_xlabel("forward GFLOPs per sample (LM + bridge)")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3)
    axis.margins(0.15)  # room for the labels
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def accuracy_points(report: dict, accuracy_file: str, n: int, L: int) -> list[dict]:
    """``accuracy_file``: JSON ``{"llava": 0.71, "memvp": 0.74, "text": 0.40}`` (bridge -> accuracy)."""
    accuracy = json.loads(Path(accuracy_file).read_text())
    unknown = sorted(set(accuracy) - set(BRIDGES))
    if unknown:
        sys.exit(f"{accuracy_file}: unknown bridge(s) {unknown}; valid: {list(BRIDGES)}")
    return [{"name": b, "flops": find(report["results"], b, n, L)["flops_analytic"], "accuracy": a}
            for b, a in accuracy.items()]
