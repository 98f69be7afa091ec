"""What a checkpoint's trained tensors were trained on: the LM's and vision encoder's description and a fingerprint
of their pretrained weights, the tensors left untrained, and the library versions (recorded in ``meta.json`` by
:mod:`vlbridge.train.checkpoint`, compared when a checkpoint loads)."""

from __future__ import annotations

import hashlib
import platform
from importlib.metadata import PackageNotFoundError, version

import torch

from vlbridge.train.parameter_groups import group_of

LIBRARIES = ("vlbridge", "torch", "transformers", "safetensors", "accelerate", "peft")
FINGERPRINT_VALUES = 4096  # evenly spaced values per tensor that enter a weights fingerprint


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def fingerprint_sample(tensor: torch.Tensor) -> tuple[str, bytes]:
    """A tensor's dtype and ``FINGERPRINT_VALUES`` evenly spaced values, as :func:`fingerprint` reads them."""
    flat = tensor.detach().reshape(-1)
    sample = flat[:: max(1, flat.numel() // FINGERPRINT_VALUES)][:FINGERPRINT_VALUES]
    return str(tensor.dtype), sample.to("cpu", torch.float64).numpy().tobytes()


AS_LOADED = "fingerprint_as_loaded"  # attribute of a frozen weight stored in another precision (vlbridge.precision)


def fingerprint(named_tensors) -> str:
    """SHA-256 of each tensor's name, shape, dtype and ``FINGERPRINT_VALUES`` evenly spaced values.

    Reading every value of a multi-GB LM at each save would take seconds to minutes; a sample of every
    tensor tells different pretrained weights apart just as surely (they differ everywhere). A weight stored in
    bf16 after loading counts as loaded (its :data:`AS_LOADED` sample), so the identity does not change with the
    precision it runs in."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        dtype, values = getattr(tensor, AS_LOADED, None) or fingerprint_sample(tensor)
        digest.update(f"{name}|{tuple(tensor.shape)}|{dtype}|".encode())
        digest.update(values)
    return digest.hexdigest()[:16]


SOURCES = ("lm", "vision", "teacher")  # parameter groups rebuilt from their packages or folders, never saved
TRAINING_ONLY = ("teacher", "aligner")  # built for training only; an aligner's tensors go to TRAINING_WEIGHTS


def model_identity(model, trained: set[str]) -> dict:
    """What a checkpoint's trained tensors were trained on: the LM and the vision encoder, described
    and fingerprinted over their pretrained parameters that are not among ``trained``; and ``untrained``, the
    model's new tensors (bridge, adapters, LoRA) left out of ``trained`` (at their initialisation, or from
    ``model.init_from``), so a loader knows every other new tensor must be in the checkpoint."""
    pretrained = [(n, p) for n, p in model.named_parameters() if n not in trained]
    config = model.language_model.config
    identity = {
        "language_model": {
            "architecture": config.model_type,
            "width": config.hidden_size,
            "layers": config.num_hidden_layers,
            "vocab": config.vocab_size,
            "fingerprint": fingerprint((n, p) for n, p in pretrained if group_of(n) == "lm"),
        },
        "vision_encoder": None,
        "untrained": sorted(n for n, _ in pretrained if group_of(n) not in SOURCES),
    }
    encoder = model.vision_encoder
    if encoder is not None:
        identity["vision_encoder"] = {
            "weights": encoder.backbone.weights_id,
            "layer": encoder.layer,
            "preprocessing": encoder.backbone.preprocessing.describe(),
            "fingerprint": fingerprint((n, p) for n, p in pretrained if group_of(n) == "vision"),
        }
    return identity
