"""The comparisons and tables of ``benchmarks/eve_claims.py``, from its stored per-run results alone."""

from __future__ import annotations

import math
import statistics

SEGMENTS = 10  # loss and gradient-norm curves: the mean of each tenth of a run


# --- statistics ---------------------------------------------------------------------------------------------------
def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and its standard error (None below two values)."""
    mean = sum(values) / len(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def paired(a: dict[str, float], b: dict[str, float]) -> dict:
    """``a`` minus ``b`` on the items both scored (id -> value), with the SE of the per-item differences."""
    diffs = [a[k] - b[k] for k in a if k in b]
    mean, se = mean_se(diffs) if diffs else (float("nan"), None)
    return {"difference": mean, "se": se, "items": len(diffs)}


def grad_spikes(norms: list[float], factor: float, window: int, start: int = 5) -> list[int]:
    """1-based steps whose norm exceeds ``factor`` x the median of the previous ``window`` norms (from step
    ``start`` + 1 on, so that the median has some history)."""
    return [t + 1 for t in range(start, len(norms))
            if norms[t] > factor * statistics.median(norms[max(0, t - window):t])]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def curve(values: list[float], segments: int = SEGMENTS) -> list[float]:
    """Means of ``segments`` consecutive, nearly equal parts of ``values`` (fewer when there are fewer values)."""
    parts = min(segments, len(values))
    bounds = [round(i * len(values) / parts) for i in range(parts + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]


def estimate(result: dict) -> dict:
    return {"mean": result["mean"], "se": result["se"]}


def pal_claim(runs: dict) -> dict:
    with_, without = ("eve_pal_stage", "eve_nopal_stage")
    return {
        "val_caption_loss_after_stage2": {
            "with_pal": estimate(runs[f"{with_}2"]["val_caption_loss"]),
            "without_pal": estimate(runs[f"{without}2"]["val_caption_loss"]),
            "with_minus_without": paired(runs[f"{with_}2"]["val_caption_loss"]["per_image"],
                                         runs[f"{without}2"]["val_caption_loss"]["per_image"])},
        "accuracy_after_stage3": {
            "with_pal": estimate(runs[f"{with_}3"]["accuracy"]),
            "without_pal": estimate(runs[f"{without}3"]["accuracy"]),
            "with_minus_without": paired(runs[f"{with_}3"]["accuracy"]["per_question"],
                                         runs[f"{without}3"]["accuracy"]["per_question"])},
        "steps": [len(runs[f"{with_}{s}"]["history"]) for s in (1, 2, 3)],
        "seconds_per_step": {"with_pal": [runs[f"{with_}{s}"]["seconds_per_step"] for s in (1, 2, 3)],
                             "without_pal": [runs[f"{without}{s}"]["seconds_per_step"] for s in (1, 2, 3)]},
    }


def stability_claim(runs: dict, factor: float, window: int) -> dict:
    rows = {}
    for key, name in (("from_stage1", "eve_pal_stage2"), ("fresh", "eve_fresh_stage2")):
        history = runs[name]["history"]
        losses, norms = [h["loss"] for h in history], [h["grad_norm"] for h in history]
        tail = max(1, len(losses) // 10)
        spikes = grad_spikes(norms, factor, window)
        rows[key] = {"run": name, "first_loss": losses[0], "final_loss": sum(losses[-tail:]) / tail,
                     "final_loss_steps": tail, "val_caption_loss": estimate(runs[name]["val_caption_loss"]),
                     "grad_norm_median": statistics.median(norms), "grad_norm_max": max(norms),
                     "spikes": spikes, "spike_count": len(spikes), "loss_curve": curve(losses),
                     "grad_norm_curve": curve(norms)}
    rows["val_caption_loss_from_stage1_minus_fresh"] = paired(runs["eve_pal_stage2"]["val_caption_loss"]["per_image"],
                                                              runs["eve_fresh_stage2"]["val_caption_loss"]["per_image"])
    rows["spike_rule"] = {"factor": factor, "window": window, "from_step": 6}
    return rows


def text_claim(runs: dict) -> dict:
    """The LM's loss on held-out text: pretrained (stage 1 keeps it frozen), after stages 2 and 3."""
    before = runs["eve_pal_stage1"]
    if before["lm_trainable"]:
        raise ValueError("stage 1 trained the LM: its text loss is not the pretrained LM's")
    rows = {"pretrained": estimate(before["text_loss"])}
    for arm in ("pal", "nopal"):
        for stage in (2, 3):
            run = runs.get(f"eve_{arm}_stage{stage}")
            if run is not None:
                rows[f"{arm}_stage{stage}"] = {**estimate(run["text_loss"]), "minus_pretrained": paired(
                    run["text_loss"]["per_text"], before["text_loss"]["per_text"])}
    rows["texts"] = before["text_loss"]["texts"]
    return rows


