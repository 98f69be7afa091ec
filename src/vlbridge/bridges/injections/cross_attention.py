"""Cross-attention injection (Flamingo, Alayrac et al., NeurIPS 2022): new gated cross-attention blocks
("gated xattn-dense") read the visual vectors from between the frozen LM's decoder layers, and the token
sequence stays text-only.

One block sits before each chosen decoder layer (METHODS.md section 0, the third way; paper Fig. 4,
OpenFlamingo's ``GatedCrossAttentionBlock``)::

    x (B, T, d) text hidden states entering the layer      z (B, n, d) visual vectors (the connector's output)
    q = W_q LN(x)  (B, H, T, h)      k, v = W_kv z  (B, H, n, h) each      (every W without bias)
    x = x + tanh(alpha_attn) * W_o softmax(q k^T / sqrt(h) + mask) v       (B, T, d)
    x = x + tanh(alpha_ff)   * FF(x)     FF = LN -> Linear(d, m·d) -> GELU -> Linear(m·d, d)

The gates ``alpha`` are scalars initialised at 0 (paper section 2.2), so at initialisation the LM computes
exactly what it computed before. As in Flamingo the dense part (FF) runs on every text token; only the
attention is masked:

- a text token attends to its row's image only from the image's position on (Flamingo: a token sees the
  media that precede it). The placeholder is removed from the sequence, so "the image's position" is the
  position the first token after the placeholder takes; earlier tokens, padding and rows without an
  image (``has_image`` False, or no placeholder) get exactly zero from the attention (never NaN);
- visual vectors past ``visual_lengths[row]`` (images of different sizes in one batch) are not keys.

Placement (ours, METHODS.md leaves it open): with ``every = k`` the blocks sit before decoder layers
0, k, 2k, ... (so the first block sees the embeddings and ``every = 1`` gives one before every layer);
OpenFlamingo's ``cross_attn_every_n_layers`` places them before layers k-1, 2k-1, ..., which
``layers=(k-1, 2k-1, ...)`` reproduces.

Mechanics: a forward pre-hook on each chosen decoder layer adds its block's output to the layer's input
``hidden_states`` (positional or keyword), so the LM's own parameter names do not change; the blocks are
this module's ``blocks.<i>``. :meth:`GatedCrossAttentionInjection.inject` computes every block's visual
keys and values once, for the whole context (a forward pass, or a whole generation with the KV cache), and
clears them on exit; outside the context the hooks do nothing. With a KV cache each later LM call shows a
layer only the new positions: the absolute position of a call's first token is read from the length of
the 2D attention mask the LM's base model receives (it spans the cached and the new positions, with or
without a cache), or, when the base model is called without one, counted from the positions each block
has already seen in the context. Beam search and several sequences per prompt are refused (the hidden
states' batch must be the visual batch).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlbridge.bridges.injections.base import Injection
from vlbridge.bridges.injections.splice import splice_visual_tokens
from vlbridge.cost import lm_forward_flops
from vlbridge.errors import ConfigError
from vlbridge.flops import gated_cross_attention_flops
from vlbridge.text.tokenize import IMAGE_TOKEN_ID


@dataclass(frozen=True)
class CrossAttentionOptions:
    """Flamingo-style gated cross-attention blocks between the LM's decoder layers."""

    every: int = 4  # a block before decoder layers 0, every, 2·every, ... (ours; Flamingo-3B/9B/80B: 1/4/7)
    heads: int = 8  # H attention heads of each block (OpenFlamingo default)
    head_dim: int = 64  # h, the width of one head; the blocks' inner width is H·h (OpenFlamingo default)
    ff_mult: int = 4  # FF hidden width = ff_mult · d (Flamingo / OpenFlamingo)
    layers: tuple[int, ...] | None = None  # explicit layer indices (negative: from the end); overrides every


