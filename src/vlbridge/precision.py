"""Precision: which dtype the frozen parts are stored and run in, and which the trained parts compute in.

Two recipe settings, each ``auto``, ``fp32`` or ``bf16``:

- ``model.precision``: the frozen pretrained parts (the LM, the vision encoder, the teacher) are *stored* in this
  dtype and the activations that flow through them are in it too (bf16 halves their memory, and their matrix
  products run natively in bf16: no weight is cast per step);
- ``train.precision``: the matrix products of the trained parts (bridge, LoRA, adapters, aligner) during training,
  under ``torch.autocast`` when bf16. Their parameters, gradients and optimizer state are fp32 in every setting, and
  so are the loss and the metrics.

``auto`` resolves by the hardware (:func:`bf16_support`): bf16 on a CPU with AMX or AVX-512-bf16 and on a GPU with
native bf16, fp32 elsewhere. ``VLBRIDGE_AUTO_PRECISION=fp32|bf16`` makes ``auto`` resolve to that value on any
machine (a test suite or a cluster kept on one precision). ``train.precision: auto`` follows ``model.precision``.
bf16 asked for on hardware without native bf16 runs (emulated, usually slower than fp32) after a warning saying so.

The resolved settings are a :class:`Precision`; :func:`store_frozen` casts a model's frozen pretrained
parameters once it is known what trains. docs/precision.md has the reasons and the measurements.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from vlbridge.errors import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")  # valid values of model.precision and train.precision
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
AUTO_ENV = "VLBRIDGE_AUTO_PRECISION"  # fp32 | bf16: what `auto` resolves to on any machine
FROZEN_GROUPS = ("lm", "vision", "teacher")  # parameter groups of pretrained parts (vlbridge.train.parameter_groups)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 products


@dataclass(frozen=True)
class Bf16Support:
    """Whether a device runs bf16 products natively (fast), and why it was judged so."""

    fast: bool
    why: str


@lru_cache(maxsize=None)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def bf16_support(device: torch.device | str = "cpu", flags: frozenset[str] | None = None) -> Bf16Support:
    """A CPU is fast in bf16 when it has AMX-bf16 or AVX-512-bf16 (``flags``, default: /proc/cpuinfo) and torch
    runs its AVX-512 kernels; a CUDA GPU when it has native bf16 (compute capability 8.0 and up). Elsewhere
    bf16 is emulated: correct, but usually slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bf16Support(True, f"GPU {torch.cuda.get_device_name(device)} has native bf16")
        return Bf16Support(False, f"GPU {torch.cuda.get_device_name(device)} has no native bf16 (before Ampere)")
    if device.type != "cpu":
        return Bf16Support(False, f"bf16 speed on {device.type} devices is not known to vlbridge")
    flags = cpu_flags() if flags is None else flags
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if not found:
        return Bf16Support(False, f"the CPU has neither AMX nor AVX-512-bf16 (no {' or '.join(CPU_BF16_FLAGS)} flag)")
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return Bf16Support(False, f"the CPU has {', '.join(found)} but torch runs its {capability} kernels "
                                  "(ATEN_CPU_CAPABILITY?)")
    return Bf16Support(True, f"the CPU has {', '.join(found)}")


