"""The report's settings: one typed dataclass, the recipe each bridge is trained with, and the signature that
decides whether a stored result of an earlier call can be reused."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from vlbridge.errors import ConfigError
from vlbridge.report.bridges import (COMMON_SETTINGS, DEFAULT_PAIRS, all_presets, bridge_settings, connector_of,
                                     reads_pixels, split_pair)


@dataclass(frozen=True)
class ReportSettings:
    """What a report trains and measures; every bridge gets the same data, steps, batch and seed."""

    presets: tuple[str, ...] = field(default_factory=all_presets)  # bridge presets, every registered one by default
    pairs: tuple[str, ...] = tuple(DEFAULT_PAIRS)  # CONNECTOR->INJECTION pairs (vlbridge.report.bridges)
    scenes: int = 600  # Shapes scenes generated (80 % train, 10 % val, 10 % test) unless `data` is given
    data_seed: int = 0  # seed of the generated Shapes data
    data: str | None = None  # an existing Shapes export (vlbridge data shapes) instead of generating one
    steps: int = 150  # optimizer steps of every bridge
    batch_size: int = 8  # samples per step
    seed: int = 0  # training seed (bridge init, data order, dropout) of every bridge
    eval_samples: int = 0  # first N test items of each task scored (0 = all)
    short_tokens: int = 5  # greedy tokens of a short answer (1-3 tokens and the end of turn)
    caption_tokens: int = 48  # greedy tokens of a caption (Shapes' trained captions take up to ~40)
    new_tokens: int = 32  # tokens generated per row for generation tokens/s
    generation_batch: int = 8  # prompts generated together for generation tokens/s and its peak memory
    repeats: int = 5  # timed repeats of the 1-token latency and of generation (median reported)
    threads: int = 0  # torch threads (0 = all cores)
    lm: str = "smollm2-135m"  # the frozen language model of every bridge (registry name or local folder)
    encoder: str = "dinov2-small"  # the frozen vision encoder of every feature-reading bridge
    tiny_lm: str | None = None  # the tiny_lm connector's own LM (None: the connector's default, SmolLM2-135M)
    overrides: tuple[str, ...] = ()  # recipe KEY=VALUE settings applied to every bridge, last but one
    bridge_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> KEY=VALUE, applied last

    @property
    def names(self) -> list[str]:
        return [*self.presets, *self.pairs]

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists: what the JSON report holds


QUICK = dict(scenes=30, steps=3, batch_size=2, eval_samples=6, caption_tokens=8, new_tokens=4, generation_batch=2,
             repeats=2)
"""``--quick``: a run that checks the whole pipeline in minutes; its numbers mean nothing."""


def quick(settings: ReportSettings) -> ReportSettings:
    return replace(settings, **QUICK)


def check(settings: ReportSettings) -> None:
    """Refuse settings that cannot give a report, before any work."""
    for key in ("scenes", "steps", "batch_size", "new_tokens", "generation_batch", "repeats", "short_tokens",
                "caption_tokens"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key.replace('_', '-')} must be at least 1, got {getattr(settings, key)}")
    for key in ("eval_samples", "threads"):
        if getattr(settings, key) < 0:
            raise ConfigError(f"{key.replace('_', '-')} must be >= 0 (0 = all), got {getattr(settings, key)}")
    for name in settings.bridge_overrides:  # a bridge not run this time may have settings: only a typo is refused
        if name not in all_presets():
            split_pair(name)


def model_settings(settings: ReportSettings, name: str) -> list[str]:
    """The bridge ``name`` between the report's LM and encoder (none when its connector reads pixels)."""
    encoder = "none" if reads_pixels(name) else settings.encoder
    tiny = [f"model.connector_options.language_model={settings.tiny_lm}"] \
        if settings.tiny_lm and connector_of(name) == "tiny_lm" else []
    return [*COMMON_SETTINGS, *bridge_settings(name), f"model.language_model={settings.lm}",
            f"model.vision_encoder={encoder}", *tiny]


def recipe_settings(settings: ReportSettings, name: str, data: Path, run: Path) -> list[str]:
    """Every recipe override of bridge ``name``: trained on Shapes short answers, multiple-choice option texts
    and captions together, with the trainer's own validation reduced to one question (the report scores the
    test split itself)."""
    files = [str(data / f"train_{task}.json") for task in ("short", "mc-text", "caption")]
    return [
        *model_settings(settings, name),
        f"data.train={json.dumps(files)}", f"data.val={json.dumps(str(data / 'val_short.json'))}",
        f"data.image_root={json.dumps(str(data))}",
        f"train.steps={settings.steps}", f"train.batch_size={settings.batch_size}", f"train.seed={settings.seed}",
        f"train.threads={settings.threads}", "train.eval_every=0", "train.eval_samples=1", "train.save_every=0",
        f"train.output_dir={json.dumps(str(run))}", f"eval.max_new_tokens={settings.short_tokens}",
        *settings.overrides, *settings.bridge_overrides.get(name, ()),
    ]


def signature(settings: ReportSettings, name: str) -> dict:
    """What makes a stored result of bridge ``name`` the one these settings would measure: the bridge's recipe
    (without folders), the data, the training and measuring sizes and the threads (timings depend on them)."""
    data = {"folder": settings.data} if settings.data else {"scenes": settings.scenes, "seed": settings.data_seed}
    sizes = ("steps", "batch_size", "seed", "eval_samples", "short_tokens", "caption_tokens", "new_tokens",
             "generation_batch", "repeats", "threads")
    return {"bridge": name, "settings": [*model_settings(settings, name), *settings.overrides,
                                         *settings.bridge_overrides.get(name, ())],
            "data": data, **{key: getattr(settings, key) for key in sizes}}
