"""The Perceiver resampler (Flamingo, Alayrac et al. 2022, section 2.1 and appendix A.1.1): a fixed set of learned
latents reads the visual tokens by cross-attention, so an image (or a video of any number of frames) becomes
``num_latents`` vectors whatever its size. PaLM2-VAdapter's baseline adapter (6 layers) and the resampler inside
its adapter (1 layer). METHODS.md 3.1 is the specification; the semantics are OpenFlamingo's:

- keys and values come from the media tokens *and* the latents (``concat(media, latents)``), queries from the
  latents only; LayerNorm on both before attention; no bias in any Linear (the LayerNorms keep their affine
  weight and bias, as in both reference codes);
- learned frame embeddings (video, optional) and media-time embeddings (several media per sample, optional);
  no spatial position embedding: the vision encoder's own carry the layout;
- each layer: ``latents = attn(x, latents) + latents; latents = ff(latents) + latents``; a final LayerNorm.

The parameter names and shapes are OpenFlamingo's (``latents``, ``frame_embs`` (F, D), ``media_time_embs``
(T, 1, D), ``layers.i.0`` attention with ``norm_media``, ``norm_latents``, ``to_q``, ``to_kv``, ``to_out``,
``layers.i.1`` the feed-forward as a Sequential, ``norm``), so its resampler weights load with
``load_state_dict``. flamingo-pytorch's ``media_pos_emb`` (always present, (T, 1, D)) is our ``media_time_embs``.

:class:`PerceiverConnector` is the registered connector (``perceiver``): an optional input Linear to the
resampler's width (ours; PaLM2-VAdapter's FC_in), the resampler, and an output Linear to the injection's width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector, is_positive_int
from vlbridge.errors import ConfigError


class PerceiverAttention(nn.Module):
    """Latents attend to the media tokens and to themselves; (b, T, n1, D) media, (b, T, n2, D) latents ->
    (b, T, n2, D). Multi-head softmax attention with scale 1/sqrt(dim_head), no biases."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)  # keys then values, one product
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: Tensor, latents: Tensor) -> Tensor:
        b, T, n1, _ = media.shape
        n2 = latents.shape[2]
        H, h = self.heads, self.dim_head
        media = self.norm_media(media)  # (b, T, n1, D)
        latents = self.norm_latents(latents)  # (b, T, n2, D)
        q = self.to_q(latents)  # (b, T, n2, H*h)
        # Flamingo (appendix A.1.1): the latents' own keys and values join the media's
        k, v = self.to_kv(torch.cat([media, latents], dim=-2)).chunk(2, dim=-1)  # (b, T, n1+n2, H*h) each

        def heads_first(x: Tensor) -> Tensor:  # (b, T, s, H*h) -> (b*T, H, s, h)
            return x.reshape(b * T, x.shape[2], H, h).transpose(1, 2)

        # softmax(q k^T / sqrt(h)) v: SDPA's default scale is 1/sqrt(h); no mask, every key is visible
        out = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v))  # (b*T, H, n2, h)
        return self.to_out(out.transpose(1, 2).reshape(b, T, n2, H * h))  # (b, T, n2, D)


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LN -> Linear(D, mult*D) -> GELU -> Linear(mult*D, D), no biases (Flamingo's resampler FFW)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim, bias=False), nn.GELU(),
                         nn.Linear(mult * dim, dim, bias=False))


