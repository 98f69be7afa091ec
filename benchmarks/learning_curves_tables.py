"""The learning-curves benchmark's summary, a pure function of the stored arms: final accuracy overall, per target
group and per question type, the step and seconds at which each arm first reached 50 / 60 / 75 %, the markdown
tables and the plot (``learning_curves.py`` runs the trainings and writes each arm's result)."""

from __future__ import annotations

import json
from pathlib import Path

THRESHOLDS = (50.0, 60.0, 75.0)  # overall exact match (%) whose first crossing is reported
# group -> (its Shapes question types, vlbridge.data.shapes_questions; the target in %): "colour" and "shape" are of a
# named object ("What color is the star?", "What shape is the red object?"), "position" is "Where is the red star?"
TARGETS: dict[str, tuple[tuple[str, ...] | None, float]] = {
    "overall": (None, 75.0),
    "colour": (("color_of",), 85.0),
    "shape": (("shape_of",), 85.0),
    "position": (("position",), 70.0),
    "counting": (("count_all", "count_color", "count_shape"), 60.0),
}


# --- the summary (pure functions of the stored arms) -----------------------------------------------------------------
def group_accuracy(point: dict, types: tuple[str, ...] | None) -> float | None:
    """Exact match of a curve point over ``types`` (each type weighted by its questions), or overall for None;
    None when the evaluation had none of them."""
    if types is None:
        return point["overall"]
    counts = {t: point["type_counts"][t] for t in types if t in point["type_counts"]}
    if not counts:
        return None
    return sum(point["by_question_type"][t] * n for t, n in counts.items()) / sum(counts.values())


def first_reaching(curve: list[dict], threshold: float) -> dict | None:
    """The first evaluation at which overall exact match reached ``threshold`` (its step and seconds), else None."""
    for point in curve:
        if point["overall"] >= threshold:
            return {"step": point["step"], "epoch": point["epoch"], "wall_seconds": point["wall_seconds"]}
    return None


def summarise(results: list[dict]) -> list[dict]:
    """One row per arm: its settings, final accuracies, target groups (and whether each is met), first crossings."""
    rows = []
    for r in results:
        final = r["curve"][-1]
        groups = {name: group_accuracy(final, types) for name, (types, _) in TARGETS.items()}
        rows.append({
            "arm": r["arm"], "bridge": r["bridge"], "lr": r["lr"], "batch_size": r["batch_size"], "steps": r["steps"],
            "epochs": r["epochs"], "final": groups,
            "met": {name: value is not None and value >= TARGETS[name][1] for name, value in groups.items()},
            "reached": {f"{t:g}": first_reaching(r["curve"], t) for t in THRESHOLDS},
            "by_question_type": final["by_question_type"], "encoding": r["encoding"],
            "train_seconds": final["train_seconds"], "wall_seconds": final["wall_seconds"],
        })
    return rows


# --- markdown ---------------------------------------------------------------------------------------------------------
def _pct(value: float | None, met: bool = False) -> str:
    if value is None:
        return "-"
    return f"**{value:.1f}**" if met else f"{value:.1f}"


def _reached(hit: dict | None) -> str:
    return f"{hit['step']} ({hit['wall_seconds'] / 60:.1f} min)" if hit else "-"


def _encoding(encoding: dict) -> str:
    how = ", ".join(f"{what} {encoding[what]}" for what in ("encoded", "loaded") if encoding[what])
    return f"{encoding['seconds']:.0f}" + (f" ({how})" if how else "")


