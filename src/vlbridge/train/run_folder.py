"""A training run's output folder: what vlbridge writes there, and the checks before a run starts writing.

A new run into a folder that holds another run would replace that run's checkpoints and final weights and
leave its ``skipped_records.json`` and evaluation reports beside the new run's, where they would be taken for
the new run's. So a new run is refused there unless the run is continued (``--resume``) or replaced on request
(``--overwrite``, ``train(..., overwrite=True)``), and replacing removes only the files vlbridge writes.
Everything is checked before the model is built, so a bad folder costs no model load and no training.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from vlbridge.errors import ConfigError

# what a run writes (trainer, checkpoints) and what `vlbridge eval` writes beside it by default
RUN_FILES = ("recipe.yaml", "report.json", "metrics.jsonl", "predictions.json", "skipped_records.json")
RUN_FOLDERS = ("final", "tensorboard")
# step checkpoints; evaluation reports and their official result files; the temporary folders of interrupted saves
RUN_PATTERNS = (re.compile(r"checkpoint-\d+"), re.compile(r"eval-.*\.json"), re.compile(r"\.(final|checkpoint-\d+)\..*"))


def run_files(folder: Path) -> list[Path]:
    """The files and folders in ``folder`` that vlbridge wrote (a run's, or evaluations of it), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        name = path.name
        if (name in RUN_FILES and path.is_file()) or (name in RUN_FOLDERS and path.is_dir()) \
                or any(p.fullmatch(name) for p in RUN_PATTERNS):
            found.append(path)
    return sorted(found, key=lambda p: p.name)


def describe(paths: list[Path]) -> str:
    return ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths)


def check_writable(folder: Path, option: str) -> None:
    """Create and remove a file in ``folder``: the only sure test (permissions, read-only mounts, quotas, ACLs)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".vlbridge-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"{option} {folder}: cannot write there ({error}); choose a folder this user can "
                          "write") from None


def prepare_new_run(folder: Path, overwrite: bool) -> list[Path]:
    """Check ``folder`` can take a new run: create it, check it is writable and holds no other run (unless
    ``overwrite``). Returns the earlier run's files to remove (before any new file is written). Every process
    calls it; none writes anything but a removed probe file, so all decide the same."""
    option = "train.output_dir"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file, not a folder; choose another train.output_dir")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{option} {folder}: cannot create the folder ({error}); choose another "
                          "train.output_dir") from None
    check_writable(folder, option)
    earlier = run_files(folder)
    if earlier and not overwrite:
        raise ConfigError(
            f"{option} {folder} already holds another run ({describe(earlier)}): a new run there would replace its "
            f"checkpoints and weights and mix its files with the new ones. Continue it with "
            f"`vlbridge train --resume {folder}`, replace it with --overwrite (Python: train(..., overwrite=True); "
            "removes only these files), or choose another train.output_dir")
    return earlier


def prepare_resumed_run(folder: Path) -> None:
    """The folder of a run to continue must exist and be writable (every process writes into its checkpoints)."""
    if not folder.is_dir():
        raise ConfigError(f"--resume {folder}: {'a file, not a run folder' if folder.exists() else 'no such folder'}")
    check_writable(folder, "--resume")


def remove_run_files(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
