"""The report's files from its JSON: ``report.json``, ``report.md`` (tables, plots beside it), ``report.html`` (the
same tables, the plots embedded) and the plots' PNGs. The Markdown and HTML tables are built from the same cells,
so both show exactly the JSON's numbers (rounded as the column says)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from vlbridge.data.llava_json import write_json_atomic, write_text_atomic
from vlbridge.report.accuracy import METRICS
from vlbridge.report.plots import PLOTS, plot_accuracy

MISSING = "–"
PENDING = "The plots are drawn when every bridge has finished."


def number(value, digits: int = 4) -> str:
    """Integers with thousands separators, floats to ``digits`` significant digits, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def score(entry: dict) -> str:
    """``mean ± standard error`` to one decimal."""
    error = entry.get("stderr")
    return f"{entry['mean']:.1f} ± {error:.1f}" if error is not None else f"{entry['mean']:.1f}"


# (header, cell of a bridge's row)
COST_COLUMNS = [
    ("bridge", lambda r: r["name"]),
    ("connector -> injection", lambda r: f"{r['connector']} -> {r['injection']}"),
    ("trainable parameters", lambda r: number(r["trainable_parameters"])),
    ("visual vectors", lambda r: number(r["visual_vectors"])),
    ("LM GFLOPs / sample (analytic)", lambda r: number(r["flops"]["lm_analytic"] / 1e9)),
    ("measured / analytic", lambda r: number(r["flops"]["ratio"])),
    ("train step s (median)", lambda r: number(r["train_step_seconds"])),
    ("training min", lambda r: number(r["train_wall_seconds"] / 60)),
    ("1-token latency s", lambda r: number(r["latency_seconds"])),
    ("generation tokens/s", lambda r: number(r["generation"]["tokens_per_second"])),
    ("peak MB, train step", lambda r: number(r["peak_memory"]["train_step_mb"])),
    ("peak MB, generation", lambda r: number(r["peak_memory"]["generation_mb"])),
]
ACCURACY_COLUMNS = [
    ("bridge", lambda r: r["name"]),
    *((f"{what}{' (%)' if unit else ''}", lambda r, key=key: score(r["accuracy"][key]))
      for key, (what, unit) in METRICS.items()),
    ("final training loss", lambda r: number(r["final_loss"])),
]


def rows_of(columns, bridges: list[dict]) -> tuple[list[str], list[list[str]]]:
    return [header for header, _ in columns], [[cell(r) for _, cell in columns] for r in bridges]


