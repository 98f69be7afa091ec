"""Checkpoints: what was trained (safetensors), the resolved recipe (YAML) and what it was trained on (JSON).

The frozen encoder and LM are not saved: they are rebuilt from the recipe (their packages or folders),
so a MemVP or LLaVA checkpoint is a few MB. ``meta.json`` records the bridge (the preset and its options,
and the connector and injection it resolved to, with theirs), the trained tensors (names and shapes), the
LM and encoder identity (architecture, layer, preprocessing and a fingerprint of their weights) and the
library versions; loading into a model that differs in any of them fails with a message saying what
differs. Nothing is unpickled: tensors are safetensors, everything else JSON or YAML.

Checkpoints written before bridges were composed (no ``spec`` in ``meta.json``) still load: their two tensor
names that moved are renamed on reading (:data:`LEGACY_RENAMES`). A checkpoint with no identity (``meta.json``
deleted, or written before identities were recorded) is refused, since nothing would stop its bridge loading
onto another LM; the user may ask for it explicitly (:data:`UNIDENTIFIED_ENV`, or ``allow_unidentified=True``).

Files that cannot be read (truncated or malformed safetensors, JSON that does not parse), and trained tensors
holding NaN or inf, raise :class:`~vlbridge.errors.DataError` naming the file (and tensor); a checkpoint whose
tensors have another floating dtype than the model's is converted with a warning, any other dtype refused.

Writes are atomic: a checkpoint is written into a temporary folder, flushed to disk and renamed, so an
interrupted save (even ``SIGKILL``) never leaves a torn checkpoint behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlbridge.bridges.registry import resolve_spec
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.errors import ConfigError, DataError
from vlbridge.recipe import Recipe, save_recipe
from vlbridge.train.identity import SOURCES, TRAINING_ONLY, library_versions, model_identity
from vlbridge.train.parameter_groups import group_of

logger = logging.getLogger(__name__)

WEIGHTS = "trained.safetensors"  # what inference loads
TRAINING_WEIGHTS = "training_only.safetensors"  # trained tensors only training uses (EVE's PAL): resume, init_from
RECIPE = "recipe.yaml"
META = "meta.json"
FORMAT = 2  # 2: the bridge recorded as connector + injection ("spec")
# tensor-name prefixes of format-1 checkpoints -> today's: BLIP-2's stage-1 heads now live in the Q-Former
# connector, and MemVP's "concat" projector is no longer wrapped with a zero-padding layer
LEGACY_RENAMES = {"bridge.stage1.": "bridge.connector.stage1.", "bridge.connector.0.net.": "bridge.connector.net."}
UNIDENTIFIED_ENV = "VLBRIDGE_ALLOW_UNIDENTIFIED_CHECKPOINT"  # =1: load checkpoints that record no LM/encoder identity


def write_checkpoint(folder: Path, recipe: Recipe, weights: dict[str, torch.Tensor], identity: dict,
                     extra: dict | None = None) -> None:
    """Write the bridge-only checkpoint files into an existing (temporary) folder."""
    state = {k: v.detach().contiguous() for k, v in weights.items()}
    training_only = {k: v for k, v in state.items() if group_of(k) in TRAINING_ONLY}
    save_file({k: v for k, v in state.items() if k not in training_only}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    if training_only:
        save_file(training_only, str(folder / TRAINING_WEIGHTS), metadata={"format": "pt"})
    save_recipe(recipe, folder / RECIPE)
    meta = {
        "format": FORMAT,
        "versions": library_versions(),
        "bridge": {"name": recipe.model.bridge, "options": recipe.model.bridge_options},
        "spec": resolve_spec(recipe.model).to_dict(),
        "sources": {"language_model": recipe.model.language_model, "vision_encoder": recipe.model.vision_encoder},
        **identity,
        "parameters": {k: list(v.shape) for k, v in state.items()},
        **(extra or {}),
    }
    (folder / META).write_text(json.dumps(meta, indent=1))


def commit_folder(tmp: Path, folder: Path) -> Path:
    """Flush ``tmp`` to disk and rename it to ``folder`` (replacing an older one) in one step."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # temporary folders and files are private; a checkpoint is not
    for path in tmp.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    try:  # make the rename itself durable
        fd = os.open(folder.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return folder


def save_weights(folder: Path, recipe: Recipe, weights: dict[str, torch.Tensor], identity: dict,
                 extra: dict | None = None) -> Path:
    """Write a bridge-only checkpoint of ``weights`` to ``folder`` atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write_checkpoint(tmp, recipe, weights, identity, extra)
        return commit_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(model, recipe: Recipe, folder: Path, extra: dict | None = None) -> Path:
    """Save ``model``'s trainable tensors as a bridge-only checkpoint in ``folder`` (atomically)."""
    weights = model.trainable_state_dict()
    return save_weights(folder, recipe, weights, model_identity(model, set(weights)), extra)


def read_json(path: Path):
    """A JSON file of a run or checkpoint; one that cannot be read or parsed is an error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"cannot be read as JSON ({error}); the file is damaged (e.g. a copy that stopped "
                        "halfway)", file=path) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; a truncated or malformed one (any header length) is an error naming it."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise DataError(f"is not a readable safetensors file ({error}); the file is damaged (e.g. a copy that "
                        "stopped halfway)", file=path) from None


def read_meta(folder: Path) -> dict:
    """``meta.json`` of a checkpoint, ``{}`` if it has none."""
    path = Path(folder) / META
    if not path.is_file():
        return {}
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"expected a JSON object, found {type(meta).__name__}", file=path)
    return meta


def has_identity(meta: dict) -> bool:
    return "language_model" in meta and "vision_encoder" in meta


def check_identity(meta: dict, folder: Path, allow_unidentified: bool = False) -> None:
    """Refuse a checkpoint that does not say which LM and encoder its tensors were trained on, unless asked."""
    if has_identity(meta) or allow_unidentified or os.environ.get(UNIDENTIFIED_ENV) == "1":
        return
    what = f"has no {META}" if not (Path(folder) / META).is_file() else f"has a {META} that records no identity"
    raise ConfigError(
        f"checkpoint {folder} {what}: nothing says which language model and vision encoder its tensors were "
        f"trained on, so they could load onto another one with no error and give a broken model. If you know it "
        f"is the right model, load it unchecked: set {UNIDENTIFIED_ENV}=1 (Python: allow_unidentified=True)")


def check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DataError(f"tensor {name!r} holds {bad} NaN or infinite value(s) of {tensor.numel()}: the "
                            "weights of a run that diverged cannot be used (resume from an earlier checkpoint, or "
                            "train again with train.on_nonfinite=stop to find the step)", file=path)


def dtype_changes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], folder: Path) -> list[str]:
    """``name: checkpoint dtype -> model dtype`` for the tensors to convert (floating point to floating point);
    any other change of dtype (integer, boolean, complex) is refused."""
    changed, refused = [], []
    for name, tensor in sorted(state.items()):
        if name in own and tensor.dtype != own[name].dtype:
            fits = tensor.is_floating_point() and own[name].is_floating_point()
            (changed if fits else refused).append(f"{name}: {tensor.dtype} -> {own[name].dtype}")
    if refused:
        raise ConfigError(f"checkpoint {folder}: tensors of a dtype this model cannot take (checkpoint -> model): "
                          f"{refused[:5]}{' ...' if len(refused) > 5 else ''}")
    return changed


def _describe(part: dict | None) -> str:
    if part is None:
        return "none"
    return ", ".join(f"{k} {v}" for k, v in part.items())


def read_state(folder: Path, meta: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under today's names (a format-1 checkpoint's are renamed), with those only training
    uses (an aligner's) when it has them; unreadable files and NaN or inf values are errors naming the file."""
    state = read_tensors(Path(folder) / WEIGHTS)
    check_finite(state, Path(folder) / WEIGHTS)
    if (Path(folder) / TRAINING_WEIGHTS).is_file():
        extra = read_tensors(Path(folder) / TRAINING_WEIGHTS)
        check_finite(extra, Path(folder) / TRAINING_WEIGHTS)
        state |= extra
    if meta.get("format", 1) >= FORMAT:
        return state
    renamed = {}
    for name, tensor in state.items():
        for old, new in LEGACY_RENAMES.items():
            if name.startswith(old):
                name = new + name[len(old):]
        renamed[name] = tensor
    return renamed


def differences(meta: dict, model, recipe: Recipe | None, state: dict[str, torch.Tensor],
                expected: set[str] | None = None) -> list[str]:
    """Everything in which ``model`` (built from ``recipe``) differs from the checkpoint: empty if it fits.
    ``expected``: the tensors the checkpoint must hold (a resumed run's trainable ones); None = the model's new
    tensors that the checkpoint does not list as untrained."""
    found = []
    if expected is None and "untrained" in meta:
        expected = {n for n, _ in model.named_parameters() if group_of(n) not in SOURCES} - set(meta["untrained"])
    bridge = meta.get("bridge")
    if recipe is not None and "spec" in meta:
        ours = resolve_spec(recipe.model).to_dict()
        if ours != meta["spec"]:
            theirs_name = bridge.get("name") if isinstance(bridge, dict) else None
            found.append(f"bridge: the checkpoint has {theirs_name!r} ({BridgeSpec(**meta['spec']).describe()}), "
                         f"this model {recipe.model.bridge!r} ({BridgeSpec(**ours).describe()})")
    elif recipe is not None and isinstance(bridge, dict):
        ours = {"name": recipe.model.bridge, "options": recipe.model.bridge_options}
        if ours != bridge:
            found.append(f"bridge: the checkpoint has {bridge['name']!r} with options {bridge['options']}, "
                         f"this model {ours['name']!r} with options {ours['options']}")
    own = dict(model.named_parameters())
    identity = model_identity(model, set(state))
    sources = meta.get("sources", {})
    for part, label in (("language_model", "language model"), ("vision_encoder", "vision encoder")):
        if part not in meta:
            continue  # a checkpoint with no identity, loaded on request (check_identity)
        theirs, ours = meta[part], identity[part]
        if theirs != ours:
            keys = sorted(set(theirs or {}) | set(ours or {}))
            changed = [k for k in keys if (theirs or {}).get(k) != (ours or {}).get(k)]
            found.append(f"{label}: differs in {changed}; the checkpoint was trained on "
                         f"{sources.get(part, '?')} ({_describe(theirs)}), this model has "
                         f"{getattr(recipe.model, part) if recipe else '?'} ({_describe(ours)})")
    missing = sorted((expected or set()) - set(state))
    # an aligner's tensors stay unread by a model built for inference, which has none
    unexpected = sorted(k for k in set(state) - set(own) if group_of(k) not in TRAINING_ONLY)
    wrong = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                   for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        found.append(f"trained tensors: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                     f"shape (checkpoint vs model) {wrong[:5]}")
    return found


def load_trained_weights(model, folder: Path, recipe: Recipe | None = None, expected: set[str] | None = None,
                         allow_unidentified: bool = False) -> None:
    """Load a checkpoint's trained tensors into ``model`` after checking it is the model they were
    trained with (LM, encoder, bridge, every name and shape, and ``expected`` tensors all present); say what
    differs otherwise. A checkpoint that records no identity is refused unless ``allow_unidentified`` (or
    :data:`UNIDENTIFIED_ENV` is 1)."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise ConfigError(f"{folder} is not a checkpoint: {WEIGHTS} is missing")
    meta = read_meta(folder)
    check_identity(meta, folder, allow_unidentified)
    state = read_state(folder, meta)
    found = differences(meta, model, recipe, state, expected)
    if found:
        raise ConfigError(f"checkpoint {folder} does not fit this model:\n  - " + "\n  - ".join(found))
    converted = dtype_changes(state, dict(model.named_parameters()), folder)
    if converted:
        logger.warning("checkpoint %s holds tensors of another dtype than this model's; converted: %s", folder,
                       converted)
    ours = library_versions()
    changed = {k: (v, ours.get(k)) for k, v in meta.get("versions", {}).items() if ours.get(k) != v}
    if changed:
        logger.warning("checkpoint %s was written with other library versions (then, now): %s", folder, changed)
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            if name in own:
                own[name].copy_(tensor)


def initialise_from(model, folder: str | Path, log=print, allow_unidentified: bool = False) -> dict:
    """Copy the trained tensors of another run (``model.init_from``: a run or checkpoint folder) into ``model``'s
    tensors of the same name, trained or frozen: e.g. BLIP-2 stage 2 starts from stage 1's Q-Former and ln_vision.

    A name found in both with another shape, or another vision encoder than the one the tensors were trained on,
    is an error. Returns what was done: the checkpoint, ``loaded`` (names), ``not_in_checkpoint`` (this model's
    trainable tensors that keep their initialisation) and ``not_in_model`` (the checkpoint's tensors that this
    model has not, such as stage-1 heads); all three are logged. ``hf:DIR`` names a Hugging Face LLaVA folder
    instead, whose projector is loaded (:mod:`vlbridge.export.hf_import`)."""
    if str(folder).startswith("hf:"):
        from vlbridge.export.hf_import import initialise_from_hf

        return initialise_from_hf(model, str(folder)[len("hf:"):], log)
    source = resolve_checkpoint(folder)
    meta = read_meta(source)
    check_identity(meta, source, allow_unidentified)
    state = model.bridge.connector.adopt_state(read_state(source, meta), meta, str(folder))
    own = dict(model.named_parameters())
    converted = dtype_changes({k: v for k, v in state.items() if k in own}, own, source)
    wrong = sorted(f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                   if k in own and v.shape != own[k].shape)
    if wrong:
        raise ConfigError(f"model.init_from={folder}: tensors of the same name differ in shape (checkpoint vs model): "
                          f"{wrong[:5]}{' ...' if len(wrong) > 5 else ''}")
    theirs = meta.get("vision_encoder")
    ours = model_identity(model, set(state))["vision_encoder"]
    if theirs is not None and theirs != ours:
        raise ConfigError(f"model.init_from={folder}: its tensors were trained on another vision encoder "
                          f"({_describe(theirs)}) than this model's ({_describe(ours)})")
    loaded = sorted(k for k in state if k in own)
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    result = {"checkpoint": str(source), "loaded": loaded,
              "not_in_checkpoint": sorted(k for k, p in own.items() if p.requires_grad and k not in state),
              "not_in_model": sorted(k for k in state if k not in own)}
    log(f"initialised {len(loaded)} tensors from {source} ({_prefixes(loaded)}); trained from their initialisation: "
        f"{_prefixes(result['not_in_checkpoint']) or 'none'}; in the checkpoint but not in this model: "
        f"{_prefixes(result['not_in_model']) or 'none'}"
        + (f"; converted to this model's dtype: {converted[:5]}{' ...' if len(converted) > 5 else ''}" if converted else ""))
    return result


def _prefixes(names: list[str], depth: int = 3) -> str:
    """'bridge.connector.qformer (190), ...': tensor names summarised by their first ``depth`` parts."""
    counts: dict[str, int] = {}
    for name in names:
        prefix = ".".join(name.split(".")[:depth])
        counts[prefix] = counts.get(prefix, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def resolve_checkpoint(folder: str | Path) -> Path:
    """A checkpoint folder itself, or a run folder's ``final`` checkpoint, or else its latest one."""
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        return folder
    if (folder / "final" / WEIGHTS).is_file():
        return folder / "final"
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit() and (p / WEIGHTS).is_file())
    if steps:
        return steps[-1][1]
    raise ConfigError(f"{folder} is not a run or checkpoint folder (no {WEIGHTS}, final/ or checkpoint-N/)")
