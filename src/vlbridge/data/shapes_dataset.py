"""Build the Shapes dataset: scenes, captions and questions for train/val/test from one seed.

Scene ``i`` is drawn from its own ``random.Random`` seeded with ``(seed, i)`` (never global state),
so the data is identical on every machine and run. Scenes ``0 .. n_train-1`` are train, then val,
then test; a val/test scene whose content (objects, cells, sizes) already occurs in train or in an
earlier val/test scene is redrawn with the same number of objects, so evaluation scenes are new.

Answers are balanced while questions are chosen: for each question type, among the questions a scene
can answer, one whose answer has been picked least often so far (in this split) is taken. Question
types are rotated the same way, so every type gets about the same share.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from vlbridge.data.prompts import OPTION_TEXT_INSTRUCTION, choice_letter, format_multiple_choice
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.data.shapes import Scene, sample_scene
from vlbridge.data.shapes_captions import references
from vlbridge.data.shapes_questions import MC_QUESTION_TYPES, QUESTION_TYPES, Question, all_questions, choices_for
from vlbridge.errors import ConfigError

GENERATOR_VERSION = 1
"""Bumped whenever the same seed would give different data."""

SPLITS = ("train", "val", "test")
TASKS = ("short", "mc", "mc-text", "caption")
"""mc-text: mc's questions answered with the option's text (for choosing by option likelihood,
``vlbridge eval --choose-by likelihood``); its samples are scored as mc (``meta["task"] == "mc"``)."""
CAPTION_PROMPT = "Describe the image briefly."
VQA_ANSWERS_PER_QUESTION = 10  # VQAv2 has 10 human answers; the official accuracy needs them
QUESTION_ID_STRIDE = 100  # question_id = image_id * 100 + k (k < questions per scene), as in the VQAv2 layout
REDRAW_ATTEMPTS = 100

T = TypeVar("T")


@dataclass(frozen=True)
class ShapesConfig:
    """What to generate. Equal configs give byte-identical datasets."""

    n: int = 1000
    """Number of scenes (images) over all splits."""
    seed: int = 0
    """Seed of the whole dataset."""
    image_size: int = 224
    """Side of the square images in pixels."""
    train_fraction: float = 0.8
    """Share of scenes in train."""
    val_fraction: float = 0.1
    """Share of scenes in val; test gets the rest."""
    short_per_scene: int = 4
    """Short-answer questions per scene (each of a different type)."""
    mc_per_scene: int = 2
    """Multiple-choice questions per scene (each of a different type)."""
    max_objects: int = 4
    """Scenes hold 1..max_objects shapes (at most 9, one per cell)."""

    def __post_init__(self) -> None:
        if self.n < len(SPLITS):
            raise ConfigError(f"shapes: n must be at least {len(SPLITS)} (one scene per split), got {self.n}")
        if not (0 < self.train_fraction and 0 < self.val_fraction and self.train_fraction + self.val_fraction < 1):
            raise ConfigError("shapes: need 0 < train_fraction, 0 < val_fraction, train + val < 1")
        if not 1 <= self.max_objects <= 9:
            raise ConfigError(f"shapes: max_objects must be in 1..9, got {self.max_objects}")
        if self.image_size < 32:
            raise ConfigError(f"shapes: image_size must be at least 32, got {self.image_size}")
        if self.short_per_scene < 0 or self.mc_per_scene < 0:
            raise ConfigError("shapes: questions per scene cannot be negative")

    def split_sizes(self) -> dict[str, int]:
        """Scenes per split; every split gets at least one."""
        return split_sizes(self.n, self.train_fraction, self.val_fraction)


def split_sizes(n: int, train_fraction: float, val_fraction: float) -> dict[str, int]:
    """Items per split for ``n`` items (at least 3); every split gets at least one."""
    val = max(1, round(n * val_fraction))
    train = max(1, min(n - val - 1, round(n * train_fraction)))
    return {"train": train, "val": val, "test": n - train - val}


@dataclass(frozen=True)
class MultipleChoice:
    """A question with options; ``answer_index`` points at ``question.answer`` in ``choices``."""

    question: Question
    choices: tuple[str, ...]
    answer_index: int


@dataclass(frozen=True)
class AnnotatedScene:
    """A scene with everything said about it."""

    scene: Scene
    split: str
    index: int
    captions: tuple[str, ...]  # canonical caption first
    short: tuple[Question, ...]
    mc: tuple[MultipleChoice, ...]


class Balancer:
    """Chooses among options the one whose value was chosen least often so far, per key."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def pick(self, key: str, options: Sequence[T], rng: random.Random, value: Callable[[T], str] = str,
             tiebreak: Callable[[str], float] | None = None) -> T:
        """Pick an option with a least-chosen value (ties: lowest ``tiebreak``, then at random)."""
        counts = self.counts[key]
        values = list(dict.fromkeys(value(o) for o in options))  # first-seen order: deterministic
        least = min(counts[v] for v in values)
        values = [v for v in values if counts[v] == least]
        if tiebreak is not None:
            keys = {v: tiebreak(v) for v in values}  # floats: IEEE division is exact-rounded everywhere
            values = [v for v in values if keys[v] == min(keys.values())]
        chosen = rng.choice(values)
        counts[chosen] += 1
        return rng.choice([o for o in options if value(o) == chosen])

    def rarest_share(self, key: str, values: Sequence[str]) -> float:
        """The smallest share, among ``values``, of all picks made under ``key`` so far."""
        counts = self.counts[key]
        return min(counts[v] for v in values) / max(1, sum(counts.values()))