def default_device() -> torch.device:
    """The device a run uses: the accelerator if there is one (as the trainer's Accelerator picks), else the CPU."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """Resolved precision settings (:func:`resolve`)."""

    frozen: str  # fp32 | bf16: storage and activations of the frozen pretrained parts
    compute: str  # fp32 | bf16: the trained parts' products in training (autocast)
    requested: tuple[str, str]  # (model.precision, train.precision) as the recipe gave them
    why: str  # how model.precision's auto was resolved (hardware, environment or resumed run); "" if not asked
    device: str = "cpu"  # the device type it was resolved for

    @property
    def frozen_dtype(self) -> torch.dtype:
        return DTYPES[self.frozen]

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.compute]

    @property
    def activations(self) -> str:
        """The dtype most saved activations have: bf16 if either part computes in it (for memory estimates)."""
        return "bf16" if "bf16" in (self.frozen, self.compute) else "fp32"

    def autocast(self, device_type: str):
        """The context of a training forward pass: autocast to bf16 when the trained parts compute in bf16
        (the frozen parts then run in their stored dtype anyway), else nothing."""
        if self.compute == "bf16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return nullcontext()

    def describe(self) -> str:
        """One line for the start-of-run report."""
        return describe(self.to_meta())

    def apply(self, model: nn.Module, training: bool = False) -> None:
        """Store ``model``'s frozen parts in :attr:`frozen_dtype` (:func:`store_frozen`); for ``training`` on a CPU with
        bf16 activations, also switch the LM's attention to one whose backward is fast in bf16 there
        (:mod:`vlbridge.cpu_bf16_attention`)."""
        store_frozen(model, self.frozen_dtype)
        language_model = getattr(model, "language_model", None)
        if language_model is None:
            return
        if module_dtype(language_model) == torch.bfloat16:
            contiguous_head_input(language_model.model)
        if training and self.device == "cpu" and self.activations == "bf16":
            from vlbridge.cpu_bf16_attention import use_for_training

            use_for_training(language_model.model)

    def to_meta(self) -> dict:
        """What a checkpoint records (``meta.json`` ``precision``)."""
        return {"frozen": self.frozen, "compute": self.compute, "requested": list(self.requested), "why": self.why}


def describe(meta: dict) -> str:
    """A precision as recorded (:meth:`Precision.to_meta`) in one line, as the start-of-run report prints it."""
    asked = ", ".join(f"{key}={value}" for key, value in zip(("model.precision", "train.precision"), meta["requested"]))
    compute = "bf16 (autocast)" if meta["compute"] == "bf16" else "fp32"
    return (f"precision: frozen weights and their activations {meta['frozen']}, trained parts' products {compute}; "
            f"trained parameters, gradients, optimizer state and loss fp32 ({asked}"
            + (f"; auto: {meta['why']}" if meta.get("why") else "") + ")")


def check_value(key: str, value: str) -> None:
    if value not in PRECISIONS:
        raise ConfigError(f"{key}={value!r}; valid: {list(PRECISIONS)}")


def _auto(device: torch.device, distributed_fsdp: bool) -> tuple[str, str]:
    """What ``auto`` resolves to here, and why."""
    forced = os.environ.get(AUTO_ENV)
    if forced:
        if forced not in DTYPES:
            raise ConfigError(f"{AUTO_ENV}={forced!r}; valid: {list(DTYPES)}")
        return forced, f"{AUTO_ENV}={forced}"
    if distributed_fsdp:
        return "fp32", "FSDP flattens a module's parameters into one tensor of one dtype, and trained ones stay fp32"
    support = bf16_support(device)
    return ("bf16" if support.fast else "fp32"), support.why


def resolve(model_precision: str, train_precision: str = "auto", device: torch.device | str | None = None,
            recorded: dict | None = None, fsdp: bool = False) -> Precision:
    """The settings ``model.precision`` and ``train.precision`` give on ``device`` (default: :func:`default_device`).

    ``model.precision: auto`` follows the hardware (:func:`bf16_support`); ``train.precision: auto`` follows what
    ``model.precision`` resolved to. ``recorded``: the precision a resumed run recorded (its checkpoint's
    ``meta.json`` ``precision``, or ``{}`` for a run from before the setting existed, which trained in fp32): ``auto``
    then keeps the run's own precision, so the resumed run computes what the uninterrupted one would have, on any
    machine. ``fsdp``: FSDP needs one dtype per module, so ``auto`` gives fp32 there and bf16 is refused.

    bf16 asked for on a device without native bf16 runs, after a warning saying why it will be slow."""
    check_value("model.precision", model_precision)
    check_value("train.precision", train_precision)
    device = torch.device(device) if device is not None else default_device()
    frozen, why = model_precision, ""
    if recorded is not None:
        if model_precision == "auto":
            frozen = recorded.get("frozen", "fp32")
            why = recorded.get("why") or "the resumed run trained in fp32 (it records no precision)"
        compute = recorded.get("compute", frozen) if train_precision == "auto" else train_precision
    else:
        if model_precision == "auto":
            frozen, why = _auto(device, fsdp)
        compute = frozen if train_precision == "auto" else train_precision
    if fsdp and frozen == "bf16":
        raise ConfigError("model.precision=bf16 cannot run under FSDP: FSDP flattens a module's parameters into one "
                          "tensor of one dtype, and the trained ones inside the LM stay fp32; use model.precision=fp32 "
                          "(train.precision=bf16 still computes in bf16)")
    if "bf16" in (frozen, compute):
        support = bf16_support(device)
        if not support.fast:
            logger.warning("bf16 asked for (model.precision=%s, train.precision=%s resolve to %s, %s) but %s: it runs "
                           "emulated, usually slower than fp32 (the frozen weights' memory still halves with "
                           "model.precision=bf16)", model_precision, train_precision, frozen, compute, support.why)
    return Precision(frozen, compute, (model_precision, train_precision), why, device.type)


def recorded_precision(meta: dict) -> dict:
    """The precision a checkpoint's ``meta.json`` records; ``{}`` for one written before the setting existed."""
    value = meta.get("precision")
    return value if isinstance(value, dict) else {}


