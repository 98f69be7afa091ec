"""The model card (README.md) of an exported run: what the model is, how it was trained, how it scored.

Everything comes from the run folder: ``recipe.yaml`` and ``meta.json`` of the checkpoint (the pair, the LM and
encoder identities, the trained tensors, the step), ``metrics.jsonl`` (the last validation scores logged in
training) and the ``eval-*.json`` reports ``vlbridge eval`` writes into the run folder. Nothing is invented: a
section whose source is missing says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlbridge.bridges.spec import BridgeSpec
from vlbridge.recipe import Recipe
from vlbridge.train.checkpoint import read_meta
from vlbridge.train.parameter_groups import group_of

EVAL_REPORTS = "eval-*.json"  # vlbridge eval's default report names in a run folder
METRICS = "metrics.jsonl"


def run_root(checkpoint: Path) -> Path:
    """The run folder of a checkpoint, where its metrics and eval reports are: ``RUN`` for ``RUN/final`` and
    ``RUN/checkpoint-N`` (the names the trainer gives), the checkpoint itself otherwise."""
    named = checkpoint.name == "final" or re.fullmatch(r"checkpoint-\d+", checkpoint.name)
    return checkpoint.parent if named else checkpoint


def validation_scores(root: Path) -> tuple[int, dict[str, float]] | None:
    """The last validation scores ``metrics.jsonl`` holds: (step, {metric: value}), or None."""
    path = root / METRICS
    if not path.is_file():
        return None
    last = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by an interrupted write says nothing
        scores = {k[len("val_"):]: v for k, v in record.items() if k.startswith("val_") and isinstance(v, (int, float))}
        if scores:
            last = (record.get("step"), scores)
    return last


def eval_reports(root: Path) -> list[dict]:
    """``vlbridge eval`` reports in the run folder: task, data, scores, limit (their official-format result files,
    ``*.results.json``, are skipped)."""
    found = []
    for path in sorted(root.glob(EVAL_REPORTS)):
        if path.name.endswith(".results.json"):
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(report, dict) and isinstance(report.get("scores"), dict):
            found.append({"file": path.name, "task": report.get("task"), "data": report.get("data"),
                          "scores": report["scores"], "limit": report.get("limit", 0)})
    return found


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _scores(scores: dict) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in scores.items() if isinstance(v, (int, float)))


def model_card(checkpoint: Path, recipe: Recipe, spec: BridgeSpec, huggingface: str, library: str = "vlbridge") -> str:
    """The README.md text. ``huggingface``: a paragraph on the Hugging Face class the folder loads as (usage), or
    on why none exists; ``library``: what loads the folder (the Hub's ``library_name``: transformers or vlbridge)."""
    meta = read_meta(checkpoint)
    m, t, d = recipe.model, recipe.train, recipe.data
    lm, encoder = meta.get("language_model") or {}, meta.get("vision_encoder")
    parameters = meta.get("parameters", {})
    count = sum(_product(shape) for shape in parameters.values())
    preset = f"preset `{m.bridge}`" if m.bridge else "no preset"
    lines = [
        "---",  # the Hugging Face Hub's model-card metadata
        f"library_name: {library}",
        "pipeline_tag: image-text-to-text",
        f"tags: [vlbridge, {spec.connector}, {spec.injection}{', ' + m.bridge if m.bridge else ''}]",
        "---",
        "",
        f"# {run_root(checkpoint).name}: a vlbridge vision-language model ({spec.pair})",
        "",
        "## What it is",
        "",
        f"- **Bridge**: connector `{spec.connector}` {json.dumps(spec.connector_options)} -> injection "
        f"`{spec.injection}` {json.dumps(spec.injection_options)} ({preset}"
        + (f", bridge options {json.dumps(m.bridge_options)}" if m.bridge_options else "")
        + (f"; features {spec.features}, pool {spec.pool}" if spec.features != "grid" or spec.pool != 1 else "") + ")",
        f"- **Vision encoder**: `{m.vision_encoder}`"
        + (f" (layer {encoder.get('layer')}, weights {encoder.get('weights')}, preprocessing "
           f"{encoder.get('preprocessing')})" if encoder else "") + ", frozen unless listed as trained below",
        f"- **Language model**: `{m.language_model}`"
        + (f" ({lm.get('architecture')}, width {lm.get('width')}, {lm.get('layers')} layers, vocabulary "
           f"{lm.get('vocab')})" if lm else "")
        + (f", first {m.language_model_layers} layers only" if m.language_model_layers else ""),
        f"- **Trained tensors**: {len(parameters)} tensors, {count:,} parameters"
        + (f"; LoRA rank {m.lora_rank} (alpha {m.lora_alpha}) on {', '.join(m.lora_targets)}" if m.lora_rank else ""),
        f"- **Prompt layout**: chat format `{m.chat_format}`"
        + (f", system prompt {json.dumps(m.system_prompt)}" if m.system_prompt is not None else
           ", the template's default system prompt"),
        "",
        "## How it was trained",
        "",
        f"- **Steps**: {meta.get('step', 'unknown (no step recorded in the checkpoint)')} of {t.steps}, "
        f"batch {t.batch_size} x {t.grad_accum} accumulation, AdamW lr {t.lr} (warm-up {t.warmup_steps} steps, "
        f"cosine to {t.min_lr_ratio} x lr), weight decay {t.weight_decay}, precision {t.precision}, seed {t.seed}",
        f"- **Trained groups**: {_groups(parameters)}; objective `{t.objective}`",
        f"- **Data**: {d.format} {json.dumps(d.train)} (validation {json.dumps(d.val)})",
    ]
    if m.init_from:
        lines.append(f"- **Initialised from**: `{m.init_from}`")
    lines += ["- **Recipe**: `recipe.yaml` in this folder (every setting, resolved)", "", "## Evaluation", ""]
    root = run_root(checkpoint)
    validation = validation_scores(root)
    reports = eval_reports(root)
    if validation is not None:
        step, scores = validation
        lines.append(f"- Validation during training (step {step}, {t.eval_samples or 'all'} samples of "
                     f"{json.dumps(d.val)}): {_scores(scores)}")
    for report in reports:
        limit = f", first {report['limit']} samples" if report["limit"] else ""
        lines.append(f"- `vlbridge eval` {report['task'] or 'llava-json'} on {json.dumps(report['data'])}{limit}: "
                     f"{_scores(report['scores'])} ({report['file']})")
    if validation is None and not reports:
        lines.append("No evaluation numbers in the run folder (no validation scores in metrics.jsonl, no eval-*.json "
                     "report).")
    lines += ["", "## Hugging Face", "", huggingface.strip(), ""]
    return "\n".join(lines)


def _groups(parameters: dict[str, list[int]]) -> str:
    """'bridge (6,272), lora (4,096)': the parameter groups the checkpoint's tensors belong to."""
    counts: dict[str, int] = {}
    for name, shape in parameters.items():
        counts[group_of(name)] = counts.get(group_of(name), 0) + _product(shape)
    return ", ".join(f"{group} ({n:,} parameters)" for group, n in counts.items()) or "none recorded"


def _product(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