class PerceiverResampler(nn.Module):
    """(b, T, F, v, D) media tokens -> (b, T, num_latents, D): T media per sample, F frames each, v tokens per
    frame. ``max_num_frames`` / ``max_num_media`` add learned frame / media-time embeddings for up to that
    many frames / media (None: no such embedding, any number)."""

    def __init__(self, dim: int, depth: int = 6, heads: int = 8, dim_head: int = 64, num_latents: int = 64,
                 ff_mult: int = 4, max_num_frames: int | None = None, max_num_media: int | None = None):
        super().__init__()
        for name, value in [("dim", dim), ("depth", depth), ("heads", heads), ("dim_head", dim_head),
                            ("num_latents", num_latents), ("ff_mult", ff_mult)]:
            if not is_positive_int(value):
                raise ValueError(f"PerceiverResampler {name} must be a positive integer, got {value!r}")
        for name, value in [("max_num_frames", max_num_frames), ("max_num_media", max_num_media)]:
            if value is not None and not is_positive_int(value):
                raise ValueError(f"PerceiverResampler {name} must be None or a positive integer, got {value!r}")
        self.dim, self.depth, self.heads, self.dim_head = dim, depth, heads, dim_head
        self.num_latents, self.ff_mult = num_latents, ff_mult
        self.max_num_frames, self.max_num_media = max_num_frames, max_num_media
        # learned latents, one independent copy per media item; N(0, 1) as both reference codes
        self.latents = nn.Parameter(torch.randn(num_latents, dim))  # (N, D)
        self.frame_embs = nn.Parameter(torch.randn(max_num_frames, dim)) if max_num_frames else None  # (F, D)
        self.media_time_embs = nn.Parameter(torch.randn(max_num_media, 1, dim)) if max_num_media else None  # (T,1,D)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)]) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: Tensor) -> Tensor:
        if media.dim() != 5 or media.shape[-1] != self.dim:
            raise ValueError(f"expected media tokens (b, T, F, v, {self.dim}), got {tuple(media.shape)}")
        b, T, Fr, v, D = media.shape
        if self.frame_embs is not None:
            if Fr > self.max_num_frames:
                raise ValueError(f"{Fr} frames per media item, but the resampler has frame embeddings for at most "
                                 f"max_num_frames={self.max_num_frames} (connector option max_frames)")
            media = media + self.frame_embs[:Fr, None]  # (F, 1, D) over (b, T, F, v, D)
        media = media.reshape(b, T, Fr * v, D)  # the frames' tokens side by side
        if self.media_time_embs is not None:
            if T > self.max_num_media:
                raise ValueError(f"{T} media per sample, but the resampler has media-time embeddings for at most "
                                 f"max_num_media={self.max_num_media} (connector option max_media)")
            media = media + self.media_time_embs[:T]  # (T, 1, D) over (b, T, F*v, D)
        # (b, T, N, D): each media item starts from the same latents. A copy, not an expand() view: under no_grad
        # such a view of a parameter has requires_grad but no grad_fn, which torch's flop counter rejects
        latents = self.latents.repeat(b, T, 1, 1)
        for attention, ff in self.layers:
            latents = attention(media, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)  # (b, T, N, D)

    def flops(self, num_inputs: int) -> int:
        """Forward FLOPs for one media item of ``num_inputs`` tokens (all its frames' together), closed form
        (:mod:`vlbridge.flops` conventions: 2 per multiply-add, matrix products only). Per layer, N latents,
        S = num_inputs + N keys, inner = heads * dim_head, width D::

            q: 2·N·D·inner    k, v: 2·S·D·2·inner    scores, weighted values: 2·(2·N·S·inner)
            out: 2·N·inner·D    feed-forward: 2·(2·N·D·ff_mult·D)
        """
        N, D, inner = self.num_latents, self.dim, self.heads * self.dim_head
        S = num_inputs + N
        attention = 2 * N * D * inner + 2 * S * D * 2 * inner + 2 * (2 * N * S * inner) + 2 * N * inner * D
        ff = 2 * (2 * N * D * self.ff_mult * D)
        return self.depth * (attention + ff)


@dataclass(frozen=True)
class PerceiverOptions:
    """The Perceiver resampler connector; defaults are Flamingo's (and PaLM2-VAdapter's baseline depth)."""

    depth: int = 6  # resampler layers (Flamingo, PaLM2-VAdapter's baseline: 6; inside its adapter: 1)
    num_latents: int = 64  # learned latents = visual vectors per image (Flamingo: 64; VAdapter's baseline: 256)
    heads: int = 8  # attention heads
    head_dim: int = 64  # width of each head (attention inner width = heads * head_dim)
    ff_mult: int = 4  # feed-forward hidden width = ff_mult * width
    width: int | None = None  # D, the resampler's width; None = the vision width d_v (Flamingo); another value
    # adds an input Linear(d_v, D) with bias (ours; PaLM2-VAdapter's FC_in)
    max_frames: int | None = None  # learned frame embeddings for up to this many frames (video); None = none
    max_media: int | None = None  # learned media-time embeddings for up to this many media per sample; the
    # connector feeds one image (T = 1), so only the first is read; None = none