def llava_claim(runs: dict) -> dict:
    eve, llava = runs["eve_pal_stage3"], runs["llava_short"]
    eve_steps = sum(len(runs[f"eve_pal_stage{s}"]["history"]) for s in (1, 2, 3))
    llava_steps = len(runs["llava_captions"]["history"]) + len(llava["history"])
    return {"eve": {**estimate(eve["accuracy"]), "steps": eve_steps, "trainable_stage3": eve["trainable"]},
            "llava": {**estimate(llava["accuracy"]), "steps": llava_steps, "trainable": llava["trainable"]},
            "eve_minus_llava": paired(eve["accuracy"]["per_question"], llava["accuracy"]["per_question"]),
            "examples": {"eve": eve["accuracy"]["examples"], "llava": llava["accuracy"]["examples"]}}


def compare(runs: dict, claims: list[str], factor: float, window: int) -> dict:
    """Each requested training claim from the runs it needs."""
    out = {}
    if "pal" in claims:
        out["pal"] = pal_claim(runs)
    if "stability" in claims:
        out["stability"] = stability_claim(runs, factor, window)
    if "text" in claims:
        out["text"] = text_claim(runs)
    if "llava" in claims:
        out["llava"] = llava_claim(runs)
    return out


# --- markdown --------------------------------------------------------------------------------------------------
def pm(value: dict | None, digits: int = 3, signed: bool = False) -> str:
    """'mean ± se' of an estimate or a paired difference."""
    if value is None:
        return "-"
    mean = value.get("mean", value.get("difference"))
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return f"{text} ± {value['se']:.{digits}f}" if value.get("se") is not None else text


