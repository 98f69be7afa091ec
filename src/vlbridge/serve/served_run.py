"""A trained run as the browser demo serves it: its model and name, and one answer with its latency and, for
a MemVP run, the knowledge-locating heat map over the image."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlbridge.analysis import locate, save_overlay
from vlbridge.ask import ask, choose_tokens, question_batch
from vlbridge.bridges.injections.memory_space import MemorySpaceInjection
from vlbridge.build import Built
from vlbridge.eval.generate_answers import GenerationSettings
from vlbridge.runs import load_run


@dataclass
class ServedRun:
    name: str  # how the page labels the run
    folder: Path  # the run or checkpoint folder it was loaded from
    built: Built

    @property
    def pair(self) -> str:
        """``mlp -> memory_space``."""
        return self.built.spec.pair

    @property
    def locates(self) -> bool:
        """Whether the run can draw MemVP's heat map: memory-space injection (keys are visual vectors) over the
        image's grid features (a pooled vector has no place in the image)."""
        bridge = self.built.model.bridge
        return isinstance(bridge.injection, MemorySpaceInjection) and bridge.features == "grid"


@dataclass(frozen=True)
class RunAnswer:
    text: str
    seconds: float  # wall time of the answer alone (image loading, encoding, generation), not of the heat map
    heat_map: Path | None  # PNG of the heat map (MemVP runs), else None


def load_served_runs(folders: Sequence[str | Path]) -> list[ServedRun]:
    """Each run folder's model in evaluation mode, named after its folder (the whole path as given when two
    folders share a name). A folder that is not a run stops here with an error naming it."""
    folders = [Path(f) for f in folders]
    names = [f.resolve().name for f in folders]
    runs = []
    for folder, name in zip(folders, names):
        built, _ = load_run(folder)
        built.model.eval()
        runs.append(ServedRun(str(folder) if names.count(name) > 1 else name, folder, built))
    return runs


def answer(run: ServedRun, image_path: str | Path, image, question: str, settings: GenerationSettings,
           heat_map: str | Path, words: list[str] | None = None) -> RunAnswer:
    """``run``'s answer to ``question`` about the image file ``image_path`` (``image``: the same image already
    loaded as RGB, drawn under the heat map), and for a run that :attr:`~ServedRun.locates`, the heat map of
    ``words`` of the question (default: the mean over all its words) written to ``heat_map``."""
    started = time.perf_counter()
    text = ask(run.built, image_path, question, settings, source="the uploaded image")
    seconds = time.perf_counter() - started
    if not run.locates:
        return RunAnswer(text, seconds, None)
    batch, columns = question_batch(run.built, image_path, question)
    positions, labels = choose_tokens(run.built.tokenizer, batch, columns, words, field="words")
    responses = locate(run.built.model, batch, positions)  # (T, n)
    if not words:  # one panel for the whole question: a panel per token would not fit beside the other runs
        responses, labels = responses.mean(0, keepdim=True), ["mean over the question's words"]
    return RunAnswer(text, seconds, save_overlay(image, responses, labels, heat_map))
