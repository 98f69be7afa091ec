"""Recipes: typed, documented configuration read from YAML, overridable with ``--set key=value``.

Every field is declared once here with its meaning; an unknown key anywhere is rejected with the
valid keys listed (a typo must never silently fall back to a default). Values are checked when the recipe
is loaded (:data:`VALID`), before any model is built, and an error gives the valid range; a YAML syntax
error names the file, line and column.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from vlbridge.errors import ConfigError
from vlbridge.precision import PRECISIONS
from vlbridge.text.tokenize import TRUNCATION_POLICIES
from vlbridge.train.guards import BAD_RECORD_POLICIES, NONFINITE_POLICIES


@dataclass
class ModelConfig:
    language_model: str = "smollm2-135m"  # registry name or a local Hugging Face causal-LM folder
    language_model_layers: int | None = None  # keep only the LM's first k decoder layers (its final norm and head
    # stay): PaLM2-VAdapter's tiny LM trained as a captioning decoder (recipes/vadapter/stage1.yaml); None = all
    vision_encoder: str = "dinov2-small"  # registry name, a local CLIP / SigLIP / DINOv2 folder, or "none" (the
    # connector reads pixels itself: encoder-free models)
    vision_layer: int | None = None  # encoder layer giving the grid; None = the preset's (ViT: -2, penultimate, CLS dropped)
    teacher_encoder: str | None = None  # a frozen vision encoder (name or folder) run in training only, its grid
    # features handed to the objective for an auxiliary loss (EVE's patch aligning layer); never built at inference,
    # never saved
    teacher_layer: int | None = None  # the teacher's grid layer; None = the preset's (ViT: -2, penultimate)
    aligner: str | None = None  # what learns from the teacher (vlbridge.bridges.registry.ALIGNERS): pal = EVE's
    # patch aligning layer, an auxiliary loss on the LM's hidden states at the image's grid cells; training only,
    # never saved in the run's inference weights. Needs teacher_encoder
    aligner_options: dict[str, Any] = field(default_factory=dict)  # see the aligner's options dataclass (PALOptions)
    vision_adapter_dim: int | None = None  # bottleneck adapters inside the ViT (MemVP code: 12); None = off
    bridge: str | None = "llava"  # preset (vlbridge.bridges.registry.PRESETS): a named connector + injection pair
    # with their options; null = no preset (then name connector and injection)
    bridge_options: dict[str, Any] = field(default_factory=dict)  # the preset's options (see its dataclass)
    connector: str | None = None  # replaces the preset's connector (vlbridge.bridges.registry.CONNECTORS)
    connector_options: dict[str, Any] = field(default_factory=dict)  # merged over the preset's connector options
    # (over none when `connector` names another connector); see the connector's options dataclass
    injection: str | None = None  # replaces the preset's injection (vlbridge.bridges.registry.INJECTIONS)
    injection_options: dict[str, Any] = field(default_factory=dict)  # merged likewise over the preset's
    lora_rank: int = 0  # LoRA rank on the LM (peft); 0 = no LoRA
    lora_alpha: int = 16  # LoRA scaling numerator (scale = alpha / rank)
    lora_dropout: float = 0.05  # dropout on the LoRA branch input
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])  # module names
    chat_format: str = "auto"  # auto (the tokenizer's chat template, else plain) | template | plain
    system_prompt: str | None = None  # replaces the chat template's default system message; None = keep it
    init_from: str | None = None  # a run (or checkpoint) folder whose trained tensors initialise this model's tensors
    # of the same name and shape before training, e.g. BLIP-2 stage 2 from stage 1 (the Q-Former and ln_vision);
    # what was loaded and what was not is logged and kept in report.json. Not a resume: see `train --resume`
    precision: str = "auto"  # auto | fp32 | bf16: the dtype the frozen LM, vision encoder and teacher are stored and
    # run in; auto = bf16 on a CPU with AMX / AVX-512-bf16 or a GPU with native bf16, else fp32 (docs/precision.md)


@dataclass
class DataConfig:
    format: str = "llava"  # how train / val are read (vlbridge.datasets.training_sets.TRAINING_READERS):
    # llava = LLaVA conversation JSON files | scienceqa = a ScienceQA folder (problems.json, pid_splits.json,
    # images/), each problem the QCM-A sample of MemVP's code (target "The answer is X.")
    train: str | list[str] = "data/shapes/train_short.json"  # llava: JSON of training conversations (or a list of
    # such files, read in order into one set); scienceqa: the folder
    val: str = "data/shapes/val_short.json"  # llava: JSON used for periodic evaluation; scienceqa: the folder
    train_split: str = "train"  # scienceqa only: the pid_splits.json split trained on
    val_split: str = "val"  # scienceqa only: the pid_splits.json split of periodic evaluation
    scienceqa_captions: bool = False  # scienceqa only: add captions.json's image caption to the context (LLaVA, MemVP)
    image_root: str = "data/shapes"  # llava only: folder the records' "image" paths are relative to
    # (ScienceQA images are ROOT/images/SPLIT/PID/<image>)
    max_length: int = 512  # longest sequence the LM sees, visual tokens included
    truncation: str = "reject"  # over-long samples: reject (error naming the record) | truncate_prompt
    on_bad_record: str = "raise"  # raise | skip: leave out each bad record (told apart by file and position, not
    # by id) and report file, position, id and reason in the log and skipped_records.json, never silently
    allow_outside_images: bool = False  # accept image paths that leave the image folder (absolute, or climbing out
    # with ".."); by default such a record is a bad record (vlbridge.data.image_paths)
    cache_features: bool = True  # precompute a frozen encoder's features once and reuse them every epoch


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps
    batch_size: int = 8  # samples per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    warmup_steps: int = 10  # linear warm-up steps before the cosine decay
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    clip_grad: float = 1.0  # max global gradient norm; 0 = no clipping
    precision: str = "auto"  # auto | fp32 | bf16: the trained parts' matrix products in training (bf16: autocast;
    # their parameters, gradients and optimizer state stay fp32); auto = as model.precision resolves (docs/precision.md)
    trainable: list[str] = field(default_factory=lambda: ["bridge", "lora", "vision_adapters"])  # parameter groups
    eval_every: int = 50  # evaluate every N steps (0 = only at the end)
    eval_samples: int = 100  # validation samples used by periodic evaluation (0 = all)
    eval_loss: bool = False  # periodic evaluation also logs val_loss: the teacher-forced LM loss per answer token
    save_every: int = 0  # checkpoint every N steps (0 = only at the end); each holds the full training state
    keep_checkpoints: int = 2  # how many of the latest step checkpoints to keep (0 = all); `final` is always kept
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient norm: stop (error naming step and batch) | skip the update
    objective: str = "lm"  # how a batch becomes a loss (vlbridge.train.objectives): lm = LM loss on answer tokens |
    # blip2_stage1 = BLIP-2 ITC + ITM + ITG on captions (needs model.bridge=blip2, bridge_options.stage1=true)
    seed: int = 0  # seeds model init, data order and dropout
    threads: int = 0  # torch threads (0 = all cores)
    output_dir: str = "runs/llava"  # where checkpoints, metrics.jsonl and the resolved recipe go


@dataclass
class EvalConfig:
    max_new_tokens: int = 10  # generation length for answers
    batch_size: int = 16  # samples per generation batch
    do_sample: bool = False  # greedy (False) or sampling
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - valid, key=str)  # YAML keys need not be strings
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {[f'{where}{k}' for k in unknown]}; valid: {sorted(f'{where}{k}' for k in valid)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        kwargs[name] = _build(hint, value, f"{where}{name}.") if is_dataclass(hint) else _check(hint, value, f"{where}{name}")
    return cls(**kwargs)


def _check(hint, value, key: str):
    """Type check with the key named: ints are accepted where floats are expected, floats must be finite (a NaN
    compares false with every bound), and a list's items are checked too."""
    origin = get_origin(hint)
    allowed = get_args(hint) if origin is not None and origin not in (list, dict) else (hint,)
    for t in allowed:
        base = get_origin(t) or t
        if t is type(None) and value is None:
            return value
        number = None
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif base is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"recipe key {key!r}: {value!r} is not a finite number")
            return number
        if base is list and isinstance(value, list):
            item = (get_args(t) or (Any,))[0]
            return value if item is Any else [_check(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        if base in (int, str, bool, dict) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"recipe key {key!r}: expected {hint}, got {value!r}")


def _at_least(low: float, kind: str = "an integer", note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"{kind} >= {low:g}" + (f" ({note})" if note else "")


def _one_of(choices) -> tuple[Callable[[Any], bool], list]:
    return (lambda v: v in choices), list(choices)


VALID: dict[str, tuple[Callable[[Any], bool], object]] = {
    "data.max_length": _at_least(1),
    "data.truncation": _one_of(TRUNCATION_POLICIES),
    "data.on_bad_record": _one_of(BAD_RECORD_POLICIES),
    "model.precision": _one_of(PRECISIONS),
    "train.precision": _one_of(PRECISIONS),
    "train.steps": _at_least(1),
    "train.batch_size": _at_least(1),
    "train.grad_accum": _at_least(1),
    "train.lr": _at_least(0, "a number"),
    "train.weight_decay": _at_least(0, "a number"),
    "train.betas": ((lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                    and 0 <= b < 1 for b in v)), "two numbers in [0, 1)"),
    "train.warmup_steps": _at_least(0),
    "train.min_lr_ratio": ((lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    "train.clip_grad": _at_least(0, "a number", "0 = no clipping"),
    "train.eval_every": _at_least(0, note="0 = only at the end"),
    "train.eval_samples": _at_least(0, note="0 = all"),
    "train.save_every": _at_least(0, note="0 = only at the end"),
    "train.keep_checkpoints": _at_least(0, note="0 = all"),
    "train.on_nonfinite": _one_of(NONFINITE_POLICIES),
    "train.threads": _at_least(0, note="0 = all cores"),
    "eval.max_new_tokens": _at_least(1),
    "eval.batch_size": _at_least(1),
    "eval.temperature": ((lambda v: v > 0), "a number > 0"),
    "eval.top_p": ((lambda v: 0 < v <= 1), "a number in (0, 1]"),
}
"""``section.key`` -> (test, the valid range as the error states it): checked on load, so a wrong value fails
before a model is built. A float must also be finite (``.nan`` and ``.inf`` fail every range)."""


def validate(recipe: Recipe) -> Recipe:
    """Raise a :class:`ConfigError` naming the first key of :data:`VALID` whose value is out of range."""
    for key, (test, valid) in VALID.items():
        section, name = key.split(".")
        value = getattr(getattr(recipe, section), name)
        if isinstance(valid, list):  # a choice
            if not test(value):
                raise ConfigError(f"{key}={value!r}; valid: {valid}")
        elif (isinstance(value, float) and not math.isfinite(value)) or not test(value):
            raise ConfigError(f"recipe key {key!r}: {value!r} is out of range; valid: {valid}")
    return recipe


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    return validate(_build(Recipe, values, ""))


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe (None = all defaults) and apply ``key.sub=value`` overrides (YAML values)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        values = _parse_yaml(path) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"recipe file {path}: top level must be a mapping")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = values
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        try:
            node[last] = yaml.load(raw, Loader=_RecipeLoader)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({_yaml_problem(error)})") from None
    return recipe_from_dict(values)


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently: a
    recipe listing ``lr`` twice would lose one of them without a word)."""


def _mapping_without_duplicates(loader: _RecipeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = key in first_line
        except TypeError:  # an unhashable key: the base constructor refuses it below
            continue
        if seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found key {key!r} a second time (first at line {first_line[key] + 1})", key_node.start_mark)
        first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _parse_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"recipe file {path}: not UTF-8 text ({error})") from None
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.reader.ReaderError as error:  # a character YAML does not allow (a control character)
        line, column = text.count("\n", 0, error.position) + 1, error.position - text.rfind("\n", 0, error.position)
        raise ConfigError(f"recipe file {path}: invalid YAML at line {line}, column {column}: character "
                          f"{chr(error.character)!r} is not allowed") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"recipe file {path}: invalid YAML{where}: {_yaml_problem(error)}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's problem in words, without its own multi-line position report."""
    parts = [getattr(error, "context", None), getattr(error, "problem", None)]
    return ", ".join(p for p in parts if p) or str(error).splitlines()[0]


def save_recipe(recipe: Recipe, path: Path) -> None:
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
