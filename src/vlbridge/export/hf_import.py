"""``model.init_from: hf:DIR``: start an ``mlp -> input_space`` run from a local Hugging Face LLaVA folder's projector.

What is loaded: ``multi_modal_projector.linear_1`` / ``linear_2`` into the MLP connector's two Linears. The LLaVA
folder's language model is not loaded (the run's LM is ``model.language_model``, rebuilt from its source at every
load, as checkpoints expect). What is checked first, each refusal naming the recipe option to change:

- the run's bridge is a two-layer MLP projector with input-space injection, with LLaVA's activation;
- its LM is the same architecture and shape as the folder's (type, width, layers, FFN width): a projector maps into
  one LM's embedding space;
- its encoder is the folder's vision tower (same architecture and shape, same weights: a bf16 / fp16 folder matches
  the fp32 encoder within that precision), read at the same layer with the same prefix tokens dropped: a projector
  maps one encoder's features.

Both layouts of LLaVA folders are read: transformers >= 4.52's (``model.multi_modal_projector.*``) and the earlier
one (``multi_modal_projector.*``) of most published checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.bridges.injections.input_space import InputSpaceInjection
from vlbridge.errors import ConfigError
from vlbridge.export.llava import ACTIVATIONS, SELECT_STRATEGY

PREFIX = "hf:"  # model.init_from values naming a Hugging Face folder
PROJECTOR = ("model.multi_modal_projector.", "multi_modal_projector.")  # new layout first
VISION_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "patch_size")  # what fixes the vision tower's shape
LM_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size")  # what fixes the LM's shape


class _Tensors:
    """The tensors of a Hugging Face folder by name, read lazily (single or sharded safetensors)."""

    def __init__(self, folder: Path, where: str):
        from safetensors import safe_open

        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = json.loads(index.read_text())["weight_map"]
        elif (folder / "model.safetensors").is_file():
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                files = {k: "model.safetensors" for k in f.keys()}
        else:
            raise ConfigError(f"{where}: {folder} holds no model.safetensors (nor an index of shards)")
        self.folder, self.files, self.where = folder, files, where

    def names(self, prefixes: tuple[str, ...]) -> dict[str, str]:
        """{short name: stored name} under the first of ``prefixes`` the folder uses."""
        for prefix in prefixes:
            found = {k[len(prefix):]: k for k in self.files if k.startswith(prefix)}
            if found:
                return found
        return {}

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        path = self.folder / self.files[name]
        if not path.is_file():
            raise ConfigError(f"{self.where}: the shard {path} is missing")
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(name)


def _feature_index(layer: int, num_layers: int) -> int:
    """A hidden-states index (negative from the end) as the positive one (0 = embeddings)."""
    return layer if layer >= 0 else num_layers + 1 + layer


def _check_config(model, config: dict, where: str) -> None:
    bridge, lm, encoder = model.bridge, model.language_model, model.vision_encoder
    connector = bridge.connector
    if not (isinstance(connector, MLPProjector) and len(connector.net) == 3
            and isinstance(bridge.injection, InputSpaceInjection)):
        raise ConfigError(f"{where}: a LLaVA projector (Linear -> act -> Linear) initialises an mlp -> input_space "
                          "bridge with layers 2 (model.bridge: llava); this model's bridge is "
                          f"{type(connector).__name__} -> {type(bridge.injection).__name__}")
    act = ACTIVATIONS.get(type(connector.net[1]))
    if act != config.get("projector_hidden_act", "gelu"):
        raise ConfigError(f"{where}: its projector's activation is {config.get('projector_hidden_act')!r}, this model's "
                          f"{act!r} (model.bridge_options.activation)")
    text = config.get("text_config") or {}
    # read through the config object: its attribute map gives GPT-2's n_embd as hidden_size
    differ = [f"{k} {text.get(k)!r} vs {getattr(lm.config, k, None)!r}" for k in LM_FIELDS
              if k in text and text.get(k) != getattr(lm.config, k, None)]
    if differ:
        raise ConfigError(f"{where}: its language model differs from model.language_model's (the folder's vs this "
                          f"model's): {', '.join(differ)}")
    if encoder is None:
        raise ConfigError(f"{where}: a LLaVA projector reads vision features; model.vision_encoder is none")
    layer = config.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ConfigError(f"{where}: its projector reads the concatenation of vision layers {layer}; vlbridge's encoder "
                          "gives one layer")
    n = encoder.backbone.num_layers
    if _feature_index(layer, n) != _feature_index(encoder.layer, n):
        raise ConfigError(f"{where}: its projector reads vision layer {layer}, this model's encoder layer "
                          f"{encoder.layer} (set model.vision_layer: {layer})")
    strategy = config.get("vision_feature_select_strategy", "default")
    prefix = encoder.backbone.num_prefix_tokens
    if SELECT_STRATEGY.get(prefix) != strategy:
        raise ConfigError(f"{where}: its vision_feature_select_strategy is {strategy!r} (drops "
                          f"{1 if strategy == 'default' else 0} prefix tokens); model.vision_encoder drops {prefix}")


def _check_vision_tower(encoder, folder: Path, config: dict, where: str) -> None:
    """The folder's vision tower must be the run's encoder: the same architecture and shape, and the same weights
    (within the folder's precision: a bf16 or fp16 folder matches the fp32 encoder)."""
    import transformers
    from transformers import AutoConfig, AutoModel

    vision = dict(config.get("vision_config") or {})
    ours = encoder.model.config
    differ = [f"{k} {vision.get(k)!r} vs {getattr(ours, k, None)!r}" for k in VISION_FIELDS
              if k in vision and vision.get(k) != getattr(ours, k, None)]
    if differ:
        raise ConfigError(f"{where}: its vision tower differs from model.vision_encoder's (the folder's vs this "
                          f"model's): {', '.join(differ)}")
    # transformers reads the tower under its own names (checkpoints of older layouts are renamed on loading)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the folder's LM and projector are "unexpected" for a vision model
    try:
        tower, info = AutoModel.from_pretrained(folder, config=AutoConfig.for_model(**vision), local_files_only=True,
                                                key_mapping={r"^(model\.)?vision_tower\.": ""},
                                                output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise ConfigError(f"{where}: its vision tower cannot be read: {error}") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConfigError(f"{where}: its vision tower lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    theirs = dict(tower.named_parameters())
    for name, parameter in encoder.model.named_parameters():
        stored = theirs.get(name)
        if stored is None or tuple(stored.shape) != tuple(parameter.shape):
            raise ConfigError(f"{where}: its vision tower is not model.vision_encoder's network (tensor {name})")
        precision = max(torch.finfo(stored.dtype).eps, torch.finfo(parameter.dtype).eps)
        if not torch.allclose(parameter.detach().double(), stored.detach().double(), rtol=precision, atol=1e-6):
            raise ConfigError(f"{where}: its vision tower holds other weights than model.vision_encoder (first "
                              f"difference in {name}): its projector was trained on another encoder")


def initialise_from_hf(model, folder: str | Path, log=print) -> dict:
    """Load the LLaVA projector of the Hugging Face folder ``folder`` into ``model``'s MLP connector, after the checks
    above; returns what was done in the form :func:`vlbridge.train.checkpoint.initialise_from` returns."""
    folder = Path(folder).expanduser()
    where = f"model.init_from={PREFIX}{folder}"
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{where}: {config_path} is missing (a Hugging Face LLaVA folder is expected)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "llava":
        raise ConfigError(f"{where}: {config_path} field 'model_type' is {config.get('model_type')!r}; "
                          f"{PREFIX} reads a LLaVA folder (model_type 'llava')")
    _check_config(model, config, where)
    _check_vision_tower(model.vision_encoder, folder, config, where)
    tensors = _Tensors(folder, where)
    stored = tensors.names(PROJECTOR)
    net = model.bridge.connector.net
    targets = {"linear_1": net[0], "linear_2": net[2]}
    loaded = []
    with torch.no_grad():
        for hf_name, linear in targets.items():
            for part in ("weight", "bias"):
                own = getattr(linear, part)
                name = f"{hf_name}.{part}"
                if name not in stored:
                    if part == "bias" and not config.get("multimodal_projector_bias", True):
                        own.zero_()  # a bias-free LLaVA projector is ours with zero biases
                        continue
                    raise ConfigError(f"{where}: its projector tensor multi_modal_projector.{name} is missing")
                value = tensors.get(stored[name])
                if tuple(value.shape) != tuple(own.shape):
                    raise ConfigError(f"{where}: multi_modal_projector.{name} is {tuple(value.shape)}, this model's "
                                      f"projector needs {tuple(own.shape)} (model.bridge_options.hidden: LLaVA's is "
                                      "the LM width)")
                own.copy_(value.to(own.dtype))
                loaded.append(_own_name(model, own))
    names = dict(model.named_parameters())
    result = {"checkpoint": f"{PREFIX}{folder}", "loaded": sorted(loaded),
              "not_in_checkpoint": sorted(k for k, p in names.items() if p.requires_grad and k not in loaded),
              "not_in_model": ["its language model (this run's is model.language_model)",
                               "its vision tower (checked equal to model.vision_encoder)"]}
    log(f"initialised the projector ({len(loaded)} tensors) from the LLaVA folder {folder}; its language model is "
        f"not loaded (this run's is model.language_model); trained from their initialisation: "
        f"{len(result['not_in_checkpoint'])} other tensors")
    return result


def _own_name(model, tensor: torch.Tensor) -> str:
    return next(n for n, p in model.named_parameters() if p is tensor)
