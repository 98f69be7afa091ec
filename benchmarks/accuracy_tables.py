"""The accuracy benchmark's summary, a pure function of the stored results: paired differences, MemVP against the
LLaVA-style bridge per task, the ablations beside the MemVP paper's Table 4, the baselines, the markdown tables and
the accuracy-vs-FLOPs plot (``bridge_accuracy.py`` runs the trainings and writes each result)."""

from __future__ import annotations

import json
import math
from pathlib import Path

# task -> the score that is its accuracy (vlbridge.eval.scoring.score_sample). short and mc read the Shapes
# export's LLaVA JSON; sqa is mc's questions in ScienceQA's layout with MemVP's QCM-A prompt and target
# ("The answer is X."), read through data.format=scienceqa as recipes/memvp/scienceqa.yaml reads ScienceQA;
# mc-text is mc's questions answered with the option's text and scored by ranking the options' likelihoods
# (vlbridge.eval.choice_likelihood): the frozen 135M LM does not map answers to letters (mc_letter_probe.py)
TASKS = {"short": "exact_match", "mc": "accuracy", "sqa": "accuracy", "mc-text": "accuracy"}
SCIENCEQA_TASKS = {"sqa"}
OPTION_TEXT_TASKS = {"mc-text"}

# MemVP paper, Table 4 (ScienceQA accuracy %, average / IMG subset); METHODS.md section 1
PAPER_TABLE4 = {
    "memvp": (93.07, 92.36),
    "memvp-no-visual-prompts": (85.33, 76.05),
    "memvp-global": (89.01, 84.18),
    "memvp-position-concat": (89.79, 86.07),
    "memvp-keys-only": (91.94, 90.23),
    "memvp-values-only": (92.78, 92.36),
}
PAPER_LABELS = {
    "memvp": "full", "memvp-no-visual-prompts": "w/o visual prompts", "memvp-global": "global instead of local",
    "memvp-position-concat": "position concat instead of add", "memvp-keys-only": "keys only",
    "memvp-values-only": "values only",
}
TARGET_POINTS_BELOW = 1.0  # MemVP at most 1 point below the LLaVA-style bridge (the paper finds it higher)


# --- the summary (pure functions of the stored results) -----------------------------------------
def paired_difference(a: dict, b: dict) -> tuple[float, float | None, int]:
    """Accuracy of ``a`` minus ``b`` (points) on the questions both scored, and its standard error from the
    per-question differences (the same questions: paired, tighter than two independent errors)."""
    right = dict(zip(b["question_ids"], b["correct_after"]))
    diffs = [100 * (c - right[q]) for q, c in zip(a["question_ids"], a["correct_after"]) if q in right]
    n = len(diffs)
    if n == 0:
        return a["accuracy_after"] - b["accuracy_after"], None, 0
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else None
    return mean, se, n


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def summarise(results: list[dict]) -> dict:
    """Targets, the ablation table and baselines from whatever (config, task) results exist."""
    by = {(r["config"], r["task"]): r for r in results}
    comparisons = []
    for task in TASKS:
        llava, memvp = by.get(("llava", task)), by.get(("memvp", task))
        if llava and memvp:
            diff, se, n = paired_difference(memvp, llava)
            comparisons.append({"task": task, "llava": llava["accuracy_after"], "memvp": memvp["accuracy_after"],
                                "memvp_minus_llava": diff, "standard_error": se, "questions": n,
                                "met": diff >= -TARGET_POINTS_BELOW,
                                "flops_llava_over_memvp":
                                    llava["lm_gflops_per_sample"] / memvp["lm_gflops_per_sample"]})
    ablations, same_direction = {}, {}
    paper_avg, paper_img = PAPER_TABLE4["memvp"]
    for task in TASKS:  # a table for each task with at least one ablation run
        if not any((config, task) in by for config in PAPER_TABLE4 if config != "memvp"):
            continue
        full, rows = by.get(("memvp", task)), []
        for config, (avg, img) in PAPER_TABLE4.items():
            ours = by.get((config, task))
            row = {"config": config, "ablation": PAPER_LABELS[config], "paper_avg": avg, "paper_img": img,
                   "paper_avg_delta": avg - paper_avg, "paper_img_delta": img - paper_img,
                   "ours": ours["accuracy_after"] if ours else None, "ours_delta": None, "standard_error": None,
                   "same_direction": None}
            if ours and full and config != "memvp":
                row["ours_delta"], row["standard_error"], _ = paired_difference(ours, full)
                # the paper's direction is its average's (every ablation lowers it); a tie agrees with nothing
                row["same_direction"] = sign(row["ours_delta"]) == sign(row["paper_avg_delta"]) != 0
            rows.append(row)
        judged = [a for a in rows if a["same_direction"] is not None]
        ablations[task] = rows
        same_direction[task] = f"{sum(a['same_direction'] for a in judged)} of {len(judged)}"
    majority = {task: next(r["majority_baseline"] for r in results if r["task"] == task)
                for task in TASKS if any(r["task"] == task for r in results)}
    prior = {task: next(r["question_type_baseline"] for r in results if r["task"] == task)
             for task in majority if all(r.get("question_type_baseline") is not None
                                         for r in results if r["task"] == task)}
    return {"memvp_vs_llava": comparisons, "ablations": ablations, "ablations_same_direction": same_direction,
            "majority_baseline": majority, "question_type_baseline": prior}