class PerceiverConnector(Connector):
    """Vision features -> ``num_latents`` visual vectors of the injection's width.

    - image features (B, n, d_v) -> (B, num_latents, d_out) (one media item, one frame: T = F = 1);
    - video frames (B, F, v, d_v) -> (B, num_latents, d_out) (one media item of F frames, v tokens each;
      frame embeddings need ``max_num_frames`` >= F).

    ``input_projection`` (None when the vision width is the resampler's) maps d_v -> D, ``output_projection``
    D -> d_out (a Linear with bias, ours: the resampler's LayerNorm output is not in the LM's space).
    Built by :func:`build_perceiver`.
    """

    takes_frames = True

    def __init__(self, resampler: PerceiverResampler, output_projection: nn.Linear,
                 input_projection: nn.Linear | None = None):
        super().__init__()
        D = resampler.dim
        if input_projection is not None and input_projection.out_features != D:
            raise ValueError(f"input_projection gives {input_projection.out_features}, the resampler is {D} wide")
        if output_projection.in_features != D:
            raise ValueError(f"output_projection reads {output_projection.in_features}, the resampler is {D} wide")
        self.input_projection = input_projection
        self.resampler = resampler
        self.output_projection = output_projection
        self.input_width = input_projection.in_features if input_projection is not None else D
        self.output_width = output_projection.out_features

    def num_output_tokens(self, num_inputs: int) -> int:
        """``num_latents``, whatever the number of inputs."""
        return self.resampler.num_latents

    @property
    def max_frames(self) -> int | None:
        return self.resampler.max_num_frames

    def frames_refused(self, num_frames: int) -> str | None:
        """Clips need frame embeddings: without them the resampler reads a clip's tokens as one unordered set, blind
        to which frame came first (any motion question would be unanswerable)."""
        if self.max_frames is None:
            return ("the perceiver connector has no frame embeddings (connector option max_frames is unset), so it "
                    f"would not see the order of a clip's frames; set model.connector_options.max_frames to at least "
                    f"{num_frames}")
        return super().frames_refused(num_frames)

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() == 3:  # (B, n, d_v) -> (B, T=1, F=1, n, d_v)
            media = features[:, None, None]
        elif features.dim() == 4:  # (B, F, v, d_v) -> (B, T=1, F, v, d_v)
            media = features[:, None]
        else:
            raise ValueError(f"expected features (B, n, {self.input_width}) or frames (B, F, v, {self.input_width}), "
                             f"got {tuple(features.shape)}")
        if media.shape[-1] != self.input_width:
            raise ValueError(f"expected {self.input_width}-wide features, got {tuple(features.shape)}")
        media = media.to(self.resampler.latents.dtype)  # a frozen encoder may give bf16
        if self.input_projection is not None:
            media = self.input_projection(media)  # (B, 1, F, v, D)
        latents = self.resampler(media)[:, 0]  # (B, N, D)
        return self.output_projection(latents)  # (B, N, d_out)

    def flops(self, num_inputs: int) -> int:
        """Forward FLOPs for one image of ``num_inputs`` vectors (a video: all its frames' vectors), closed form:
        the input Linear over the inputs, the resampler (:meth:`PerceiverResampler.flops`), the output Linear
        over the latents (biases ignored)."""
        N, D = self.resampler.num_latents, self.resampler.dim
        total = self.resampler.flops(num_inputs) + 2 * N * D * self.output_width
        if self.input_projection is not None:
            total += 2 * num_inputs * self.input_width * D
        return total


def _check(name: str, ok: bool, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"perceiver connector option {name}={value!r}: {why}")


def build_perceiver(input_width: int, output_width: int, options: PerceiverOptions) -> PerceiverConnector:
    """A new random Perceiver resampler connector from ``input_width`` (d_v) features to ``output_width`` (what the
    injection reads). Bad option values raise :class:`ConfigError` naming the option."""
    for name in ("depth", "num_latents", "heads", "head_dim", "ff_mult"):
        _check(name, is_positive_int(getattr(options, name)), getattr(options, name), "must be a positive integer")
    for name in ("width", "max_frames", "max_media"):
        value = getattr(options, name)
        _check(name, value is None or is_positive_int(value), value, "must be None or a positive integer")
    if not (is_positive_int(input_width) and is_positive_int(output_width)):
        raise ConfigError(f"perceiver connector widths must be positive integers, got input {input_width!r}, "
                          f"output {output_width!r}")
    width = options.width or input_width
    resampler = PerceiverResampler(width, options.depth, options.heads, options.head_dim, options.num_latents,
                                   options.ff_mult, options.max_frames, options.max_media)
    input_projection = nn.Linear(input_width, width) if width != input_width else None
    return PerceiverConnector(resampler, nn.Linear(width, output_width), input_projection)
