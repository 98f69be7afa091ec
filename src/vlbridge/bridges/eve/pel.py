"""EVE's Patch Embedding Layer (PEL): pixels straight to LM-width vectors, no vision encoder (METHODS.md 4.2).

EVE (encoder-free VLM; code baaivision/EVE, EVEv1) replaces the vision encoder by one small layer. Per image, from
the (4, S, S) canvas :meth:`EVEPatchEmbedding.preprocess` gives (METHODS.md 4.1, ``connectors/canvas.py``)::

    P   = Conv2d(3, C, kernel = stride = p, bias=False)(RGB), cropped to the valid region   (C, r*h, r*w)
    Q0  = avg_pool2d(P, r)                                                                 (h*w, C)
    L   = Q0 + proj(attention(q = Linear(LN(Q0)), k, v = Linear(LN(its own r x r of P)))) (h*w, C) local, 8 heads
    CLS = cls + proj(attention(q = Linear(LN(cls)), k, v = Linear(LN(L))))                 (1, C)   global
    seq = [CLS] + for each row i of the h x w grid: (its w tokens of L, then SPLIT)         (1 + h*(w+1), C)
    out = Linear(C, d) -> GELU -> Linear(d, d)                                              (1 + h*(w+1), d)

**Token layout** (what the Patch Aligning Layer reads back from the LM's hidden states at the image's
positions): position 0 is CLS; the token of grid row i, column j is at ``1 + i*(w+1) + j``; the SPLIT closing
row i is at ``1 + i*(w+1) + w``. So positions ``1:`` reshaped to (h, w+1), with the last column dropped, are
the h x w grid in raster order. :meth:`EVEPatchEmbedding.grid_shapes` gives each image's (h, w) from its
pixels by the rule the forward uses. A blank canvas (all-zero valid channel: a text-only sample) gives no
tokens at all, CLS included (length 0).

Our choices (METHODS.md leaves them open; docs/eve.md):

- the crop is the bounding box of the (p*r)-pixel *cells* holding any valid pixel. Our preprocessing pastes
  whole cells (the short side a multiple of p*r, the centring offset rounded down to a multiple of p*r), so
  this is the patch-level crop followed by pooling; a hand-made mask not aligned to cells is rounded outwards;
- the convolution runs on the kept cells only (kernel = stride = p, so that equals the convolution of the
  whole image, cropped), and so does everything after it: padding and blank canvases cost nothing;
- each attention has one LayerNorm on its query side and one on its key/value side, Linear layers with
  biases, softmax scale ``(C / heads) ** -0.5``; CLS and SPLIT start as N(0, 0.02^2) vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector, is_positive_int
from vlbridge.bridges.connectors.canvas import fit_long_side, grid_shape, paste_on_canvas, valid_cell_box
from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.bridges.connectors.patch import IMAGENET_MEAN, IMAGENET_STD
from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class EVEPatchOptions:
    """EVE's patch embedding layer: the canvas, the patch grid, its width and attention heads. The defaults are
    sized for a 2-core CPU (224 px: 16 x 16 patches -> 8 x 8 tokens -> 73 vectors); the paper's are
    ``image_size=672`` (601 vectors) and ``image_size=1344`` (2353)."""

    image_size: int = 224  # S, canvas side and long side after resizing; a multiple of patch * pool
    patch: int = 14  # p, the Conv2d's kernel and stride (EVE: 14, its teacher's patch)
    pool: int = 2  # r, avg_pool2d window: one token per r x r patches, attending to them (EVE: 2)
    width: int = 256  # C, the PEL's width before the MLP to the LM width (ours: small, for CPU training)
    heads: int = 8  # heads of the local and the global attention (EVE: 8); must divide width
    # 0..1 RGB normalisation: ImageNet's, the packaged DINOv2 teacher's (EVE's CLIP teacher would want
    # (0.4815, 0.4578, 0.4082) and (0.2686, 0.2613, 0.2758))
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _check(name: str, ok: bool, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"eve_patch connector option {name}={value!r}: {why}")


class ResidualAttention(nn.Module):
    """Queries (N, T, C) attend to keys (N, S, C), H heads: ``queries + proj(attention)``.

    q = Linear(LN(queries)); k, v = Linear(LN(keys)); keys where ``key_mask`` (N, S) is False get no weight
    (a row with none gives a finite result the caller discards: never NaN)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.width, self.heads = width, heads
        self.query_norm, self.key_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor | None = None) -> Tensor:
        N, T, C = queries.shape
        S, H = keys.shape[1], self.heads
        q = self.query(self.query_norm(queries)).reshape(N, T, H, C // H).transpose(1, 2)  # (N, H, T, C/H)
        k, v = self.key_value(self.key_norm(keys)).reshape(N, S, 2, H, C // H).permute(2, 0, 3, 1, 4)  # (N, H, S, C/H)
        scores = (q @ k.transpose(-1, -2)) * (C // H) ** -0.5  # (N, H, T, S)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(N, T, C)  # (N, T, C)
        return queries + self.proj(attended)

    def flops(self, queries: int, keys: int) -> int:
        """One instance, ``queries`` x ``keys`` (:mod:`vlbridge.flops` conventions): q and proj over the queries,
        k and v over the keys, scores and weighted values over both (H heads of C/H: C wide in all)."""
        C, T, S = self.width, queries, keys
        return 2 * T * C * C + 2 * S * C * 2 * C + 2 * (2 * T * S * C) + 2 * T * C * C


class EVEPatchEmbedding(Connector):
    """(B, 4, S, S) canvases (or (B, 3, S, S), all valid) -> ((B, n_max, d) vectors, (B,) lengths), each
    image's ``1 + h*(w+1)`` vectors in the module docstring's layout, then zeros.

    ``projection`` maps each C-wide token to the LM width on its own (EVE: Linear(C, d) -> GELU -> Linear(d, d),
    an :class:`MLPProjector`). Built by :func:`build_eve_patch`.
    """

    consumes = "pixels"

    def __init__(self, projection: nn.Module, image_size: int, patch: int, pool: int = 2, width: int = 256,
                 heads: int = 8, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        for name, value in (("patch", patch), ("pool", pool), ("image_size", image_size), ("width", width),
                            ("heads", heads)):
            _check(name, is_positive_int(value), value, "must be a positive integer")
        _check("image_size", image_size % (patch * pool) == 0, image_size,
               f"must be a multiple of patch * pool = {patch * pool} (whole pooled cells)")
        _check("heads", width % heads == 0, heads, f"must divide width={width}")
        _check("mean", isinstance(mean, (tuple, list)) and len(mean) == 3, mean, "must hold 3 values (R, G, B)")
        _check("std", isinstance(std, (tuple, list)) and len(std) == 3 and all(s > 0 for s in std), std,
               "must hold 3 positive values (R, G, B)")
        linears = [m for m in projection.modules() if isinstance(m, nn.Linear)]
        if not linears or linears[0].in_features != width:
            raise ValueError(f"projection must start with a Linear of width={width} inputs")
        self.image_size, self.patch, self.pool, self.width, self.heads = image_size, patch, pool, width, heads
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.local_attention = ResidualAttention(width, heads)
        self.global_attention = ResidualAttention(width, heads)
        self.cls_token = nn.Parameter(torch.randn(width) * 0.02)
        self.split_token = nn.Parameter(torch.randn(width) * 0.02)
        self.projection = projection
        self.input_width = 3
        self.output_width = linears[-1].out_features

    # --- geometry ------------------------------------------------------------------------------------
    @property
    def cell(self) -> int:
        """Pixels on a side of one pooled token's r x r patches: p * r."""
        return self.patch * self.pool

    @property
    def max_inputs(self) -> int:
        """Patches of the largest (square) image, (S / p)^2: the ``num_inputs`` the cost methods take."""
        return (self.image_size // self.patch) ** 2

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) in pixels an image is resized to: long side S, short side a multiple of p * r."""
        return fit_long_side(width, height, self.image_size, self.cell)

    def num_tokens(self, width: int, height: int) -> int:
        """Vectors an image of ``width`` x ``height`` pixels gives (its ``lengths`` entry): 1 + h*(w+1)."""
        w, h = (side // self.cell for side in self.resized_size(width, height))
        return 1 + h * (w + 1)

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images (any mode and size) -> (B, 4, S, S) float32: normalised RGB resized by
        :meth:`resized_size` and pasted centred on a mean-colour (0) canvas, each offset rounded down to a
        multiple of p * r so the valid region is whole cells; channel 3 is 1 inside the image, 0 outside."""
        return paste_on_canvas(images, self.image_size, self.mean, self.std, self.resized_size, centre_cell=self.cell)

    def _kept_cells(self, pixels: Tensor) -> Tensor:
        """(B, 4 or 3, H, W) -> (B, H / (p r), W / (p r)) bool: the cells inside the valid region's bounding box
        (every cell with 3 channels); all False for a blank canvas."""
        if pixels.dim() != 4 or pixels.shape[1] not in (3, 4):
            raise ValueError(f"expected pixels (B, 4, H, W) or (B, 3, H, W), got {tuple(pixels.shape)}")
        B, C, H, W = pixels.shape
        if H % self.cell or W % self.cell:
            raise ValueError(f"pixel size {H} x {W} is not a multiple of patch * pool = {self.cell}")
        if C == 3:
            return torch.ones(B, H // self.cell, W // self.cell, dtype=torch.bool, device=pixels.device)
        return valid_cell_box(pixels[:, 3], self.cell)

    def grid_shapes(self, pixels: Tensor) -> Tensor:
        """(B, 4, H, W) pixels -> (B, 2) long: each image's pooled grid (h, w), (0, 0) for a blank canvas."""
        return grid_shape(self._kept_cells(pixels))

    def grid_cells(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """For the patch aligning layer: (B, n_max) bool, which of each image's vectors are grid tokens (not CLS,
        not SPLIT: position 1 + i*(w+1) + j, j < w), and the grids (B, 2) long."""
        shapes = self.grid_shapes(pixels)  # (B, 2)
        h, w = shapes[:, 0], shapes[:, 1]
        lengths = torch.where(h * w > 0, 1 + h * (w + 1), 0)  # (B,)
        position = torch.arange(int(lengths.max()) if len(lengths) else 0, device=pixels.device)[None, :]  # (1, n)
        column = (position - 1) % (w[:, None] + 1)  # (B, n): w at a SPLIT
        return (position >= 1) & (position < lengths[:, None]) & (column < w[:, None]), shapes

    # --- forward -------------------------------------------------------------------------------------
    def tokens(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 4, H, W) pixels -> the C-wide sequences before the MLP, one image after another
        (sum of lengths, C), and lengths (B,) long: 1 + h*(w+1), or 0 for a blank canvas."""
        kept = self._kept_cells(pixels)  # (B, Gh, Gw)
        B, _, H, W = pixels.shape
        c, r, C = self.cell, self.pool, self.width
        weight = self.patch_embed.weight
        # the kept cells, image after image, each in raster order: (B, 3, Gh, c, Gw, c) -> (N, 3, c, c)
        cells = pixels[:, :3].reshape(B, 3, H // c, c, W // c, c).permute(0, 2, 4, 1, 3, 5)[kept].to(weight.dtype)
        fine = self.patch_embed(cells)  # (N, C, r, r): P, the r x r patches of each cell
        pooled = F.avg_pool2d(fine, r).flatten(1)  # (N, C): Q0
        local = self.local_attention(pooled[:, None], fine.flatten(2).transpose(1, 2))[:, 0]  # (N, C): L

        h, w = grid_shape(kept).unbind(1)  # (B,) each image's grid
        count = h * w  # (B,) local tokens per image
        slots = torch.arange(int(count.max()), device=kept.device)[None, :] < count[:, None]  # (B, m_max)
        grouped = local.new_zeros(*slots.shape, C).masked_scatter(slots[..., None], local)  # (B, m_max, C)
        # a copy, not a view: torch's module tracker (under FlopCounterMode) fails on a view of a parameter made
        # under no_grad and passed to a submodule
        cls = self.global_attention(self.cls_token.repeat(B, 1, 1), grouped, slots)[:, 0]  # (B, C)

        # where every token goes in the flat sequence: image b starts at start[b]
        lengths = torch.where(count > 0, 1 + h * (w + 1), 0)  # (B,)
        start = lengths.cumsum(0) - lengths  # (B,)
        image, gy, gx = kept.nonzero(as_tuple=True)  # (N,) each, in the order of `local`
        top, left = kept.any(2).int().argmax(1), kept.any(1).int().argmax(1)  # (B,) the box's first row, column
        local_at = start[image] + 1 + (gy - top[image]) * (w[image] + 1) + (gx - left[image])  # (N,)
        row_image = torch.repeat_interleave(torch.arange(B, device=kept.device), h)  # (sum h,)
        row = torch.arange(row_image.numel(), device=kept.device) - (h.cumsum(0) - h)[row_image]  # (sum h,)
        split_at = start[row_image] + 1 + row * (w[row_image] + 1) + w[row_image]  # (sum h,)
        has = count > 0  # (B,)
        items = torch.cat([cls[has], local, self.split_token.expand(row.numel(), C)])  # (sum of lengths, C)
        at = torch.cat([start[has], local_at, split_at])
        sequence = items.new_zeros(int(lengths.sum()), C).index_copy(0, at, items)  # (sum of lengths, C)
        return sequence, lengths

    def forward(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 4, H, W) (or (B, 3, H, W), all valid), H and W multiples of p * r -> vectors (B, n_max, d), each
        row's ``lengths[b]`` vectors in the module docstring's layout then zeros, and lengths (B,) long."""
        sequence, lengths = self.tokens(pixels)  # (sum of lengths, C), (B,)
        vectors = self.projection(sequence)  # (sum of lengths, d)
        B = lengths.shape[0]
        n_max = int(lengths.max()) if B else 0
        slots = torch.arange(n_max, device=lengths.device)[None, :] < lengths[:, None]  # (B, n_max)
        out = vectors.new_zeros(B, n_max, self.output_width).masked_scatter(slots[..., None], vectors)
        return out, lengths

    # --- cost ----------------------------------------------------------------------------------------
    def _grid_side(self, num_inputs: int) -> int:
        """The pooled grid side g of a square image of ``num_inputs`` patches ((g * r)^2 of them)."""
        side = math.isqrt(num_inputs)
        if side * side != num_inputs or side % self.pool:
            raise ValueError(f"num_inputs={num_inputs} is not a square grid of patches whose side pool={self.pool} "
                             "divides")
        return side // self.pool

    def num_output_tokens(self, num_inputs: int) -> int:
        """Vectors of a square image of ``num_inputs`` patches (:attr:`max_inputs`: the largest): 1 + g*(g+1)."""
        g = self._grid_side(num_inputs)
        return 1 + g * (g + 1)

    def example_input(self, num_inputs: int) -> Tensor:
        """One square, all-valid canvas of ``num_inputs`` patches: (1, 4, g*r*p, g*r*p)."""
        size = self._grid_side(num_inputs) * self.cell
        dtype = self.patch_embed.weight.dtype
        return torch.cat([torch.zeros(1, 3, size, size, dtype=dtype), torch.ones(1, 1, size, size, dtype=dtype)], 1)

    def flops(self, num_inputs: int) -> int:
        """Forward FLOPs of one square image of ``num_inputs`` patches, closed form (:mod:`vlbridge.flops`
        conventions: 2 per multiply-add, matrix products only, biases ignored). With g x g tokens:
        the convolution 2·n·3p²·C; the local attention g² times (1 query, r² keys); the global attention once
        (1 query, g² keys); the projection's Linears over the 1 + g(g+1) tokens. Pooling, norms, softmax and
        the layout cost no matrix products."""
        g = self._grid_side(num_inputs)
        conv = 2 * num_inputs * 3 * self.patch * self.patch * self.width
        local = g * g * self.local_attention.flops(1, self.pool * self.pool)
        global_ = self.global_attention.flops(1, g * g)
        linears = sum(m.in_features * m.out_features for m in self.projection.modules() if isinstance(m, nn.Linear))
        return conv + local + global_ + 2 * self.num_output_tokens(num_inputs) * linears


def build_eve_patch(input_width: int, output_width: int, options: EVEPatchOptions) -> EVEPatchEmbedding:
    """A new random EVE patch embedding layer from RGB pixels (``input_width`` 3) to ``output_width`` (the LM
    width), its MLP ``Linear(C, d) -> GELU -> Linear(d, d)``. Bad values raise :class:`ConfigError` naming the
    option."""
    _check("input_width", input_width == 3, input_width, "the EVE patch embedding reads RGB pixels (3)")
    _check("output_width", is_positive_int(output_width), output_width, "must be a positive integer")
    _check("width", is_positive_int(options.width), options.width, "must be a positive integer")
    projection = MLPProjector(options.width, output_width, output_width, "gelu", layers=2)
    return EVEPatchEmbedding(projection, options.image_size, options.patch, options.pool, options.width,
                             options.heads, options.mean, options.std)