@dataclass
class ShapesDataset:
    """The generated dataset (in memory; :mod:`vlbridge.data.shapes_export` writes it to files)."""

    config: ShapesConfig
    scenes: list[AnnotatedScene]
    redraw_failures: int  # val/test scenes whose content could not be made new (tiny content space)

    def split(self, name: str) -> list[AnnotatedScene]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; valid: {list(SPLITS)}")
        return [s for s in self.scenes if s.split == name]

    def samples(self, split: str, task: str, image_dir: str | Path) -> list[Sample]:
        """The split's samples of one task, images expected at ``image_dir/<scene id>.png``."""
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; valid: {list(TASKS)}")
        out = []
        for item in self.split(split):
            image = Path(image_dir) / f"{item.scene.id}.png"
            if task == "caption":
                out.append(_sample(f"{item.scene.id}_caption", image, CAPTION_PROMPT, item.captions[0],
                                   {"task": "caption", "answers": list(item.captions)}))
            for k, q in enumerate(item.short if task == "short" else ()):
                meta = {"task": "short", "answers": [q.answer] * VQA_ANSWERS_PER_QUESTION,
                        "question_type": q.question_type, "answer_type": q.answer_type, "local": q.local,
                        "question_id": item.index * QUESTION_ID_STRIDE + k}  # the VQAv2 layout's id, for results files
                out.append(_sample(f"{item.scene.id}_q{k}", image, q.text, q.answer, meta))
            for k, mc in enumerate(item.mc if task in ("mc", "mc-text") else ()):
                if task == "mc":
                    answer = choice_letter(mc.answer_index)
                    prompt = format_multiple_choice(mc.question.text, mc.choices)
                else:
                    answer = mc.choices[mc.answer_index]
                    prompt = format_multiple_choice(mc.question.text, mc.choices, instruction=OPTION_TEXT_INSTRUCTION)
                meta = {"task": "mc", "answers": [answer], "choices": list(mc.choices),
                        "answer_index": mc.answer_index, "question_type": mc.question.question_type,
                        "answer_type": "other", "local": mc.question.local}
                out.append(_sample(f"{item.scene.id}_mc{k}", image, prompt, answer, meta))
        return out

    def majority_baselines(self) -> dict[str, Any]:
        """Accuracy of always giving the most frequent answer, per split and task (per type for short)."""
        result: dict[str, Any] = {}
        for split in SPLITS:
            items = self.split(split)
            by_type: dict[str, Counter] = defaultdict(Counter)
            for q in (q for item in items for q in item.short):
                by_type[q.question_type][q.answer] += 1
            per_type = {name: majority(counts) for name, counts in sorted(by_type.items())}
            total = sum(c["count"] for c in per_type.values())
            overall = sum(c["accuracy"] * c["count"] for c in per_type.values()) / total if total else 0.0
            letters = Counter(choice_letter(mc.answer_index) for item in items for mc in item.mc)
            mcs = [mc for item in items for mc in item.mc]
            result[split] = {
                "short": {"per_type_majority_accuracy": round(overall, 4), "by_question_type": per_type},
                "mc": {**majority(letters),
                       "chance": round(sum(1 / len(m.choices) for m in mcs) / len(mcs), 4) if mcs else 0.0},
            }
        return result

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def majority(counts: Counter) -> dict[str, Any]:
    """The most frequent answer (ties: the first in sort order), its share and the number of answers."""
    total = sum(counts.values())
    if not total:
        return {"answer": None, "accuracy": 0.0, "count": 0}
    answer, hits = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return {"answer": answer, "accuracy": round(hits / total, 4), "count": total}


