"""The evaluation report: scores with everything needed to reproduce them, written as JSON.

One JSON object per run (``task``, ``prompt``, ``prompt_source``, ``metric``, ``scores``, ``generation``,
``data``, ``model``, ``limit``, ``skipped_records``, ``versions``, ``results_file``, ``predictions``) and, for
captions and VQA (and a LLaVA JSON file's short answers), the predictions again in the official result format
next to it (``<report>.results.json``), ready for ``vlbridge score`` or an evaluation server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from vlbridge.data.llava_json import write_json_atomic
from vlbridge.datasets.results import write_caption_results, write_vqa_results
from vlbridge.errors import ConfigError
from vlbridge.eval.result import TaskResult
from vlbridge.precision import resolve as resolve_precision
from vlbridge.train.checkpoint import resolve_checkpoint
from vlbridge.train.identity import library_versions, model_identity

RESULT_WRITERS = {"caption": write_caption_results, "vqa": write_vqa_results}


def model_description(built, recipe, *, run: str | Path | None = None, recipe_file: str | Path | None = None) -> dict:
    """Which model was evaluated: the run and checkpoint (or the untrained recipe), the bridge, the LM and
    encoder with fingerprints of their pretrained weights (as checkpoints record them), and the precision the
    frozen parts ran in (``model.precision`` resolved on this machine, as :func:`vlbridge.runs.load_model` applied it)."""
    model = built.model
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    m = recipe.model
    return {
        "run": str(run) if run is not None else None,
        "checkpoint": str(resolve_checkpoint(run)) if run is not None else None,
        "recipe": str(recipe_file) if recipe_file is not None else None,
        "trained": run is not None,
        "bridge": m.bridge,
        "bridge_options": m.bridge_options,
        "spec": built.spec.to_dict(),  # the connector and injection with their options
        "language_model": m.language_model,
        "vision_encoder": m.vision_encoder,
        "vision_layer": model.vision_encoder.layer if model.vision_encoder is not None else None,  # the one used
        "lora_rank": m.lora_rank,
        "chat_format": m.chat_format,
        "precision": resolve_precision(m.precision, recipe.train.precision).to_meta(),
        "identity": model_identity(model, trained),
    }


def build_report(result: TaskResult, *, data: dict[str, Any], model: dict[str, Any], generation: dict | None,
                 limit: int = 0, prompt_source: str | None = None,
                 skipped_records: list[dict] | None = None) -> dict[str, Any]:
    """The report's fields (module docstring); ``prompt_source`` says where the prompt came from (--prompt, the
    run's training prompt, the task's standard one), ``skipped_records`` lists the bad records left out
    (``data.on_bad_record=skip``)."""
    return {
        "task": result.task,
        "prompt": result.prompt,
        "prompt_source": prompt_source,
        "metric": result.metric,
        "scores": result.scores,
        "generation": generation,
        "data": data,
        "model": model,
        "limit": limit,
        "skipped_records": list(skipped_records or []),
        "versions": library_versions(),
        "results_file": None,
        "predictions": result.predictions,
    }


def results_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.results.json")


def check_writable(out: str | Path) -> None:
    """Fail before evaluating when the report (and its results file beside it) cannot be written to ``out``:
    its folder is created if missing, then a file is created in it and removed."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"cannot write the report to {out}: it is a folder; give a file name (--out FILE.json)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"cannot write the report to {out}: {error.strerror or error} ({out.parent}); "
                          "choose another place with --out") from None


def write_report(report: dict[str, Any], result: TaskResult, out: str | Path) -> Path | None:
    """Write the report to ``out`` and, when the task has one, the official result file beside it
    (returned)."""
    out = Path(out)
    path = None
    if result.official_format is not None:
        path = results_path(out)
        RESULT_WRITERS[result.official_format](result.official, path)
        report = {**report, "results_file": path.name, "results_format": result.official_format}
    write_json_atomic(report, out, indent=1)
    return path
