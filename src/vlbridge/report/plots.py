"""The report's plots: each accuracy (with its standard error) against what the bridge costs, one panel per score,
one colour and marker per bridge."""

from __future__ import annotations

from pathlib import Path

from vlbridge.report.accuracy import METRICS

PLOTS = {  # file -> (title, x value of a bridge's row, x-axis label)
    "accuracy_vs_flops.png": ("Accuracy vs LM FLOPs per sample", "lm_gflops", "LM GFLOPs per sample (analytic)"),
    "accuracy_vs_time.png": ("Accuracy vs training wall time", "train_minutes", "training wall time (min)"),
}
MARKERS = "osD^vP*Xhp<>"


def x_value(row: dict, key: str) -> float:
    return row["flops"]["lm_analytic"] / 1e9 if key == "lm_gflops" else row["train_wall_seconds"] / 60


def plot_accuracy(rows: list[dict], x_key: str, x_label: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.6 * len(METRICS), 4.2))
    colours = plt.get_cmap("tab10")
    for ax, (key, (what, unit)) in zip(axes, METRICS.items()):
        for i, row in enumerate(rows):
            entry = row["accuracy"][key]
            ax.errorbar(x_value(row, x_key), entry["mean"], yerr=entry["stderr"] or 0, fmt=MARKERS[i % len(MARKERS)],
                        color=colours(i % 10), capsize=3, label=row["name"])
        ax.set(xlabel=x_label, ylabel=f"{what}{' (%)' if unit else ''}", title=what)
        ax.grid(alpha=0.3)
    if rows:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=min(len(rows), 5), fontsize=8)
    fig.suptitle(title + " (mean ± standard error, equal training steps)")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(rows) - 1) // 5), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
