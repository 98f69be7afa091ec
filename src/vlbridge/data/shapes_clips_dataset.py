"""Build the Shapes clips dataset: clips, their captions and questions for train/val/test from one seed.

The rules are the scenes' (:mod:`vlbridge.data.shapes_dataset`): clip ``i`` is drawn from its own
``random.Random`` seeded with ``(seed, i)``; clips ``0 .. n_train-1`` are train, then val, then test; a val/test
clip whose content already occurs earlier is redrawn; for each question type one question is picked whose answer
was picked least often so far in the split, and types are rotated the same way.

Samples are clips in the LLaVA JSON sense (:mod:`vlbridge.data.llava_json`): the frames' files in order under
``image``, one ``<image>`` placeholder for the clip. Tasks: ``clip_short`` (short answers, scored like ``short``)
and ``clip_caption`` (one reference caption per clip).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.data.shapes_clip_questions import CLIP_QUESTION_TYPES, all_clip_questions, clip_caption
from vlbridge.data.shapes_clips import Clip, sample_clip
from vlbridge.data.shapes_dataset import (REDRAW_ATTEMPTS, SPLITS, VQA_ANSWERS_PER_QUESTION, Balancer, majority,
                                          pick_questions, split_sizes)
from vlbridge.data.shapes_questions import Question
from vlbridge.errors import ConfigError

CLIP_TASKS = ("clip_short", "clip_caption")
CLIP_CAPTION_PROMPT = "Describe the clip briefly."
MAX_FRAMES = 16


@dataclass(frozen=True)
class ClipsConfig:
    """What to generate. Equal configs give byte-identical clips."""

    n: int = 200
    """Number of clips over all splits."""
    num_frames: int = 4
    """Frames per clip."""
    seed: int = 0
    """Seed of the clips (the same seed as the scenes gives different content: another stream)."""
    image_size: int = 224
    """Side of the square frames in pixels."""
    train_fraction: float = 0.8
    """Share of clips in train."""
    val_fraction: float = 0.1
    """Share of clips in val; test gets the rest."""
    questions_per_clip: int = 3
    """Short-answer questions per clip (each of a different type)."""
    max_objects: int = 3
    """Clips hold 1..max_objects shapes (at most 4: moving shapes need free cells)."""

    def __post_init__(self) -> None:
        if self.n < len(SPLITS):
            raise ConfigError(f"shapes clips: n must be at least {len(SPLITS)} (one clip per split), got {self.n}")
        if not 2 <= self.num_frames <= MAX_FRAMES:
            raise ConfigError(f"shapes clips: num_frames must be in 2..{MAX_FRAMES}, got {self.num_frames}")
        if not (0 < self.train_fraction and 0 < self.val_fraction and self.train_fraction + self.val_fraction < 1):
            raise ConfigError("shapes clips: need 0 < train_fraction, 0 < val_fraction, train + val < 1")
        if not 1 <= self.max_objects <= 4:
            raise ConfigError(f"shapes clips: max_objects must be in 1..4, got {self.max_objects}")
        if self.image_size < 32:
            raise ConfigError(f"shapes clips: image_size must be at least 32, got {self.image_size}")
        if self.questions_per_clip < 0:
            raise ConfigError("shapes clips: questions per clip cannot be negative")

    def split_sizes(self) -> dict[str, int]:
        """Clips per split; every split gets at least one."""
        return split_sizes(self.n, self.train_fraction, self.val_fraction)


@dataclass(frozen=True)
class AnnotatedClip:
    """A clip with everything said about it."""

    clip: Clip
    split: str
    index: int
    caption: str
    short: tuple[Question, ...]


@dataclass
class ClipsDataset:
    """The generated clips (in memory; :func:`vlbridge.data.shapes_export.export_shapes` writes them to files)."""

    config: ClipsConfig
    clips: list[AnnotatedClip]
    redraw_failures: int  # val/test clips whose content could not be made new

    def split(self, name: str) -> list[AnnotatedClip]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; valid: {list(SPLITS)}")
        return [c for c in self.clips if c.split == name]

    def samples(self, split: str, task: str, frame_dir: str | Path) -> list[Sample]:
        """The split's samples of one task, frames expected at ``frame_dir/<clip id>_f<t>.png``."""
        if task not in CLIP_TASKS:
            raise ConfigError(f"unknown clip task {task!r}; valid: {list(CLIP_TASKS)}")
        out = []
        for item in self.split(split):
            frames = tuple(Path(frame_dir) / frame_file(item.clip.id, t) for t in range(item.clip.num_frames))
            if task == "clip_caption":
                out.append(_sample(f"{item.clip.id}_caption", frames, CLIP_CAPTION_PROMPT, item.caption,
                                   {"task": "caption", "answers": [item.caption]}))
            for k, q in enumerate(item.short if task == "clip_short" else ()):
                meta = {"task": "short", "answers": [q.answer] * VQA_ANSWERS_PER_QUESTION,
                        "question_type": q.question_type, "answer_type": q.answer_type, "local": q.local}
                out.append(_sample(f"{item.clip.id}_q{k}", frames, q.text, q.answer, meta))
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        return {"clips": {s: len(self.split(s)) for s in SPLITS},
                "clip_short": {s: sum(len(c.short) for c in self.split(s)) for s in SPLITS},
                "clip_caption": {s: len(self.split(s)) for s in SPLITS}}

    def majority_baselines(self) -> dict[str, Any]:
        """Accuracy of always giving each question type's most frequent answer, per split."""
        result: dict[str, Any] = {}
        for split in SPLITS:
            by_type: dict[str, Counter] = defaultdict(Counter)
            for q in (q for item in self.split(split) for q in item.short):
                by_type[q.question_type][q.answer] += 1
            per_type = {name: majority(counts) for name, counts in sorted(by_type.items())}
            total = sum(c["count"] for c in per_type.values())
            overall = sum(c["accuracy"] * c["count"] for c in per_type.values()) / total if total else 0.0
            result[split] = {"per_type_majority_accuracy": round(overall, 4), "by_question_type": per_type}
        return result

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def frame_file(clip_id: str, t: int) -> str:
    """File name of frame ``t`` of clip ``clip_id``."""
    return f"{clip_id}_f{t}.png"


