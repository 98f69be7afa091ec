"""The full training state, checkpointed atomically, so a killed run continues exactly where it was.

A step checkpoint ``checkpoint-N/`` is a bridge-only checkpoint (:mod:`vlbridge.train.checkpoint`:
trained tensors, recipe, identity) plus:

- ``training_state.safetensors``: the optimizer's tensors by parameter name
  (``optimizer/exp_avg/<name>``, ``optimizer/exp_avg_sq/<name>``, ``optimizer/step/<name>``) and the
  data order's generator state (``data_order/generator``);
- ``training_state.json``: step, optimizer hyper-parameters, LR-scheduler state, position in the data
  order (epoch, offset), logged history and metric lines, records skipped so far, world size;
- ``rng-<rank>.safetensors`` / ``rng-<rank>.json``: each process's torch (CPU, CUDA) generator states
  and Python's and NumPy's, so dropout draws the same masks after a resume.

Nothing here is pickled: resuming reads safetensors and JSON only. The folder is written under a
temporary name and renamed when complete; only the newest ``train.keep_checkpoints`` are kept. A checkpoint
that was complete but is damaged since (a file truncated, overwritten or deleted; NaN in its tensors) is
skipped on resume for the newest one that reads back whole (:func:`resumable_checkpoint`).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vlbridge.errors import ConfigError, DataError
from vlbridge.train.checkpoint import (META, WEIGHTS, commit_folder, has_identity, read_json, read_meta, read_state,
                                       read_tensors, write_checkpoint)
from vlbridge.train.distributed import gather, optimizer_state, trained_weights

STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
PREFIX = "checkpoint-"


@dataclass
class TrainingState:
    folder: Path
    step: int
    world_size: int
    optimizer: dict  # name-keyed, as torch.distributed.checkpoint.state_dict gives it
    scheduler: dict  # LRScheduler.state_dict()
    data_order: dict  # DataOrder.state_dict()
    history: list[dict]  # per-step records so far
    metric_lines: list[dict]  # metrics.jsonl lines so far (it is rewritten to exactly these on resume)
    bad_records: list[dict]  # BadRecords entries so far
    rng: tuple[dict, dict]  # this process's (tensors, JSON) generator states


# --- random number generators -------------------------------------------------------------------
def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}  # (5056,) uint8
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), position, has_gauss, cached]}
    return tensors, plain


def restore_rng(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))


def check_rng(tensors: dict[str, torch.Tensor], plain: dict, files: tuple[Path, Path]) -> None:
    """Set the states on fresh generators, leaving the process's alone: a state of the wrong structure is a
    :class:`DataError` naming its file (``files``: the safetensors and the JSON file) before anything is restored."""
    try:
        torch.Generator().set_state(tensors["torch"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise DataError(f"the torch generator state is missing or malformed ({error}): the checkpoint is damaged",
                        file=files[0]) from None
    try:
        version, internal, gauss = plain["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        kind, keys, position, has_gauss, cached = plain["numpy"]
        np.random.RandomState().set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise DataError(f"the Python or NumPy generator state is missing or malformed ({error!r}): the checkpoint is "
                        "damaged", file=files[1]) from None


# --- optimizer state <-> safetensors + JSON --------------------------------------------------------
def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{key}/{name}"] = value.detach().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[str, dict] = {name: dict(values) for name, values in plain["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, stat, name = key.split("/", 2)
            state.setdefault(name, {})[stat] = value
    return {"state": state, "param_groups": plain["param_groups"]}


# --- folders ---------------------------------------------------------------------------------------
def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete step checkpoints of a run, oldest first (a folder only gets its name once complete)."""
    found = []
    for path in Path(run_dir).glob(f"{PREFIX}*"):
        number = path.name[len(PREFIX):]
        if number.isdigit() and (path / STATE_JSON).is_file():
            found.append((int(number), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_partial(run_dir: Path) -> None:
    """Temporary folders of saves that were interrupted: step checkpoints being written (``.checkpoint-N.tmp``) and
    the final weights' (``.final.<random>``, or ``.final.old`` when a kill came between the two renames of
    :func:`~vlbridge.train.checkpoint.commit_folder`)."""
    for pattern in (f".{PREFIX}*.tmp", f".{PREFIX}*.old", ".final.*"):
        for path in Path(run_dir).glob(pattern):
            shutil.rmtree(path, ignore_errors=True)


def prune(run_dir: Path, keep: int) -> None:
    if keep > 0:
        for _, path in step_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


# --- save and load ---------------------------------------------------------------------------------
def save_training_checkpoint(run_dir: Path, step: int, *, accelerator, wrapped, model, optimizer, scheduler,
                             order, recipe, identity: dict, history: list[dict], metric_lines: list[dict],
                             bad_records, keep: int) -> Path:
    """Write ``run_dir/checkpoint-<step>`` atomically; every process must call it (FSDP gathers)."""
    weights = trained_weights(accelerator, wrapped, model)
    optim = optimizer_state(wrapped, optimizer)
    skipped = gather(accelerator, bad_records.state_dict())
    folder, tmp = run_dir / f"{PREFIX}{step}", run_dir / f".{PREFIX}{step}.tmp"
    rank, main = accelerator.process_index, accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_checkpoint(tmp, recipe, weights, identity, {"step": step})
        tensors, optim_plain = flatten_optimizer(optim)
        order_state = order.state_dict()
        tensors["data_order/generator"] = order_state.pop("generator")
        save_file(tensors, str(tmp / STATE_TENSORS))
        seen, unique = set(), []
        for entry in skipped:
            if entry["record"] not in seen:
                seen.add(entry["record"])
                unique.append(entry)
        plain = {"step": step, "world_size": accelerator.num_processes, "optimizer": optim_plain,
                 "scheduler": scheduler.state_dict(), "data_order": order_state, "history": history,
                 "metric_lines": metric_lines, "bad_records": unique}
        (tmp / STATE_JSON).write_text(json.dumps(plain))
    accelerator.wait_for_everyone()
    rng_tensors, rng_plain = capture_rng()
    save_file(rng_tensors, str(tmp / f"rng-{rank}.safetensors"))
    (tmp / f"rng-{rank}.json").write_text(json.dumps(rng_plain))
    accelerator.wait_for_everyone()
    if main:
        commit_folder(tmp, folder)
        prune(run_dir, keep)
    accelerator.wait_for_everyone()
    return folder


def load_training_state(folder: Path, rank: int, world_size: int) -> TrainingState:
    """Read a step checkpoint back whole: every file every process will read (the trained tensors, the training
    state, each process's random state), so all processes accept or reject the same checkpoint. A damaged file
    is a :class:`DataError` naming it; a checkpoint of another number of processes a :class:`ConfigError`."""
    folder = Path(folder)
    plain = read_json(folder / STATE_JSON)
    try:
        saved_world = plain["world_size"]
    except (KeyError, TypeError):
        raise DataError("field 'world_size' is missing: the file is damaged", file=folder / STATE_JSON) from None
    if saved_world != world_size:
        raise ConfigError(f"{folder} was saved by {saved_world} processes and this run has {world_size}: "
                          "resume with the same number of processes (data shards and random states are per process)")
    if not (folder / META).is_file() or not (folder / WEIGHTS).is_file():
        raise DataError(f"{(folder / META).name if not (folder / META).is_file() else WEIGHTS} is missing: the "
                        "checkpoint is damaged", file=folder)
    meta = read_meta(folder)
    if not has_identity(meta):  # written by the trainer, it always has one
        raise DataError("records no language model or vision encoder: the file is damaged", file=folder / META)
    read_state(folder, meta)  # readable, and every value finite
    tensors = read_tensors(folder / STATE_TENSORS)
    rng = None
    for process in range(world_size):
        rng_file = folder / f"rng-{process}.safetensors"
        if not rng_file.is_file():
            raise DataError(f"no random state for process {process} ({rng_file.name} missing): the checkpoint is "
                            "damaged", file=folder)
        states = (read_tensors(rng_file), read_json(folder / f"rng-{process}.json"))
        check_rng(*states, (rng_file, folder / f"rng-{process}.json"))
        if process == rank:
            rng = states
    try:
        return TrainingState(
            folder=folder,
            step=plain["step"],
            world_size=saved_world,
            optimizer=unflatten_optimizer(tensors, plain["optimizer"]),
            scheduler=plain["scheduler"],
            data_order=plain["data_order"] | {"generator": tensors["data_order/generator"]},
            history=plain["history"],
            metric_lines=plain["metric_lines"],
            bad_records=plain["bad_records"],
            rng=rng,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"field or tensor {error} is missing or malformed: the checkpoint is damaged",
                        file=folder / STATE_JSON) from None


def resumable_checkpoint(run_dir: Path, rank: int, world_size: int, log=print) -> tuple[TrainingState | None,
                                                                                         list[Path]]:
    """The newest step checkpoint of ``run_dir`` that reads back whole, and the damaged ones newer than it (the
    resumed run writes them again). ``(None, [])`` if the run has no step checkpoint; an error naming each
    damaged file if none is readable."""
    damaged, reasons = [], []
    for _, folder in reversed(step_checkpoints(run_dir)):
        try:
            state = load_training_state(folder, rank, world_size)
        except DataError as error:
            damaged.append(folder)
            reasons.append(str(error))
            log(f"cannot resume from {folder.name}: {error}")
            continue
        if damaged:
            log(f"resuming from {folder.name}, the newest complete checkpoint, instead of "
                f"{', '.join(p.name for p in damaged)}")
        return state, damaged
    if damaged:
        raise DataError(f"--resume {run_dir}: no checkpoint of the run can be resumed from, every one is damaged:"
                        "\n  - " + "\n  - ".join(reasons) + "\nstart the run again with --overwrite")
    return None, []


# --- which recipe changes a resume accepts ---------------------------------------------------------
RESUME_MAY_CHANGE = ("train.save_every", "train.keep_checkpoints", "train.threads", "train.output_dir")
"""Keys that do not change what the run computes; any other difference makes it another run."""


def _flat(recipe: dict) -> dict:
    return {f"{section}.{key}": value for section, values in recipe.items() for key, value in values.items()}


def resume_conflicts(saved: dict, recipe: dict) -> list[str]:
    """``key: saved -> new`` for each recipe key that differs from the run's and may not."""
    a, b = _flat(saved), _flat(recipe)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUME_MAY_CHANGE]