def markdown(report: dict) -> str:
    claims, s = report["claims"], report["settings"]
    lines = [f"Command: `{report['command']}`", "",
             f"Shapes {s['scenes']} scenes ({report['data']}), stage steps {s['stage_steps']}, "
             f"batch {s['batch_size']}, "
             f"seed {s['seed']}. Baselines on the scored questions: majority answer "
             f"{report['baselines']['majority']:.1f} %, question-type prior "
             f"{report['baselines']['question_type'] or 0:.1f} %.", ""]
    if "pal" in claims:
        c = claims["pal"]
        loss, acc = c["val_caption_loss_after_stage2"], c["accuracy_after_stage3"]
        lines += ["## The PAL helps (stages 1+2+3, equal steps)", "",
                  "| | val caption loss after stage 2 | short-answer accuracy after stage 3 (%) "
                  "| s/step stages 1, 2, 3 |",
                  "|---|---|---|---|",
                  f"| with PAL | {pm(loss['with_pal'])} | {pm(acc['with_pal'], 1)} | "
                  f"{', '.join(f'{x:.2f}' for x in c['seconds_per_step']['with_pal'])} |",
                  f"| without PAL | {pm(loss['without_pal'])} | {pm(acc['without_pal'], 1)} | "
                  f"{', '.join(f'{x:.2f}' for x in c['seconds_per_step']['without_pal'])} |",
                  f"| with - without (paired) | {pm(loss['with_minus_without'], signed=True)} | "
                  f"{pm(acc['with_minus_without'], 1, signed=True)} | |", ""]
    if "stability" in claims:
        c = claims["stability"]
        rule = c["spike_rule"]
        lines += ["## Stage 1 stabilises stage 2", "",
                  f"Spikes: steps whose gradient norm (before clipping) exceeds {rule['factor']:g} x the median of the "
                  f"previous {rule['window']} steps, from step {rule['from_step']} on.", "",
                  "| stage 2 starts from | first loss | final loss | val caption loss | grad norm median / max | "
                  "spikes | loss curve (tenths) |", "|---|---|---|---|---|---|---|"]
        for key, label in (("from_stage1", "stage 1"), ("fresh", "a fresh PEL and PAL")):
            r = c[key]
            lines.append(f"| {label} | {r['first_loss']:.3f} | {r['final_loss']:.3f} | {pm(r['val_caption_loss'])} | "
                         f"{r['grad_norm_median']:.2f} / {r['grad_norm_max']:.2f} | {r['spike_count']} "
                         f"{r['spikes'][:8]} | {' '.join(f'{x:.2f}' for x in r['loss_curve'])} |")
        lines += ["", f"Val caption loss, from stage 1 - fresh (paired): "
                      f"{pm(c['val_caption_loss_from_stage1_minus_fresh'], signed=True)}", ""]
    if "speed" in claims:
        c = claims["speed"]
        lines += [f"## No encoder at inference: image file -> first answer token (torch threads {c['threads']}, "
                  f"{c['repeats']} interleaved repeats: median (min-max))", "",
                  f"| model | grid cells | visual vectors | front-end GFLOPs/image | latency s (batch 1) | "
                  f"images/s (batch {c['batch']}) |", "|---|---|---|---|---|---|"]
        for key, label in (("eve", "EVE (eve_patch, no encoder)"), ("llava", "DINOv2-S + MLP (llava)")):
            r = c["rows"][key]
            lat, thr = r["latency"], r["throughput"]
            lines.append(f"| {label} | {r['grid_cells']} | {r['visual_vectors']} | {r['front_end_gflops']:.3f} | "
                         f"{lat['median']:.3f} ({lat['min']:.3f}-{lat['max']:.3f}) | "
                         f"{thr['median']:.2f} ({thr['min']:.2f}-{thr['max']:.2f}) |")
        p = c["paired"]
        lat, thr = p["latency_llava_over_eve"], p["images_per_s_eve_over_llava"]
        lines += ["", f"Paired per repeat: LLaVA-style latency / EVE latency {lat['median']:.2f}x "
                      f"({lat['min']:.2f}-{lat['max']:.2f}); EVE images/s / LLaVA-style {thr['median']:.2f}x "
                      f"({thr['min']:.2f}-{thr['max']:.2f}).", ""]
    if "text" in claims:
        c = claims["text"]
        lines += [f"## What it costs the LM: loss per token on held-out text ({c['texts']} test captions, no image)",
                  "",
                  "| LM | text loss | - pretrained (paired) |", "|---|---|---|",
                  f"| pretrained (= after stage 1: LM frozen) | {pm(c['pretrained'])} | |"]
        for key, label in (("pal_stage2", "after stage 2, with PAL"), ("pal_stage3", "after stage 3, with PAL"),
                           ("nopal_stage2", "after stage 2, without PAL"),
                           ("nopal_stage3", "after stage 3, without PAL")):
            if key in c:
                lines.append(f"| {label} | {pm(c[key])} | {pm(c[key]['minus_pretrained'], signed=True)} |")
        lines.append("")
    if "llava" in claims:
        c = claims["llava"]
        lines += ["## Accuracy against the LLaVA-style bridge at equal steps (Shapes short answers)", "",
                  "| model | steps (captions + short answers) | accuracy (%) |", "|---|---|---|",
                  f"| EVE, stages 1+2+3 with PAL | {c['eve']['steps']} | {pm(c['eve'], 1)} |",
                  f"| LLaVA-style (frozen encoder's 2x2-pooled grid, frozen LM) | {c['llava']['steps']} | "
                  f"{pm(c['llava'], 1)} |",
                  f"| EVE - LLaVA-style (paired) | | {pm(c['eve_minus_llava'], 1, signed=True)} |", ""]
    if "flops" in claims:
        lines += ["## Closed-form FLOPs against torch's counter", "",
                  "| part | input | analytic GFLOPs | measured GFLOPs | measured / analytic | within 1 % |",
                  "|---|---|---|---|---|---|"]
        for r in claims["flops"]:
            lines.append(f"| {r['part']} | {r['size']} | {r['analytic'] / 1e9:.4f} | {r['measured'] / 1e9:.4f} | "
                         f"{r['ratio']:.4f} | {'yes' if r['within_1_percent'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)



# --- the curves ---------------------------------------------------------------------------------------------------
CURVES = {  # run -> label; the runs whose training curves the plot shows, when stored
    "eve_pal_stage2": "stage 2 after stage 1 (PAL)", "eve_fresh_stage2": "stage 2 from a fresh PEL + PAL",
    "eve_nopal_stage2": "stage 2 after stage 1, no PAL",
}


def plot(runs: dict, path) -> bool:
    """Stage 2's LM loss and pre-clipping gradient norm per step, from stage 1 and fresh (and without the PAL): the
    stability claim's curves. Writes ``path`` (PNG) and returns True when at least one of these runs is stored."""
    shown = {name: label for name, label in CURVES.items() if name in runs}
    if not shown:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, norm_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in shown.items():
        history = runs[name]["history"]
        steps = range(1, len(history) + 1)
        loss_ax.plot(steps, [h["loss"] for h in history], linewidth=1, label=label)
        norm_ax.plot(steps, [h["grad_norm"] for h in history], linewidth=1, label=label)
    loss_ax.set(xlabel="stage-2 step", ylabel="training loss (LM loss + PAL loss where on)", title="loss")
    norm_ax.set(xlabel="stage-2 step", ylabel="gradient norm before clipping", yscale="log", title="gradient norm")
    loss_ax.legend()
    fig.suptitle("EVE stage 2 (PEL + PAL + the whole LM train)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