def type_table(bridges: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Short-answer exact match per question type (rows) and bridge (columns), with each type's count."""
    tables = [r["accuracy"]["short_exact_match"].get("by_type", {}).get("question_type", {}) for r in bridges]
    kinds = sorted({kind for table in tables for kind in table})
    rows = []
    for kind in kinds:
        count = next(table[kind]["count"] for table in tables if kind in table)
        cells = [score({"mean": t[kind]["exact_match"], "stderr": t[kind]["exact_match_stderr"]})
                 if kind in t else MISSING for t in tables]
        rows.append([kind, str(count), *cells])
    return ["question type", "n", *(r["name"] for r in bridges)], rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def settings_lines(report: dict) -> list[str]:
    s, test, base = report["settings"], report["data"]["test"], report["baselines"]
    machine = report["machine"]

    def pct(value):
        return MISSING if value is None else f"{value:.1f} %"

    return [
        f"Command: `{report['command']}`" if report["command"] else "Command: (called from Python)",
        f"LM `{s['lm']}` (frozen), vision encoder `{s['encoder']}` (frozen, features cached; none for a connector "
        f"that reads pixels), Shapes data `{report['data']['folder']}`.",
        f"Every bridge: {s['steps']} steps of batch {s['batch_size']}, seed {s['seed']} (the same batches in the same "
        "order), on Shapes short answers, multiple-choice option texts and captions together; only the bridge "
        "trains.",
        f"Scored on {test['short']} short-answer questions, {test['mc']} multiple-choice questions and "
        f"{test['captions']} captioned test images. Image-blind baselines: majority answer "
        f"{pct(base['short_majority'])}, question-type prior {pct(base['short_question_type_prior'])} (short answers); "
        f"chance {pct(base['mc_chance'])} (multiple choice).",
        f"Machine: torch {machine['torch']}, {machine['threads']} threads, {machine['cpu']}, Python "
        f"{machine['python']}.",
    ]


NOTES = [
    "LM FLOPs: forward of one test question with its answer (batch 1), the LM with what the injection adds "
    "(memory slots, cross-attention blocks, visual positions); encoder and connector excluded. Analytic: the "
    "injection's formula (vlbridge.flops); measured: torch.utils.flop_counter on the whole model minus the front end.",
    "Train step: median of the trainer's step times after the first; training min: the whole training run.",
    "1-token latency: one prompt to its first answer token (prefill + one LM-head row), median of the repeats; "
    "generation tokens/s: a batch of prompts each generating a fixed number of tokens with the KV cache.",
    "Accuracy at equal steps, mean ± standard error over the items: short answers by exact match (VQA "
    "normalisation), multiple choice by the option text the model finds most likely, captions by CIDEr-D x 100 "
    "(per-image mean; every bridge on the same images).",
    "Times depend on what else runs on the machine: compare them only within a report run on a quiet machine.",
]


def markdown(report: dict) -> str:
    bridges = report["bridges"]
    parts = ["# Bridges side by side", "", *(f"- {line}" for line in settings_lines(report))]
    if report["missing"]:
        parts += ["", f"**Not run yet** (run the command again to continue): {', '.join(report['missing'])}."]
    parts += ["", "## Cost", "", markdown_table(*rows_of(COST_COLUMNS, bridges)), "",
              f"Peak memory: {report['memory_method']}; the optimizer's state is not included.", "",
              "## Accuracy at equal steps", "", markdown_table(*rows_of(ACCURACY_COLUMNS, bridges)), "",
              "## Short answers by question type (exact match %, ± standard error)", "",
              markdown_table(*type_table(bridges)), "", "## Plots", ""]
    parts += [f"![{title}]({file})" for file, (title, _, _) in PLOTS.items()] if not report["missing"] else [PENDING]
    parts += ["", "## How it is measured", "", *(f"- {note}" for note in NOTES), ""]
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:90em}table{border-collapse:collapse;margin:1em 0}"
         "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def html_page(report: dict, images: dict[str, bytes]) -> str:
    bridges = report["bridges"]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in settings_lines(report))
    missing = (f"<p><b>Not run yet</b> (run the command again to continue): "
               f"{html.escape(', '.join(report['missing']))}.</p>") if report["missing"] else ""
    plots = "".join(f"<figure><img alt='{html.escape(PLOTS[file][0])}' src='data:image/png;base64,"
                    f"{base64.b64encode(data).decode()}'></figure>" for file, data in images.items())
    if report["missing"]:
        plots = f"<p>{PENDING}</p>"
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in NOTES)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlbridge report</title><style>{STYLE}</style>"
            f"</head><body><h1>Bridges side by side</h1><ul>{items}</ul>{missing}"
            f"<h2>Cost</h2>{html_table(*rows_of(COST_COLUMNS, bridges))}"
            f"<p>Peak memory: {html.escape(report['memory_method'])}; the optimizer's state is not included.</p>"
            f"<h2>Accuracy at equal steps</h2>{html_table(*rows_of(ACCURACY_COLUMNS, bridges))}"
            f"<h2>Short answers by question type (exact match %, ± standard error)</h2>"
            f"{html_table(*type_table(bridges))}<h2>Plots</h2>{plots}<h2>How it is measured</h2><ul>{notes}</ul>"
            "</body></html>\n")


def write_report(out: Path, report: dict) -> dict[str, Path]:
    """Write the JSON, the plots (once every bridge has finished), the Markdown and the HTML into ``out``; returns
    their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    write_json_atomic(report, paths["json"], indent=1)
    images = {}
    for file, (title, x_key, x_label) in PLOTS.items():
        if report["missing"]:  # no plot of an earlier, other set of bridges beside this report
            (out / file).unlink(missing_ok=True)
            continue
        paths[file] = out / file
        plot_accuracy(report["bridges"], x_key, x_label, title, paths[file])
        images[file] = paths[file].read_bytes()
    write_text_atomic(markdown(report), paths["markdown"])
    write_text_atomic(html_page(report, images), paths["html"])
    return paths