def clip_id(index: int) -> str:
    return f"shapes_clip_{index:06d}"


def _sample(sample_id: str, frames: tuple[Path, ...], question: str, answer: str, meta: dict) -> Sample:
    turns = (Turn("user", f"{IMAGE_PLACEHOLDER}\n{question}"), Turn("assistant", answer))
    return Sample(id=sample_id, turns=turns, frames=frames, source="shapes clips", meta=meta)


def generate_clips(config: ClipsConfig) -> ClipsDataset:
    """Generate every split of the clips described by ``config``."""
    sizes = config.split_sizes()
    split_of = [name for name in SPLITS for _ in range(sizes[name])]
    seen: set[tuple] = set()
    balancers = {split: Balancer() for split in SPLITS}
    clips, failures = [], 0
    for index, split in enumerate(split_of):
        rng = random.Random(f"vlbridge-shapes-clips:{config.seed}:{index}")
        clip = sample_clip(rng, clip_id(index), config.num_frames, config.max_objects)
        if split != "train":
            attempts = 0
            while clip.signature in seen and attempts < REDRAW_ATTEMPTS:
                clip = sample_clip(rng, clip_id(index), config.num_frames, config.max_objects)
                attempts += 1
            failures += clip.signature in seen
        seen.add(clip.signature)
        short = pick_questions(all_clip_questions(clip), rng, config.questions_per_clip, list(CLIP_QUESTION_TYPES),
                               balancers[split])
        clips.append(AnnotatedClip(clip, split, index, clip_caption(clip), tuple(short)))
    return ClipsDataset(config, clips, failures)
