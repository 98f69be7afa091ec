"""The 2017 official VQA evaluation as shipped in the ``salesforce-lavis`` package (test helper).

``lavis/common/vqa_tools/{vqa,vqa_eval}.py`` are loaded from the installed files without importing
the ``lavis`` package (whose ``__init__`` needs torch, omegaconf, ...). Install it with
``pip install --no-deps salesforce-lavis``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def _tools_dir() -> Path | None:
    spec = importlib.util.find_spec("lavis")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "common" / "vqa_tools"
    return folder if (folder / "vqa_eval.py").exists() else None


def available() -> bool:
    return _tools_dir() is not None


def load(name: str) -> ModuleType:
    """``vqa`` (the VQA API) or ``vqa_eval`` (VQAEval) module of LAVIS."""
    path = _tools_dir() / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lavis_reference_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skip_without_lavis():
    """Skip marker for tests that run LAVIS' VQA evaluation; with VLBRIDGE_REQUIRE_PARITY=1 (CI) they
    run and fail instead of skipping when it is missing."""
    import os

    import pytest

    return pytest.mark.skipif(not available() and not os.environ.get("VLBRIDGE_REQUIRE_PARITY"),
                              reason="needs salesforce-lavis (pip install --no-deps salesforce-lavis)")