class GatedCrossAttentionBlock(nn.Module):
    """One gated xattn-dense block (Flamingo Fig. 4): gated cross-attention to the visual vectors, then a
    gated FF; no biases in its linears, both gates start at 0."""

    def __init__(self, width: int, heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.LayerNorm(width)  # on the text side only; the visual vectors enter as they are
        self.to_q = nn.Linear(width, inner, bias=False)
        self.to_kv = nn.Linear(width, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, width, bias=False)
        self.ff = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, ff_mult * width, bias=False), nn.GELU(),
                                nn.Linear(ff_mult * width, width, bias=False))
        self.attn_gate = nn.Parameter(torch.zeros(()))  # alpha_attn; tanh(0) = 0: the LM is unchanged at init
        self.ff_gate = nn.Parameter(torch.zeros(()))  # alpha_ff

    def keys_values(self, visual: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n, d) visual vectors -> keys and values (B, H, n, h)."""
        B, n, _ = visual.shape
        kv = self.to_kv(visual.to(self.to_kv.weight.dtype))  # (B, n, 2·H·h)
        k, v = kv.view(B, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2 x (B, H, n, h)
        return k, v

    def forward(self, x: Tensor, keys: Tensor | None, values: Tensor | None, key_mask: Tensor | None,
                query_mask: Tensor | None) -> Tensor:
        """x (B, T, d) text; keys, values (B, H, n, h), or None when no row of the batch has an image;
        key_mask (B, n) bool: a real visual vector; query_mask (B, T) bool: the token may see the image.
        Returns x after both gated residuals, in x's dtype."""
        dtype = x.dtype
        x = x.to(self.to_q.weight.dtype)
        if keys is not None:
            B, T, _ = x.shape
            q = self.to_q(self.norm(x)).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, h)
            # a query that may see nothing gets every key (no all-masked softmax, hence no NaN) and is zeroed below
            allowed = key_mask[:, None, None, :] | ~query_mask[:, None, :, None]  # (B, 1, T, n)
            attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)  # (B, H, T, h)
            attended = attended * query_mask[:, None, :, None].to(attended.dtype)
            out = self.to_out(attended.transpose(1, 2).reshape(B, T, -1))  # (B, T, d)
            x = x + torch.tanh(self.attn_gate) * out
        x = x + torch.tanh(self.ff_gate) * self.ff(x)
        return x.to(dtype)


@dataclass
class _Context:
    """One ``inject`` context's state: the visual keys and values and where each row's image sits."""

    keys: list[Tensor | None]  # per block (B, H, n, h); None when no row has an image
    values: list[Tensor | None]  # per block (B, H, n, h)
    key_mask: Tensor  # (B, n) bool, a real visual vector
    sees_image: Tensor  # (B,) bool: has_image, a placeholder and at least one visual vector
    image_start: Tensor  # (B,) the spliced position from which a row's tokens see its image
    text_mask: Tensor  # (B, W) bool, the spliced attention mask (positions >= W are generated tokens)
    seen: list[int] = field(default_factory=list)  # per block: positions seen so far in this context
    call_length: int | None = None  # key positions of the current base-model call (its 2D mask's length)


def image_positions(input_ids: Tensor, attention_mask: Tensor, padding_side: str) -> Tensor:
    """(B,) each row's image position in the sequence :func:`splice_visual_tokens` makes with n = 0: the
    position the first token after the placeholder takes (the placeholder's rank among the row's real
    tokens, shifted by the row's left padding). Rows without a placeholder get 0 (callers mask them)."""
    is_image = input_ids == IMAGE_TOKEN_ID  # (B, L)
    real = attention_mask.bool()
    lengths = real.sum(1) - is_image.any(1).long()  # (B,) row lengths once the placeholder is removed
    offset = (lengths.max() - lengths) if padding_side == "left" else torch.zeros_like(lengths)
    rank = real.long().cumsum(1) - 1  # (B, L)
    return rank.gather(1, is_image.long().argmax(1, keepdim=True)).squeeze(1) + offset  # (B,)


def check_decoder_only(language_model) -> None:
    if getattr(language_model, "is_encoder_decoder", False):
        raise ConfigError(
            "cross-attention injection supports decoder-only LMs (LLaMA family, GPT-2) only; "
            f"{type(language_model.model).__name__} is an encoder-decoder LM: use the input-space or "
            "memory-space injection")


