"""EVE's Patch Aligning Layer (PAL, METHODS.md 4.3): during training only, the LM's hidden states at the image's
grid positions learn to predict a frozen teacher encoder's patch features.

For each image whose vectors the LM read (input-space injection), at every grid cell (a connector that reports
its grid, :meth:`grid_cells`: EVE's patch embedding drops CLS and the SPLIT column):

    levels   = hidden states of layers N, N-4, N-8, ... >= 0 (0 = the embedding output)    (cells, K, d)
    keys     = LayerNorm -> Linear(d -> C, no bias), one per level                       (cells, K, C)
    fused    = softmax over the other levels of (keys[last] . keys[other]) / sqrt(C), 8 heads, no projections
    pred     = Linear(d -> C)(h_last) + Linear(C -> C)(fused)                            (cells, C)
    loss     = mean over cells of 1 - cos(pred, teacher cell), averaged over the images of the batch

(EVE's code: the attention scale is the full width's, C^-1/2, not the head's, and the query is the last level's
normalised projection; both kept.) Text-only samples add 0 and are not counted in the mean over images (a row
without an image, or a blank canvas with an empty grid); a batch without any image gives a zero that still
touches every PAL parameter, so that distributed training sees a gradient for each. The PAL needs the image's
vectors in the LM's sequence (the input-space injection); :class:`WithAlignment` refuses any other.

Grids (ours, documented in docs/eve.md): our teacher's features come from its own preprocessing of the whole
image (a square resize, cached like any encoder's), EVE's grid covers the same whole image at its own aspect
ratio, so the two grids cover the same content at different sampling; each is average-pooled to the coarser of
the two along each axis. EVE pools its grid to the teacher's when finer; "if coarser, pool the teacher" is
METHODS.md's (ours) too.

The PAL and the teacher exist in training only: :func:`vlbridge.build.build_model` builds them with
``training=True``; runs store neither in their inference weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbridge.bridges.connectors.base import is_positive_int
from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class PALOptions:
    """The patch aligning layer (EVE's code defaults) and its weight in the total loss."""

    every: int = 4  # levels: every ``every``-th layer counted down from the last (EVE: 4)
    heads: int = 8  # heads of the fusion attention (EVE: 8)
    weight: float = 1.0  # total loss = LM loss + weight x PAL loss (EVE: 1.0, all three stages)


def level_indices(num_layers: int, every: int) -> list[int]:
    """Indices into the LM's hidden states (0 = embedding output, i = after layer i), last layer first:
    num_layers, num_layers - every, ... down to the last one >= 0 (LLaMA-7B: 32, 28, ..., 0)."""
    return list(range(num_layers, -1, -every))


class PatchAligningLayer(nn.Module):
    """(cells, K, d) hidden states at K levels (the last layer's first) -> (cells, C) predicted teacher features."""

    def __init__(self, lm_width: int, teacher_width: int, num_layers: int, options: PALOptions = PALOptions()):
        super().__init__()
        for name, value in (("every", options.every), ("heads", options.heads)):
            if not is_positive_int(value):
                raise ConfigError(f"model.aligner_options.{name}={value!r}: must be a positive integer")
        if not isinstance(options.weight, (int, float)) or not math.isfinite(options.weight) or options.weight < 0:
            raise ConfigError(f"model.aligner_options.weight={options.weight!r}: must be a finite number >= 0")
        if teacher_width % options.heads:
            raise ConfigError(f"model.aligner_options.heads={options.heads}: the teacher's width {teacher_width} "
                              "must be a multiple of it")
        self.levels = level_indices(num_layers, options.every)
        if len(self.levels) < 2:
            raise ConfigError(f"model.aligner_options.every={options.every}: a {num_layers}-layer LM then gives "
                              f"{len(self.levels)} level; the fusion needs at least 2")
        self.heads, self.weight = options.heads, float(options.weight)
        self.level_norms = nn.ModuleList(nn.Sequential(nn.LayerNorm(lm_width), nn.Linear(lm_width, teacher_width,
                                                                                          bias=False))
                                         for _ in self.levels)
        self.input_layer = nn.Linear(lm_width, teacher_width)
        self.output_layer = nn.Linear(teacher_width, teacher_width)

    def forward(self, levels: Tensor) -> Tensor:
        """levels (cells, K, d), K = len(self.levels) in that order (the last layer first) -> (cells, C)."""
        cells, K, _ = levels.shape
        keys = torch.stack([norm(levels[:, k]) for k, norm in enumerate(self.level_norms)], dim=1)  # (cells, K, C)
        C = keys.shape[-1]
        q = keys[:, :1].reshape(cells, 1, self.heads, C // self.heads).transpose(1, 2)  # (cells, heads, 1, C/h)
        kv = keys[:, 1:].reshape(cells, K - 1, self.heads, C // self.heads).transpose(1, 2)  # (cells, h, K-1, C/h)
        attention = ((q @ kv.transpose(-1, -2)) * C ** -0.5).softmax(dim=-1)  # (cells, heads, 1, K-1)
        fused = (attention @ kv).reshape(cells, C)  # (cells, heads, 1, C/h) -> (cells, C)
        return self.input_layer(levels[:, 0]) + self.output_layer(fused)

    def flops(self, cells: int) -> int:
        """Forward FLOPs over ``cells`` grid cells, closed form (:mod:`vlbridge.flops` conventions: 2 per
        multiply-add, matrix products only, biases ignored): K per-level Linears d -> C, the fusion's scores and
        weighted sum over the K - 1 other levels (C wide over all heads), the Linears d -> C and C -> C. The
        norms, softmax, pooling and the cosine loss cost no matrix products."""
        K = len(self.levels)
        d, C = self.input_layer.in_features, self.input_layer.out_features
        return 2 * cells * (K * d * C + 2 * (K - 1) * C + d * C + C * C)

    def loss(self, hidden_states: tuple[Tensor, ...], visual_positions: Tensor, image_rows: Tensor, cells: Tensor,
             shapes: Tensor, teacher: Tensor) -> Tensor:
        """Mean over images of the mean over grid cells of 1 - cos(pred, teacher).

        hidden_states: the LM's (embedding output first), each (B, L', d); visual_positions (B, L') bool, where
        each row's visual vectors sit, in order; image_rows (B_img,) the batch rows holding the images;
        cells (B_img, n_max) bool, which of an image's vectors are grid cells (raster order); shapes (B_img, 2)
        its grid (h, w); teacher (B_img, n_t, C) the teacher's square grid features.

        An image with an empty grid (a blank canvas: EVE's own way of giving a text-only sample an image) adds
        nothing and is not counted, like a row without an image."""
        with_grid = [] if image_rows.numel() == 0 else (shapes.prod(1) > 0).nonzero().flatten().tolist()
        if not with_grid:  # text only: a zero that reaches every parameter (EVE's code does likewise)
            return sum(p.sum() for p in self.parameters()) * 0.0
        levels = torch.stack([hidden_states[i] for i in self.levels], dim=2)  # (B, L', K, d)
        side = math.isqrt(teacher.shape[1])
        if side * side != teacher.shape[1]:
            raise ValueError(f"the teacher's {teacher.shape[1]} features are not a square grid")
        losses = []
        for k in with_grid:
            row = int(image_rows[k])
            h, w = shapes[k].tolist()
            vectors = levels[row][visual_positions[row]]  # (n_k, K, d), the image's vectors in order
            grid = vectors[cells[k, :vectors.shape[0]]]  # (h*w, K, d)
            if grid.shape[0] != h * w:
                raise ValueError(f"image {k}: {grid.shape[0]} grid cells in the sequence, expected {h} x {w}")
            target = (min(h, side), min(w, side))
            grid = _pool(grid.reshape(h, w, -1), target)  # (cells, K * d)
            truth = _pool(teacher[k].reshape(side, side, -1), target)  # (cells, C)
            # an LM stored in bf16 gives bf16 hidden states; the trained aligner reads its own dtype (fp32)
            prediction = self(grid.reshape(grid.shape[0], len(self.levels), -1).to(self.input_layer.weight.dtype))
            losses.append(1 - F.cosine_similarity(prediction, truth.to(prediction.dtype), dim=-1).mean())
        return torch.stack(losses).mean()


def _pool(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """(h, w, c) -> (size[0] * size[1], c) by adaptive average pooling (identity when the sizes match)."""
    if tuple(grid.shape[:2]) == size:
        return grid.reshape(-1, grid.shape[-1])
    pooled = F.adaptive_avg_pool2d(grid.permute(2, 0, 1).unsqueeze(0), size)  # (1, c, *size)
    return pooled[0].flatten(1).transpose(0, 1)


def build_pal(language_model, teacher, options: PALOptions) -> PatchAligningLayer:
    """The registry's builder (``model.aligner: pal``): sized by the LM (width, layers) and the teacher's features."""
    config = language_model.config
    return PatchAligningLayer(config.hidden_size, teacher.feature_dim, config.num_hidden_layers, options)


class WithAlignment(nn.Module):
    """What the trainer runs for a model with an aligner: the LM loss plus ``aligner.weight`` x the aligner's loss
    (EVE: total = LM loss + 1.0 x PAL loss). The trainer divides ``loss_sum`` by the supervised tokens of the
    step, so the aligner's per-batch mean enters multiplied by the batch's tokens (the same weighting a token of
    the LM loss has; with one micro-batch the total is exactly LM mean + weight x PAL mean)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # its injection puts the image's vectors in the sequence (checked in build_aligner)

    def forward(self, batch):
        model = self.model
        out = model(batch, output_hidden_states=True)
        rows = batch.has_image.nonzero().flatten()  # (B_img,) in the order of the batch's images
        cells = shapes = None
        if rows.numel():
            cells, shapes = model.bridge.connector.grid_cells(batch.images.pixel_values)
        alignment = model.aligner.loss(out.hidden_states, out.visual_positions, rows, cells, shapes,
                                       batch.images.teacher)
        out.alignment_sum = alignment * batch.num_supervised
        out.loss_sum = out.loss_sum + model.aligner.weight * out.alignment_sum
        out.hidden_states = None  # 31 (B, L', d) tensors: not kept past the loss
        return out