def _sample(sample_id: str, image: Path, question: str, answer: str, meta: dict) -> Sample:
    turns = (Turn("user", f"{IMAGE_PLACEHOLDER}\n{question}"), Turn("assistant", answer))
    return Sample(id=sample_id, turns=turns, image=image, source="shapes", meta=meta)


def scene_id(index: int) -> str:
    """Id and image file stem of scene ``index``; VQA/COCO integer image ids are the index itself."""
    return f"shapes_{index:06d}"


def generate_shapes(config: ShapesConfig) -> ShapesDataset:
    """Generate every split of the Shapes dataset described by ``config``."""
    sizes = config.split_sizes()
    split_of = [name for name in SPLITS for _ in range(sizes[name])]
    seen: set[tuple] = set()  # contents of train scenes and of every accepted val/test scene
    balancers = {split: (Balancer(), Balancer()) for split in SPLITS}  # (short, mc) per split
    scenes, failures = [], 0
    for index, split in enumerate(split_of):
        rng = random.Random(f"vlbridge-shapes:{config.seed}:{index}")
        scene = sample_scene(rng, scene_id(index), max_objects=config.max_objects)
        if split != "train":
            attempts = 0
            while scene.signature in seen and attempts < REDRAW_ATTEMPTS:
                scene = sample_scene(rng, scene_id(index), n_objects=len(scene.objects))
                attempts += 1
            failures += scene.signature in seen
        seen.add(scene.signature)
        short_balancer, mc_balancer = balancers[split]
        candidates = all_questions(scene)
        short = pick_questions(candidates, rng, config.short_per_scene, list(QUESTION_TYPES), short_balancer)
        mc_questions = pick_questions(candidates, rng, config.mc_per_scene, list(MC_QUESTION_TYPES), mc_balancer)
        mc = []
        for question in mc_questions:
            choices, answer_index = choices_for(question, scene, rng, n_options=rng.randint(2, 5),
                                                max_count=config.max_objects)
            mc.append(MultipleChoice(question, tuple(choices), answer_index))
        captions = tuple(references(scene, rng))
        scenes.append(AnnotatedScene(scene, split, index, captions, tuple(short), tuple(mc)))
    return ShapesDataset(config, scenes, failures)


def pick_questions(candidates: dict[str, list[Question]], rng: random.Random, k: int, types: list[str],
                    balancer: Balancer) -> list[Question]:
    """Up to ``k`` questions of different ``types``, balancing types and, within a type, answers."""
    feasible = [name for name in types if candidates[name]]
    chosen: list[Question] = []
    while feasible and len(chosen) < k:
        # Least-used types first; among those, the type that can give its currently rarest answer,
        # which also balances types with a single candidate per scene (count_all).
        name = balancer.pick("question types", feasible, rng, tiebreak=lambda t: balancer.rarest_share(
            t, [q.answer for q in candidates[t]]))
        feasible.remove(name)
        chosen.append(balancer.pick(name, candidates[name], rng, value=lambda q: q.answer))
    return chosen