class GatedCrossAttentionInjection(Injection):
    """Gated cross-attention blocks before the LM's decoder layers ``layers`` (resolved, in order).

    Args:
        width: the LM's hidden size d (and the visual vectors' width).
        layers: decoder-layer indices that get a block before them (0 <= i < the LM's layer count).
        heads, head_dim, ff_mult: each block's H, h and FF multiplier.
    """

    def __init__(self, width: int, layers: tuple[int, ...], heads: int = 8, head_dim: int = 64, ff_mult: int = 4):
        super().__init__()
        self.width, self.heads, self.head_dim, self.ff_mult = width, heads, head_dim, ff_mult
        self.layer_indices = tuple(layers)
        self.blocks = nn.ModuleList(GatedCrossAttentionBlock(width, heads, head_dim, ff_mult) for _ in layers)
        # plain attributes (not submodules): the LM's own modules must not be re-registered here
        self._hooks: list = []
        self._context: _Context | None = None

    # --- assembly -------------------------------------------------------------------------------
    def attach(self, language_model) -> None:
        if self._hooks:
            raise RuntimeError("this cross-attention injection is already attached to a language model")
        check_decoder_only(language_model)
        if language_model.hidden_size != self.width:
            raise ConfigError(f"cross-attention blocks are {self.width} wide, the LM is {language_model.hidden_size}")
        decoder = language_model.layers
        for i in self.layer_indices:
            if not 0 <= i < len(decoder):
                raise ConfigError(f"cross-attention layer {i} does not exist; the LM has {len(decoder)} layers")
        base = language_model.base
        self._hooks.append(base.register_forward_pre_hook(self._make_base_hook(base), with_kwargs=True))
        self._hooks.append(base.register_forward_hook(self._base_done))
        for block, i in enumerate(self.layer_indices):
            self._hooks.append(decoder[i].register_forward_pre_hook(self._make_layer_hook(block), with_kwargs=True))

    def detach(self) -> None:
        """Remove the hooks: the LM is the bare LM again."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()

    # --- hooks ----------------------------------------------------------------------------------
    def _make_base_hook(self, base: nn.Module):
        signature = inspect.signature(base.forward)

        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if self._context is not None:
                mask = kwargs.get("attention_mask")
                if mask is None and args:
                    mask = signature.bind_partial(*args).arguments.get("attention_mask")
                # a 2D (or 4D) mask spans the cached and the new positions, with or without a KV cache
                self._context.call_length = int(mask.shape[-1]) if torch.is_tensor(mask) else None
            return None

        return hook

    def _base_done(self, module: nn.Module, args: tuple, output) -> None:
        if self._context is not None:
            self._context.call_length = None

    def _make_layer_hook(self, block: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            context = self._context
            if context is None:  # outside inject(): the bare LM
                return None
            x = args[0] if args else kwargs["hidden_states"]  # (B, T, d) the layer's input
            B, T, _ = x.shape
            if B != context.key_mask.shape[0]:
                raise RuntimeError(
                    f"the LM ran on {B} rows inside a cross-attention context of {context.key_mask.shape[0]} rows "
                    "(beam search and several sequences per prompt are not supported)")
            start = context.seen[block] if context.call_length is None else context.call_length - T
            context.seen[block] = start + T
            x = self.blocks[block](x, context.keys[block], context.values[block], context.key_mask,
                                   self._query_mask(context, start, T, x.device))
            if args:
                return (x, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": x}

        return hook

    @staticmethod
    def _query_mask(context: _Context, start: int, length: int, device) -> Tensor:
        """(B, T) bool: which of the positions start .. start + T - 1 may see their row's image."""
        positions = torch.arange(start, start + length, device=device)  # (T,)
        W = context.text_mask.shape[1]
        real = torch.ones(context.text_mask.shape[0], length, dtype=torch.bool, device=device)  # generated: real
        inside = positions < W
        real[:, inside] = context.text_mask[:, positions[inside]]
        after = positions[None, :] >= context.image_start[:, None]  # (B, T)
        return context.sees_image[:, None] & after & real

    # --- the Injection interface ----------------------------------------------------------------
    @contextmanager
    def inject(self, language_model, input_ids, attention_mask, visual, has_image, labels=None, padding_side="right",
               visual_lengths=None):
        if not self._hooks:
            raise RuntimeError("attach() the cross-attention injection to the language model first")
        if self._context is not None:
            raise RuntimeError("cross-attention injections do not nest")
        B, n, d = visual.shape
        if d != self.width:
            raise ValueError(f"visual vectors are {d} wide, the cross-attention blocks expect {self.width}")
        # n = 0: the image placeholder is removed and the LM sees the text only
        spliced = splice_visual_tokens(language_model.embed, input_ids, attention_mask, visual[:, :0], labels,
                                       padding_side)
        key_mask = torch.ones(B, n, dtype=torch.bool, device=visual.device)
        if visual_lengths is not None:
            key_mask = torch.arange(n, device=visual.device)[None, :] < visual_lengths.to(visual.device)[:, None]
        sees_image = has_image.bool() & (input_ids == IMAGE_TOKEN_ID).any(1) & key_mask.any(1)  # (B,)
        if bool(sees_image.any()):  # once per context: reused by every LM call (every generation step)
            keys, values = zip(*(block.keys_values(visual) for block in self.blocks))
        else:  # a text-only batch: the attention would give zero everywhere, skip it
            keys = values = (None,) * len(self.blocks)
        self._context = _Context(list(keys), list(values), key_mask, sees_image,
                                 image_positions(input_ids, attention_mask, padding_side),
                                 spliced.attention_mask.bool(), seen=[0] * len(self.blocks))
        try:
            yield spliced
        finally:
            self._context = None

    def visual_sequence_length(self, num_visual: int) -> int:
        return 0

    # --- cost -----------------------------------------------------------------------------------
    def describe_cost(self) -> str:
        return f"{len(self.blocks)} gated cross-attention blocks, before layers {list(self.layer_indices)}"

    def lm_flops(self, language_model, text_tokens: int, num_visual: int, logit_positions: int) -> int:
        """The plain LM over the text, plus each block (:func:`vlbridge.flops.gated_cross_attention_flops`)."""
        block = gated_cross_attention_flops(self.width, text_tokens, num_visual, self.heads, self.head_dim,
                                            self.ff_mult)
        return lm_forward_flops(language_model, text_tokens, logit_positions) + len(self.blocks) * block

    def activation_bytes(self, language_model, tokens: int, num_visual: int, rows: int,
                         bytes_per_value: int = 4) -> int:
        """What the blocks keep for backward, with their weights trained (each linear keeps its input).

        Per text position and block: the attention's LayerNorm input and output (2d), q and the
        attention's output (2·H·h) and that output in (B, T, H·h) layout for W_o (H·h), W_o's output for the
        gate (d); the FF's LayerNorm input and output (2d), its hidden layer before and after the GELU
        (2·m·d) and its output for the gate (d). Per image row: the visual vectors once (n·d, shared by
        every block's W_kv) and each block's keys and values (2·n·H·h). Not counted (assumed small): the
        LayerNorms' statistics, the attention's log-sum-exp, the boolean masks, and attention probabilities
        (the fused attention kernel recomputes them)."""
        d, inner, m, blocks = self.width, self.heads * self.head_dim, self.ff_mult, len(self.blocks)
        dense = tokens * (3 * d + 2 * m * d)  # per block
        if not num_visual:  # no image: the attention is skipped, only the FF half runs
            return blocks * dense * bytes_per_value
        attention = tokens * (3 * d + 3 * inner) + rows * num_visual * 2 * inner  # per block
        values = blocks * (attention + dense) + rows * num_visual * d
        return values * bytes_per_value

    def extra_repr(self) -> str:
        return (f"layers={list(self.layer_indices)}, width={self.width}, heads={self.heads}, "
                f"head_dim={self.head_dim}, ff_mult={self.ff_mult}")


def build_cross_attention(language_model, options: CrossAttentionOptions) -> GatedCrossAttentionInjection:
    """Options -> the injection, its layer indices resolved against ``language_model``."""
    check_decoder_only(language_model)
    for name in ("every", "heads", "head_dim", "ff_mult"):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"cross-attention option {name!r} must be an integer >= 1, got {value!r}")
    count = len(language_model.layers)
    if options.layers is None:
        layers = tuple(range(0, count, options.every))  # 0, every, 2·every, ...
    else:
        if len(options.layers) == 0:
            raise ConfigError("cross-attention option 'layers' is empty; give layer indices or None (use 'every')")
        for i in options.layers:
            if not isinstance(i, int) or not -count <= i < count:
                raise ConfigError(f"cross-attention option 'layers': layer {i!r} does not exist; the LM has "
                                  f"{count} layers")
        layers = tuple(sorted(i % count for i in options.layers))
        if len(set(layers)) != len(layers):
            raise ConfigError(f"cross-attention option 'layers' repeats a layer: {list(options.layers)}")
    return GatedCrossAttentionInjection(language_model.hidden_size, layers, options.heads, options.head_dim,
                                        options.ff_mult)