def markdown(results: list[dict], rows: list[dict], command: str) -> str:
    first = results[0]["signature"]
    counts = results[0]["curve"][-1]["type_counts"]
    lines = [
        "# Learning curves on Shapes short answers", "",
        f"Command: `{command}`", "",
        f"{first['scenes']} scenes, evaluation every {first['eval_every']} steps on the first {first['eval_samples']} "
        "val questions (0 = all); exact match (%) at the last evaluation. Bold: the target is met "
        f"({', '.join(f'{g} >= {t:g}' for g, (_, t) in TARGETS.items())}). Minutes are encoding + training steps "
        "(evaluation not counted); encoding as the trainer reported it: `encoded` images ran through the encoder, "
        "`loaded` ones came from the feature cache. A type with n questions has a standard error of about "
        "50 / sqrt(n) points.", "",
        "| arm | bridge | lr | batch | steps | epochs | " + " | ".join(TARGETS) + " | "
        + " | ".join(f"{t:g} % at step (min)" for t in THRESHOLDS) + " | encoding s | steps s | wall s |",
        "|" + "---|" * (6 + len(TARGETS) + len(THRESHOLDS) + 3),
    ]
    for row in rows:
        lines.append(
            f"| {row['arm']} | {row['bridge']} | {row['lr']:g} | {row['batch_size']} | {row['steps']} | "
            f"{row['epochs']:.2f} | " + " | ".join(_pct(row["final"][g], row["met"][g]) for g in TARGETS) + " | "
            + " | ".join(_reached(hit) for hit in row["reached"].values())
            + f" | {_encoding(row['encoding'])} | {row['train_seconds']:.0f} | {row['wall_seconds']:.0f} |")
    types = sorted({t for row in rows for t in row["by_question_type"]})
    lines += ["", "Exact match (%) per question type at the last evaluation (n: questions of the type):", "",
              "| arm | " + " | ".join(f"{t} (n={counts.get(t, '?')})" for t in types) + " |",
              "|" + "---|" * (1 + len(types))]
    for row in rows:
        lines.append(f"| {row['arm']} | " + " | ".join(_pct(row["by_question_type"].get(t)) for t in types) + " |")
    return "\n".join(lines) + "\n"


# --- the plot ---------------------------------------------------------------------------------------------------------
def plot(results: list[dict], path: Path) -> None:
    """Overall exact match against steps and against wall seconds, one line per arm; below, a small panel per
    question type against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted({t for r in results for p in r["curve"] for t in p["by_question_type"]})
    columns, type_rows = 4, -(-len(types) // 4)
    figure = plt.figure(figsize=(14, 4.5 + 2.6 * type_rows))
    grid = figure.add_gridspec(1 + type_rows, columns, height_ratios=[1.7] + [1] * type_rows)
    colors = {r["arm"]: plt.cm.tab10(i % 10) for i, r in enumerate(results)}
    for axis, x, label in ((figure.add_subplot(grid[0, :2]), "step", "optimizer steps"),
                           (figure.add_subplot(grid[0, 2:]), "wall_seconds", "seconds (encoding + steps)")):
        for r in results:
            axis.plot([p[x] for p in r["curve"]], [p["overall"] for p in r["curve"]], marker="o", ms=3,
                      color=colors[r["arm"]], label=r["arm"])
        for threshold in THRESHOLDS:
            axis.axhline(threshold, color="0.6", lw=0.7, ls=":")
        axis.set(xlabel=label, ylabel="val exact match (%)", ylim=(0, 100), title=f"overall against {label}")
        axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    for i, kind in enumerate(types):
        axis = figure.add_subplot(grid[1 + i // columns, i % columns])
        for r in results:
            points = [p for p in r["curve"] if kind in p["by_question_type"]]
            axis.plot([p["step"] for p in points], [p["by_question_type"][kind] for p in points], marker="o", ms=2,
                      lw=1, color=colors[r["arm"]])
        axis.set_title(kind, fontsize=9)
        axis.set_ylim(0, 100)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(out: Path, command: str, settings: dict, show: bool = True) -> dict:
    """learning_curves.json / .md / .png in ``out`` from every arm stored in ``out/results``."""
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    if not results:
        print(f"no results in {out / 'results'} yet")
        return {}
    rows = summarise(results)
    text = markdown(results, rows, command)
    numbers = {"command": command, "settings": settings, "summary": rows, "arms": results}
    (out / "learning_curves.json").write_text(json.dumps(numbers, indent=1))
    (out / "learning_curves.md").write_text(text)
    plot(results, out / "learning_curves.png")
    if show:
        print("\n" + text)
        print(f"wrote {out / 'learning_curves.json'}, {out / 'learning_curves.md'} and {out / 'learning_curves.png'}")
    return numbers