def frozen_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The parameters of the pretrained parts (LM, vision encoder, teacher) that do not train, except those
    the LM keeps in fp32 on purpose (Hugging Face ``_keep_in_fp32_modules``, e.g. T5's ``wo``)."""
    from vlbridge.train.parameter_groups import group_of

    keep: tuple[str, ...] = ()
    language_model = getattr(model, "language_model", None)
    if language_model is not None:
        keep = tuple(getattr(language_model.model, "_keep_in_fp32_modules", None) or ())
    found = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad or group_of(name) not in FROZEN_GROUPS or not parameter.is_floating_point():
            continue
        if group_of(name) == "lm" and any(f".{module}." in f".{name}" for module in keep):
            continue
        found.append((name, parameter))
    return found


def store_frozen(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen pretrained parameters of ``model`` (:func:`frozen_parameters`) to ``dtype`` in place, and the
    floating buffers of a frozen encoder's network (BatchNorm statistics); trained parameters stay fp32. Call it
    once what trains is set (a trained LM or encoder stays fp32). Each cast weight keeps the fingerprint sample of
    its values as loaded, so checkpoint identities (``vlbridge.train.identity.fingerprint``) are the same in any
    precision. The LM's buffers stay as they are: Hugging Face keeps its rotary frequencies in fp32 on purpose.
    Returns how many parameters changed dtype."""
    from vlbridge.train.identity import AS_LOADED, fingerprint_sample

    changed = 0
    for _, parameter in frozen_parameters(model):
        if parameter.dtype != dtype:
            if not hasattr(parameter, AS_LOADED):  # checkpoints identify the weights as loaded, in any precision
                setattr(parameter, AS_LOADED, fingerprint_sample(parameter))
            parameter.data = parameter.data.to(dtype)
            changed += 1
    for encoder in (getattr(model, "vision_encoder", None), getattr(model, "teacher", None)):
        network = getattr(encoder, "model", None)
        if network is None or any(p.requires_grad for p in network.parameters()):
            continue
        for module in network.modules():
            for key, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and buffer.dtype != dtype:
                    setattr(module, key, buffer.to(dtype))
    return changed


def _contiguous(module: nn.Module, args: tuple):
    return (args[0].contiguous(), *args[1:]) if args and not args[0].is_contiguous() else None


def contiguous_head_input(model: nn.Module) -> None:
    """Make the LM head's input contiguous before its product (once per model). Generation hands the head the last
    position of the prompt, a strided view (B, 1, d); a bf16 ``nn.Linear`` given a strided 3-D input multiplies
    through ``bmm`` with the (V, d) weight expanded and copied per row: 424 ms instead of 9 ms for SmolLM2's head at
    batch 2 (fp32 takes 20 ms either way), most of a short answer's latency."""
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_vlbridge_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous)
        head._vlbridge_contiguous_input = True


def module_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of a module's first floating parameter (what its inputs must be cast to), else ``default``."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return default