def _pct(x: float | None, signed: bool = False) -> str:
    return "" if x is None else (f"{x:+.1f}" if signed else f"{x:.1f}")


def _delta(x: float | None, se: float | None) -> str:
    return "" if x is None else _pct(x, True) + (f" ± {se:.1f}" if se is not None else "")


def markdown(results: list[dict], summary: dict) -> str:
    lines = ["## All runs (accuracy % on the first N test questions; LM forward GFLOPs per sample, one answer token)",
             "", "| config | task | steps | trainable | LM GFLOPs | s/step | train min | final loss | N | before "
             "| after |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["task"], r["config"])):
        lines.append(f"| {r['config']} | {r['task']} | {r['signature']['steps']} | {r['trainable_parameters']:,} | "
                     f"{r['lm_gflops_per_sample']:.2f} | {r['train_seconds_per_step']:.2f} | "
                     f"{r['train_wall_seconds'] / 60:.1f} | {r['final_loss']:.3f} | {r['eval_samples']} | "
                     f"{r['accuracy_before']:.1f} | {r['accuracy_after']:.1f} |")
    lines += ["", "Majority-answer baseline (the training set's most frequent answer): "
              + ", ".join(f"{t} {v:.1f} %" for t, v in summary["majority_baseline"].items())]
    if summary["question_type_baseline"]:
        lines += ["", "Question-type prior (each question type's most frequent training answer; no image): "
                  + ", ".join(f"{t} {v:.1f} %" for t, v in summary["question_type_baseline"].items())]
    if summary["memvp_vs_llava"]:
        lines += ["", f"## MemVP vs LLaVA-style at equal steps (target: MemVP at most {TARGET_POINTS_BELOW:g} point "
                  "below)", "",
                  "| task | LLaVA-style | MemVP | MemVP - LLaVA ± SE | LM FLOPs LLaVA / MemVP | target |",
                  "|---|---|---|---|---|---|"]
        for c in summary["memvp_vs_llava"]:
            lines.append(f"| {c['task']} | {c['llava']:.1f} | {c['memvp']:.1f} | "
                         f"{_delta(c['memvp_minus_llava'], c['standard_error'])} | "
                         f"{c['flops_llava_over_memvp']:.2f}x | {'met' if c['met'] else 'NOT met'} |")
    for task, rows in summary["ablations"].items():
        lines += ["", f"## MemVP ablations on Shapes {task} beside the paper's Table 4 (ScienceQA avg / IMG)", "",
                  "| ablation | config | ours | ours - full ± SE | paper avg | paper - full | paper IMG "
                  "| paper IMG - full "
                  "| same direction |", "|---|---|---|---|---|---|---|---|---|"]
        for a in rows:
            agree = "tie" if a["ours_delta"] == 0 else {None: "", True: "yes", False: "no"}[a["same_direction"]]
            lines.append(f"| {a['ablation']} | {a['config']} | {_pct(a['ours'])} | "
                         f"{_delta(a['ours_delta'], a['standard_error'])} | {a['paper_avg']:.2f} | "
                         f"{a['paper_avg_delta']:+.2f} | {a['paper_img']:.2f} | "
                         f"{a['paper_img_delta']:+.2f} | {agree} |")
        lines += ["", f"Same direction as the paper's average: {summary['ablations_same_direction'][task]} "
                  "(a difference within about two standard errors is not distinguishable from none)."]
    return "\n".join(lines) + "\n"


def spread(values: list[float], gap: float) -> list[float]:
    """Label positions near ``values`` (in order of the input), at least ``gap`` apart, centred on the originals."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    placed: list[float] = []
    for i in order:
        placed.append(max(values[i], placed[-1] + gap) if placed else values[i])
    shift = (sum(values) - sum(placed)) / len(values) if values else 0.0
    out = [0.0] * len(values)
    for rank, i in enumerate(order):
        out[i] = placed[rank] + shift
    return out


def by_value(baselines: dict[str, float]) -> dict[float, str]:
    """task -> baseline as baseline -> "task, task" (one label for the tasks whose lines coincide)."""
    out: dict[float, list[str]] = {}
    for task, value in baselines.items():
        out.setdefault(round(value, 6), []).append(task)
    return {value: ", ".join(tasks) for value, tasks in out.items()}


def plot(results: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the bridges' cost against accuracy; the ablations cost what the full MemVP costs (they are the tables)
    results = [r for r in results if r["config"] not in PAPER_TABLE4 or r["config"] == "memvp"]
    figure, axis = plt.subplots(figsize=(8, 5))
    markers = {"short": "o", "mc": "s", "sqa": "^", "mc-text": "D"}
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(sorted({r['config'] for r in results}))}
    xs = [r["lm_gflops_per_sample"] for r in results]
    ys = [r["accuracy_after"] for r in results]
    for r, x, y in zip(results, xs, ys):
        axis.scatter(x, y, marker=markers[r["task"]], color=colors[r["config"]], s=50, zorder=3)
    for task, value in summary["majority_baseline"].items():
        axis.axhline(value, color="0.5", lw=0.8, ls={"short": ":", "mc": "--"}.get(task, "-."))
    low, high = axis.get_ylim()
    labels = list(ys)
    for x in set(round(v, 3) for v in xs):  # labels of points at the same FLOPs must not overlap
        group = [i for i, v in enumerate(xs) if round(v, 3) == x]
        for i, y in zip(group, spread([ys[i] for i in group], (high - low) * 0.04)):
            labels[i] = y
    for r, x, y, label in zip(results, xs, ys, labels):
        axis.annotate(f"{r['config']} ({r['task']})", (x, y), xytext=(x * 1.03 + 0.3, label), fontsize=8,
                      va="center", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})
    for value, tasks in by_value(summary["majority_baseline"]).items():
        axis.text(axis.get_xlim()[0], value, f" majority answer ({tasks})", fontsize=7, color="0.4", va="bottom")
    for value, tasks in by_value(summary["question_type_baseline"]).items():
        axis.axhline(value, color="tab:red", lw=0.8, alpha=0.6, ls=":")
        axis.text(axis.get_xlim()[0], value, f" question-type prior ({tasks})", fontsize=7, color="tab:red",
                  va="bottom")
    for task in sorted({r["task"] for r in results}, key=list(TASKS).index):
        axis.scatter([], [], marker=markers[task], color="0.3", label=f"Shapes {task}")
    steps = sorted({r["signature"]["steps"] for r in results})
    axis.set(xlabel="analytic LM forward GFLOPs per sample (one answer token)",
             ylabel="test accuracy after training (%)",
             title=f"Accuracy vs FLOPs at equal steps ({', '.join(map(str, steps))} steps)")
    axis.set_xlim(right=max(xs) * 1.45 if xs else 1)
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_summary(out: Path, command: str, settings: dict, show: bool = True) -> dict:
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*__*.json"))]
    if not results:
        print(f"no results in {out / 'results'} yet")
        return {}
    summary = summarise(results)
    text = markdown(results, summary)
    numbers = {"command": command, "settings": settings, "summary": summary,
               "results": [{k: v for k, v in r.items() if k not in ("question_ids", "correct_after", "loss_curve")}
                           for r in results]}
    (out / "bridge_accuracy.json").write_text(json.dumps(numbers, indent=1))
    (out / "bridge_accuracy.md").write_text(text)
    plot(results, summary, out / "accuracy_vs_flops.png")
    if show:
        print("\n" + text)
        print(f"wrote {out / 'bridge_accuracy.json'}, {out / 'bridge_accuracy.md'} and {out / 'accuracy_vs_flops.png'}")
    return numbers
