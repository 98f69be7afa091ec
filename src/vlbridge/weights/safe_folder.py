"""Load a Hugging Face model folder from its safetensors weights only, never from a pickle.

``pytorch_model.bin`` and other ``.bin``/``.pt`` weights are pickles: reading one can run any code its author
put in it. Whether transformers falls back to them depends on its version and on which files a folder holds,
so every local folder is loaded with ``use_safetensors=True``, and a folder without safetensors weights is
refused up front, naming it and the pickle files it holds.
"""

from __future__ import annotations

from pathlib import Path

from vlbridge.errors import ConfigError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_safetensors_folder(folder: Path) -> None:
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = f"it holds {pickles}, pickle files that can run code when read, which vlbridge never loads" \
        if pickles else "it holds no weight file"
    raise ConfigError(
        f"{folder}: no safetensors weights (*.safetensors); {found}. Convert a copy you trust once with "
        "transformers (from_pretrained(..., use_safetensors=False), then save_pretrained, which writes "
        "model.safetensors) and load that folder")


def from_safetensors(model_class, folder: str | Path, **kwargs):
    """``model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True, **kwargs)`` after
    checking the folder has safetensors weights."""
    check_safetensors_folder(Path(folder))
    return model_class.from_pretrained(folder, local_files_only=True, use_safetensors=True, **kwargs)
