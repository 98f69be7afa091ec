"""Which parameters train: named groups, chosen by a stage, applied by one function and logged."""

from __future__ import annotations

from typing import Callable

from torch import nn

from vlbridge.errors import ConfigError

# group name -> predicate on a parameter's full name inside VisionLanguageModel
GROUPS: dict[str, Callable[[str], bool]] = {
    "bridge": lambda name: name.startswith("bridge."),
    "lora": lambda name: name.startswith("language_model.") and "lora_" in name,
    "lm": lambda name: name.startswith("language_model.") and "lora_" not in name,
    "vision_adapters": lambda name: name.startswith("vision_encoder.") and ".adapter" in name,
    "vision": lambda name: name.startswith("vision_encoder.") and ".adapter" not in name,
    "teacher": lambda name: name.startswith("teacher."),  # never trains (a frozen training-time teacher)
    "aligner": lambda name: name.startswith("aligner."),  # learns from the teacher, in training only (EVE's PAL)
}


def group_of(name: str) -> str:
    for group, member in GROUPS.items():
        if member(name):
            return group
    return "other"


def apply_trainable(model: nn.Module, groups: list[str]) -> dict[str, dict[str, int]]:
    """Make exactly the parameters of ``groups`` trainable; return {group: {total, trainable}}."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ConfigError(f"unknown parameter group(s) {unknown}; valid: {sorted(GROUPS)}")
    if "teacher" in groups:
        raise ConfigError("the teacher encoder stays frozen (it is the target of an auxiliary loss); remove 'teacher' "
                          "from train.trainable")
    counts: dict[str, dict[str, int]] = {}
    for name, parameter in model.named_parameters():
        group = group_of(name)
        parameter.requires_grad_(group in groups)
        entry = counts.setdefault(group, {"total": 0, "trainable": 0})
        entry["total"] += parameter.numel()
        entry["trainable"] += parameter.numel() if parameter.requires_grad else 0
    return counts


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    lines = [f"{'group':<16}{'parameters':>14}{'trainable':>14}"]
    for group, c in counts.items():
        lines.append(f"{group:<16}{c['total']:>14,}{c['trainable']:>14,}")
    total = sum(c["total"] for c in counts.values())
    trainable = sum(c["trainable"] for c in counts.values())
    lines.append(f"{'all':<16}{total:>14,}{trainable:>14,}  ({100 * trainable / max(total, 1):.3f} % trainable)")
    return "\n".join(lines)
