"""The user cache folder where converted weights live, and atomic writes into it.

Converting a packaged checkpoint (GGUF de-quantisation, ONNX extraction) takes seconds to a minute; it
happens once, and every later load reads a plain Hugging Face folder (safetensors) from here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$VLBRIDGE_CACHE`` if set, else ``$XDG_CACHE_HOME/vlbridge``, else ``~/.cache/vlbridge``."""
    explicit = os.environ.get("VLBRIDGE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vlbridge"


def build_folder_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create ``target`` by calling ``build(tmp)`` on a fresh temporary folder, then renaming it.

    The temporary folder sits next to ``target`` (same file system, so the rename is atomic): an
    interrupted or failed build leaves no half-written ``target`` behind, and a reader never sees one.
    If another process finished the same folder first, its result is kept and ours discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the cache entry gets normal permissions
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a real failure, not a concurrent build that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_file_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Write ``target`` through ``write(tmp_path)`` on a temporary file beside it, then replace it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
