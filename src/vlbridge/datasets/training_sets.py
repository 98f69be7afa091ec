"""Which reader turns a recipe's ``data`` section into training and validation samples: one small registry.

``data.format`` names the layout of ``data.train`` and ``data.val``:

- ``llava``: each is a LLaVA conversation JSON file (or a list of them, read in order into one set) (:func:`vlbridge.data.llava_json.read_llava_json`), its
  image paths relative to ``data.image_root``; every sample keeps its own prompt and answer.
- ``scienceqa``: each is a ScienceQA folder (``problems.json``, ``pid_splits.json``, ``images/``) read by
  :func:`vlbridge.datasets.scienceqa.read_scienceqa`; ``data.train_split`` / ``data.val_split`` pick the
  splits, ``data.scienceqa_captions`` adds ``captions.json``'s image captions to the context. Each problem
  becomes the QCM-A sample of MemVP's code: the prompt ``Question: ..\\nContext: ..\\nOptions: (A) ..
  (B) ..\\nResponse:`` and the supervised target ``The answer is X.`` (:mod:`vlbridge.prompts.scienceqa`).

A field read only by another format must keep its default: a ``data.train_split`` given to LLaVA JSON data
(or an ``image_root`` to a ScienceQA folder, whose images are ``ROOT/images/SPLIT/PID/``) would otherwise be
silently ignored. Both readers honour ``data.on_bad_record`` (raise, or skip and list the record) and
``data.allow_outside_images`` (image paths that leave the image folder are bad records unless it is true).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vlbridge.data.llava_json import SampleList, read_llava_json
from vlbridge.datasets.json_io import load_json
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.errors import ConfigError

if TYPE_CHECKING:
    from vlbridge.recipe import DataConfig

PARTS = ("train", "val")


def _read_llava(data: "DataConfig", part: str) -> SampleList:
    """One LLaVA JSON file, or a list of them read in order into one set (e.g. captions and short answers)."""
    files = getattr(data, part)
    if isinstance(files, str):
        return read_llava_json(files, image_root=data.image_root, on_error=data.on_bad_record,
                               allow_outside_images=data.allow_outside_images)
    if not files or not all(isinstance(file, str) for file in files):
        raise ConfigError(f"data.{part}={files!r}: give a LLaVA JSON file or a non-empty list of them")
    samples = SampleList()
    for file in files:
        part_samples = read_llava_json(file, image_root=data.image_root, on_error=data.on_bad_record,
                                       allow_outside_images=data.allow_outside_images)
        samples.extend(part_samples)
        samples.skipped.extend(part_samples.skipped)
    return samples


def _read_scienceqa(data: "DataConfig", part: str) -> SampleList:
    if not isinstance(getattr(data, part), str):
        raise ConfigError(f"data.{part}: data.format=scienceqa reads one ScienceQA folder, not a list")
    root, split = Path(getattr(data, part)), getattr(data, f"{part}_split")
    if not root.is_dir():
        found = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"data.{part}={str(root)!r} {found}; data.format=scienceqa reads a ScienceQA folder "
                          "(problems.json, pid_splits.json, images/); LLaVA JSON files need data.format=llava")
    splits_file = root / "pid_splits.json"
    splits = load_json(splits_file, dict)  # a missing or broken file: a DataError naming it
    if split not in splits:
        raise ConfigError(f"data.{part}_split={split!r} is not a split of {splits_file}; it has {sorted(splits)}")
    return read_scienceqa(root, split, use_captions=data.scienceqa_captions, on_error=data.on_bad_record,
                          allow_outside_images=data.allow_outside_images)


TRAINING_READERS: dict[str, tuple[Callable[["DataConfig", str], SampleList], tuple[str, ...]]] = {
    "llava": (_read_llava, ("image_root",)),
    "scienceqa": (_read_scienceqa, ("train_split", "val_split", "scienceqa_captions")),
}
"""``data.format`` -> (reader of ``data.train`` / ``data.val``, the ``data`` fields only this format reads)."""


def check_data_format(data: "DataConfig") -> None:
    """``data.format`` is registered, and no field of another format was moved from its default."""
    if data.format not in TRAINING_READERS:
        raise ConfigError(f"unknown data.format {data.format!r}; valid: {sorted(TRAINING_READERS)}")
    defaults = type(data)()
    own = set(TRAINING_READERS[data.format][1])
    stray = [name for fmt, (_, names) in TRAINING_READERS.items() if fmt != data.format for name in names
             if name not in own and getattr(data, name) != getattr(defaults, name)]
    if stray:
        raise ConfigError(f"data.format={data.format} does not read {', '.join(f'data.{n}' for n in stray)}; leave "
                          f"{'it' if len(stray) == 1 else 'them'} at the default or change data.format")


def read_training_set(data: "DataConfig", part: str) -> SampleList:
    """The samples of ``data.train`` (``part="train"``) or ``data.val`` (``part="val"``), read as ``data.format``
    says; records skipped under ``data.on_bad_record=skip`` are in the result's ``skipped``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    check_data_format(data)
    reader, _ = TRAINING_READERS[data.format]
    return reader(data, part)


def describe(data: "DataConfig", part: str) -> str:
    """Where ``part``'s samples come from, for messages: the file, or the folder and its split."""
    where = getattr(data, part)
    return f"{where} (split {getattr(data, f'{part}_split')})" if data.format == "scienceqa" else str(where)
