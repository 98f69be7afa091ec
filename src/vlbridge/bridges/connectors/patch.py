"""The encoder-free connector: image patches projected linearly straight into the LM's input space.

Fuyu-8B (Adept 2023) has no vision encoder: each p x p patch is flattened and one Linear maps it to the
LM width, at the image's own aspect ratio. This is the simplest connector that reads pixels
(``consumes = "pixels"``); EVE's patch embedding layer (METHODS.md 4.2) follows the same interface.

Any aspect ratio in one batch (METHODS.md 4.1, EVE's scheme, with our choices marked):

- ``aspect="keep"``: the long side is resized to ``image_size``, the short side to the nearest multiple
  of ``patch`` (at least one patch), so every image covers a whole h x w grid of patches;
- the resized image is pasted on an ``image_size`` x ``image_size`` canvas of the mean colour (0 after
  normalisation, as EVE) with a 4th "valid pixel" channel, 1 inside the image. We paste at the *top-left*
  (as Fuyu pads at the bottom and right), not centred as EVE: a centred offset ``(S - h) / 2`` is not
  always a multiple of ``patch``, a top-left one always is (0), so the valid region is exactly whole
  patches (EVE's PEL pastes centred with the offset rounded to whole cells instead; the preprocessing
  both use is ``connectors/canvas.py``);
- after patchify the grid is cropped to the bounding box of the patches holding valid pixels (EVE), so a
  row carries ``h * w`` vectors in raster order and no padding tokens; rows are then padded with zeros to
  the longest and ``lengths`` says how many are real.

Unlike Fuyu we add no image-newline token after each patch row (EVE's SPLIT vector belongs to its PEL);
the LM sees the grid only through raster order. Within a patch the values are flattened as
(row, column, channel), Fuyu's ``FuyuImageProcessor.patchify_image`` layout, so its ``vision_embed_tokens``
weights would load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector, is_positive_int
from vlbridge.bridges.connectors.canvas import fit_long_side, grid_shape, paste_on_canvas, valid_cell_box
from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECTS = ("keep", "square")


@dataclass(frozen=True)
class PatchOptions:
    """The linear patch embedding (Fuyu-8B): how images become patches and how patches become vectors."""

    image_size: int = 224  # S, the long side after resizing and the canvas side; a multiple of patch
    patch: int = 16  # p, the side of a square patch in pixels (Fuyu: 30)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation of 0..1 RGB (Fuyu: 0.5)
    std: tuple[float, float, float] = IMAGENET_STD  # per-channel normalisation of 0..1 RGB (Fuyu: 0.5)
    aspect: str = "keep"  # keep (long side -> S, short side -> nearest multiple of p) | square (S x S)
    hidden: int | None = None  # None = one Linear(3*p*p -> d) (Fuyu); an int = Linear -> GELU -> Linear (ours)


def _check(name: str, ok: bool, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"patch connector option {name}={value!r}: {why}")


class PatchEmbedding(Connector):
    """(B, 4, S, S) canvases (or (B, 3, S, S), all valid) -> ((B, n_max, d) vectors, (B,) lengths).

    ``projection`` maps each flattened patch (3*p*p values) to the LM width independently (Linear layers
    and element-wise activations, e.g. :class:`MLPProjector`); the constructor owns the geometry and the
    preprocessing. Built by :func:`build_patch_connector`.
    """

    consumes = "pixels"

    def __init__(self, projection: nn.Module, patch: int, image_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, aspect: str = "keep"):
        super().__init__()
        _check("patch", is_positive_int(patch), patch, "must be a positive integer")
        _check("image_size", is_positive_int(image_size), image_size, "must be a positive integer")
        _check("image_size", image_size % patch == 0, image_size, f"must be a multiple of patch={patch}")
        _check("mean", isinstance(mean, (tuple, list)) and len(mean) == 3, mean, "must hold 3 values (R, G, B)")
        _check("std", isinstance(std, (tuple, list)) and len(std) == 3 and all(s > 0 for s in std), std,
               "must hold 3 positive values (R, G, B)")
        _check("aspect", aspect in ASPECTS, aspect, f"valid: {list(ASPECTS)}")
        linears = [m for m in projection.modules() if isinstance(m, nn.Linear)]
        if not linears or linears[0].in_features != 3 * patch * patch:
            raise ValueError(f"projection must start with a Linear of 3 * patch**2 = {3 * patch * patch} inputs")
        self.projection = projection
        self.patch, self.image_size, self.aspect = patch, image_size, aspect
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.input_width = 3
        self.output_width = linears[-1].out_features

    # --- geometry ------------------------------------------------------------------------------------
    @property
    def max_inputs(self) -> int:
        """Patches of the largest image, (S / p)^2: the ``num_inputs`` the cost methods take."""
        return (self.image_size // self.patch) ** 2

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) in pixels an image of ``width`` x ``height`` is resized to (both multiples of p)."""
        S, p = self.image_size, self.patch
        if self.aspect == "square":
            return S, S
        return fit_long_side(width, height, S, p)

    def num_patches(self, width: int, height: int) -> int:
        """How many vectors an image of ``width`` x ``height`` pixels gives (its ``lengths`` entry)."""
        w, h = self.resized_size(width, height)
        return (w // self.patch) * (h // self.patch)

    # --- preprocessing -------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images (any mode and size) -> (B, 4, S, S) float32: normalised RGB pasted top-left on a
        mean-colour (0) canvas, and the valid-pixel channel (1 inside the resized image, 0 outside)."""
        return paste_on_canvas(images, self.image_size, self.mean, self.std, self.resized_size)

    # --- forward -------------------------------------------------------------------------------------
    def _kept_patches(self, valid: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """(B, H, W) valid-pixel channel -> (B, gh * gw) bool: the patches inside the bounding box of the
        patches holding any valid pixel (EVE's crop); all False for a blank (text-only) image."""
        return valid_cell_box(valid, self.patch).reshape(valid.shape[0], grid_h * grid_w)

    def grid_cells(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """For an aligner: every vector is a grid cell, (B, n_max) bool, and the grids (B, 2) long (h, w)."""
        B, C, H, W = pixels.shape
        if C == 4:
            kept = valid_cell_box(pixels[:, 3], self.patch)  # (B, gh, gw)
        else:
            kept = torch.ones(B, H // self.patch, W // self.patch, dtype=torch.bool, device=pixels.device)
        shapes = grid_shape(kept)  # (B, 2)
        count = shapes.prod(1)  # (B,)
        n_max = int(count.max()) if B else 0
        return torch.arange(n_max, device=pixels.device)[None, :] < count[:, None], shapes

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 4, H, W) (or (B, 3, H, W), every patch valid), H and W multiples of p ->
        vectors (B, n_max, d), each row's ``lengths[b]`` patch vectors in raster order then zeros, and
        lengths (B,) long."""
        if pixels.dim() != 4 or pixels.shape[1] not in (3, 4):
            raise ValueError(f"expected pixels (B, 4, H, W) or (B, 3, H, W), got {tuple(pixels.shape)}")
        B, C, H, W = pixels.shape
        p = self.patch
        if H % p or W % p:
            raise ValueError(f"pixel size {H} x {W} is not a multiple of patch={p}")
        gh, gw = H // p, W // p
        # (B, 3, gh, p, gw, p) -> (B, gh * gw, p * p * 3): raster order of patches, (row, column, channel)
        # inside each (Fuyu's layout)
        patches = pixels[:, :3].reshape(B, 3, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(B, gh * gw, 3 * p * p)
        if C == 4:
            kept = self._kept_patches(pixels[:, 3], gh, gw)
        else:
            kept = torch.ones(B, gh * gw, dtype=torch.bool, device=pixels.device)
        lengths = kept.sum(dim=1)  # (B,) long
        # project only the kept patches: (sum of lengths, 3*p*p) -> (sum of lengths, d), rows one after another
        weight = next(self.projection.parameters())
        vectors = self.projection(patches[kept].to(weight.dtype))
        n_max = int(lengths.max()) if B else 0
        slots = torch.arange(n_max, device=pixels.device)[None, :] < lengths[:, None]  # (B, n_max)
        out = vectors.new_zeros(B, n_max, self.output_width).masked_scatter(slots[..., None], vectors)
        return out, lengths

    # --- cost ----------------------------------------------------------------------------------------
    def num_output_tokens(self, num_inputs: int) -> int:
        """One vector per patch: ``num_inputs`` (patches of the largest image, :attr:`max_inputs`)."""
        return num_inputs

    def example_input(self, num_inputs: int) -> Tensor:
        """One square, all-valid canvas of ``num_inputs`` patches (a perfect square): (1, 4, g*p, g*p)."""
        side = math.isqrt(num_inputs)
        if side * side != num_inputs:
            raise ValueError(f"num_inputs={num_inputs} is not a square grid of patches")
        dtype = next(self.parameters()).dtype
        size = side * self.patch
        return torch.cat([torch.zeros(1, 3, size, size, dtype=dtype), torch.ones(1, 1, size, size, dtype=dtype)], 1)

    def flops(self, num_inputs: int) -> int:
        """Forward FLOPs for one image of ``num_inputs`` patches, closed form (:mod:`vlbridge.flops`
        conventions: 2 per multiply-add, matrix products only, biases ignored): each Linear of the
        projection runs once per patch; patchify, masking and activations cost no matrix products."""
        return 2 * num_inputs * sum(m.in_features * m.out_features for m in self.projection.modules()
                                    if isinstance(m, nn.Linear))


def build_patch_connector(input_width: int, output_width: int, options: PatchOptions) -> PatchEmbedding:
    """A new random linear patch embedding from RGB pixels (``input_width`` 3) to ``output_width`` (the LM
    width). Bad values raise :class:`ConfigError` naming the option."""
    _check("input_width", input_width == 3, input_width, "a patch connector reads RGB pixels (3)")
    _check("output_width", is_positive_int(output_width), output_width, "must be a positive integer")
    _check("hidden", options.hidden is None or is_positive_int(options.hidden), options.hidden,
           "must be None (one Linear) or a positive integer")
    _check("patch", is_positive_int(options.patch), options.patch, "must be a positive integer")
    patch_dim = 3 * options.patch * options.patch
    if options.hidden is None:
        projection = MLPProjector(patch_dim, output_width, layers=1)
    else:
        projection = MLPProjector(patch_dim, output_width, options.hidden, "gelu", layers=2)
    return PatchEmbedding(projection, options.patch, options.image_size, options.mean, options.std, options.aspect)
