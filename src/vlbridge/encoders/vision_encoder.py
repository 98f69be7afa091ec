"""The frozen vision encoder: grid (patch) features from a chosen layer, plus the pooled vector.

Grid features come from a chosen layer of a ViT (default: the penultimate, as LLaVA and MemVP use
CLIP's), with the CLS and register tokens dropped; the backbone is stopped right after that layer unless
the pooled vector is wanted. For a CNN the grid is the last feature map before global pooling (MemVP's
BART/T5 setting), flattened to tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from PIL import Image
from torch import nn

from vlbridge.encoders.adapters import BottleneckAdapter
from vlbridge.encoders.image_transforms import preprocess_images
from vlbridge.errors import ConfigError
from vlbridge.weights.backbone import VisionBackbone


@dataclass
class VisionFeatures:
    """What the vision encoder hands to a connector."""

    grid: torch.Tensor  # (B, n, d_v) patch / grid-cell features, before pooling
    pooled: torch.Tensor | None  # (B, d_v) the backbone's own pooled vector; None if not computed


class _StopBackbone(Exception):
    """Raised from a forward hook once the wanted layer has run: the later layers are skipped."""


class VisionEncoder(nn.Module):
    """Wraps a :class:`VisionBackbone`; frozen (no gradients, eval mode) unless ``frozen=False``.

    ``layer`` indexes the ViT's hidden states as Hugging Face's ``output_hidden_states`` does
    (``1..L`` = after block ``1..L``, negative from the end: ``-1`` = last block's output before the final
    norm, ``-2`` = penultimate); ``None`` means ``-2``. For a CNN only the final map exists (``None`` or ``-1``).
    ``adapter_dim`` adds MemVP bottleneck adapters to the blocks up to ``layer`` (trainable even when the
    backbone is frozen).
    ``compute_pooled=False`` returns ``pooled=None`` and stops the ViT at ``layer``.
    """

    def __init__(
        self,
        backbone: VisionBackbone,
        layer: int | None = None,
        adapter_dim: int | None = None,
        adapter_scale: float = 0.1,
        frozen: bool = True,
        compute_pooled: bool = True,
    ):
        super().__init__()
        self.backbone = backbone  # plain attribute: the facts; the network itself is registered as `model`
        self.model = backbone.model
        self.compute_pooled = compute_pooled
        self.feature_dim = backbone.feature_dim
        if backbone.kind == "vit":
            self.layer = -2 if layer is None else layer
            self._block_index = self._resolve_layer(self.layer)
        elif backbone.kind == "cnn":
            if layer not in (None, -1):
                raise ConfigError(f"layer={layer}: a CNN backbone only gives its final feature map (layer -1 or None)")
            self.layer, self._block_index = -1, None
        else:
            raise ConfigError(f"unknown backbone kind {backbone.kind!r}; valid: ['cnn', 'vit']")
        height, width = backbone.preprocessing.output_size
        if backbone.kind == "vit":
            self.num_tokens = (height // backbone.stride) * (width // backbone.stride)
        else:  # "same"-padded strided convolutions round up
            self.num_tokens = math.ceil(height / backbone.stride) * math.ceil(width / backbone.stride)
        self.adapters: nn.ModuleList | None = None
        self._adapter_outputs: dict[int, torch.Tensor] = {}
        if adapter_dim is not None:
            self._install_adapters(adapter_dim, adapter_scale)
        self.frozen = frozen
        self.model.requires_grad_(not frozen)
        self.train(False)

    # ----------------------------------------------------------------- configuration
    def _resolve_layer(self, layer: int) -> int:
        n = self.backbone.num_layers
        index = layer if layer >= 0 else n + 1 + layer  # hidden_states has n + 1 entries
        if not 1 <= index <= n:
            raise ConfigError(f"layer={layer} is out of range for a {n}-block ViT (valid: 1..{n} or -{n}..-1)")
        return index - 1  # the block whose output is hidden_states[index]

    def _install_adapters(self, hidden: int, scale: float) -> None:
        if self.backbone.kind != "vit":
            raise ConfigError("adapter_dim: adapters are defined for ViT blocks, not for a CNN backbone")
        # only the blocks the grid comes from: an adapter after the grid layer would get no gradient from
        # the grid (a dead parameter, which also breaks DDP's default unused-parameter check)
        blocks = self.backbone.blocks[: self._block_index + 1]
        self.adapters = nn.ModuleList(BottleneckAdapter(self.feature_dim, hidden, scale) for _ in blocks)
        for i, block in enumerate(blocks):
            ffn = getattr(block, "mlp", None)
            if ffn is None:
                raise ConfigError(f"{type(block).__name__} has no `mlp` module to put an adapter beside")
            # MemVP: block output += s * adapter(normalised FFN input): capture the FFN's input, add at the end
            ffn.register_forward_hook(partial(self._adapter_ffn_hook, i))
            block.register_forward_hook(partial(self._adapter_block_hook, i))

    def _adapter_ffn_hook(self, i: int, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        # a trained adapter stays fp32 beside a backbone stored in bf16 (vlbridge.precision)
        adapter = self.adapters[i]
        self._adapter_outputs[i] = adapter(args[0].to(adapter.down.weight.dtype))

    def _adapter_block_hook(self, i: int, module: nn.Module, args: tuple, output):
        delta = self._adapter_outputs.pop(i).to((output[0] if isinstance(output, tuple) else output).dtype)
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, eval mode) or unfreeze the backbone; adapters always stay trainable."""
        self.frozen = frozen
        self.model.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "VisionEncoder":
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps eval behaviour (dropout off, BatchNorm statistics fixed)
            self.model.eval()
        return self

    # ----------------------------------------------------------------- features
    @property
    def identity(self) -> str:
        """Names the weights, the layer and the preprocessing (cache key for features)."""
        layer = "final-map" if self.backbone.kind == "cnn" else f"layer{self.layer}"
        adapters = f"|adapters{self.adapters[0].down.out_features}" if self.adapters is not None else ""
        return f"{self.backbone.weights_id}|{layer}|{self.backbone.preprocessing.describe()}{adapters}"

    @property
    def cacheable(self) -> bool:
        """Features depend only on the image: frozen weights and no trainable adapters."""
        return self.frozen and self.adapters is None

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images of any mode and size -> (B, 3, H, W) with the backbone's own preprocessing."""
        return preprocess_images(images, self.backbone.preprocessing)

    @property
    def dtype(self) -> torch.dtype:
        """The backbone's dtype (fp32, or bf16 once stored so: vlbridge.precision); its features come in it."""
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:  # (B, 3, H, W)
        pixel_values = pixel_values.to(self.dtype)
        if self.backbone.kind == "cnn":
            feature_map = self.model.extract_features(pixel_values)  # (B, C, h, w)
            grid = feature_map.flatten(2).transpose(1, 2)  # (B, h*w, C)
            pooled = feature_map.mean(dim=(2, 3)) if self.compute_pooled else None  # global average pool
            return VisionFeatures(grid=grid, pooled=pooled)
        return self._forward_vit(pixel_values)

    def _forward_vit(self, pixel_values: torch.Tensor) -> VisionFeatures:
        captured: list[torch.Tensor] = []
        stop = not self.compute_pooled

        def capture(module: nn.Module, args: tuple, output) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            if stop:
                raise _StopBackbone

        handle = self.backbone.blocks[self._block_index].register_forward_hook(capture)
        try:
            outputs = self.model(pixel_values=pixel_values)
            pooled = outputs.pooler_output  # (B, d_v): the model's own pooled vector
        except _StopBackbone:
            pooled = None
        finally:
            handle.remove()
            self._adapter_outputs.clear()
        grid = captured[0][:, self.backbone.num_prefix_tokens:, :]  # (B, n, d_v): CLS / registers dropped
        return VisionFeatures(grid=grid, pooled=pooled)
