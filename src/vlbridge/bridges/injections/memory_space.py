"""Memory-space injection (MemVP, Jie et al., ICML 2024): visual vectors become extra key/value slots of
the LM's FFNs, and the token sequence stays text-only.

An FFN is a key-value memory, ``FFN(x) = sum_i phi(<x, k_i>) v_i``; MemVP appends one slot per visual
vector (METHODS.md section 1)::

    K = lam * f(z) + p_k        V = lam * f(z) + p_v          (M slots x d, one set for all layers)
    out = FFN(x) + s * dropout(phi(x @ K^T)) @ V              x = the FFN's (normalised) input

This is the released LLaMA code's parallel branch (``phi = silu``, ``s = 0.1``, dropout 0.1). For a
non-gated FFN (GPT-2: ``act(x W1 + b1) W2 + b2``) the same formula with ``phi`` = the FFN's own activation,
``s = 1`` and no dropout *is* the paper's literal concatenation ``act(x [W1; K]^T + [b1; 0]) [W2; V] + b2``,
because the activation is element-wise; the builder (``bridges/memvp.py``) picks those values from the
layout. One difference remains, in training mode only: GPT-2's own output dropout is not applied to the
memory term.

Encoder-decoder LMs (T5, BART) have FFNs in both stacks; ``stacks`` chooses which get the memory (which
did in the paper is not published). Their non-gated FFNs (T5 ``relu``, BART ``gelu``) get the literal
concatenation as GPT-2's do; in training mode the FFN's inner dropout (T5 ``dropout_rate``, BART
``activation_dropout``) is not applied to the memory's activations unless ``dropout`` is set to it, while
the dropout after the FFN's output applies to both. A gated T5 FFN (flan-T5 ``gated-gelu``) gets the
parallel branch, as LLaMA's SwiGLU does.

The branch is added by forward hooks on each chosen FFN site (:class:`vlbridge.models.language_model.FFNSite`:
one module whose input and output are the FFN's, or BART's ``fc1`` for the input and ``fc2`` for the
output), so the LM's parameter names do not change. The per-batch memory is set by :meth:`MemorySpaceInjection.inject` and cleared when it exits; the
branch is per token, so a KV cache needs nothing extra and the memory is fixed during generation.
Activation checkpointing that recomputes layers during the backward pass would need that backward pass
inside the context too (outside it the hooks are no-ops); vlbridge's trainer does not checkpoint.

Two speed-ups of the same maths keep the training step close to its FLOP count on a CPU: the layers' key
and value gradients are summed inside the products that make them (``shared_memory.py``), and the
dropout mask is drawn 16 bits at a time (``dropout.py``, p rounded to a multiple of 2^-16).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vlbridge.bridges.injections.base import Injection
from vlbridge.bridges.injections.dropout import dropout
from vlbridge.bridges.injections.shared_memory import SharedMemory
from vlbridge.bridges.injections.splice import splice_visual_tokens
from vlbridge.cost import lm_forward_flops
from vlbridge.errors import ConfigError

POSITION_MODES = ("add", "concat")
MEMORY_IN = {"both": None, "encoder": ("encoder",), "decoder": ("decoder",)}  # option -> the injection's stacks


@dataclass(frozen=True)
class MemoryOptions:
    """MemVP's memory: where the slots go and how keys and values are made (shared by the injection's options
    and the MemVP preset's)."""

    num_slots: int = 320  # M >= n memory slots; code: 320 for 256 patches (7B), 400 (13B)
    lam: float = 0.01  # lambda, scale of f(z) in keys and values (code)
    scale: float | None = None  # s; None = 0.1 on gated FFNs (released scripts), 1.0 on non-gated (literal concat)
    dropout: float | None = None  # on phi(x K^T); None = 0.1 on gated FFNs (code), 0.0 on non-gated
    activation: str | None = None  # phi; None = silu on gated FFNs (code), the FFN's own activation on non-gated
    layers: tuple[int, ...] | None = None  # layers with memory, indexed within each stack; None = every layer (code)
    memory_in: str = "both"  # encoder-decoder LMs: encoder | decoder | both (ours; unpublished); decoder-only: both
    visual_prompts: bool = True  # False = position embeddings only, f(z) = 0 (ablation "w/o visual prompts")
    position: str = "add"  # add (code) | concat: p_k / p_v on their own feature range (ablation, layout ours)
    position_dim: int | None = None  # concat only: width of p_k / p_v; None = d // 2 (ours)


@dataclass(frozen=True)
class MemorySpaceOptions(MemoryOptions):
    """The ``memory_space`` injection's options."""

    visual_in_keys: bool = True  # lam f(z) enters the keys (False: ablation "values only")
    visual_in_values: bool = True  # lam f(z) enters the values (False: ablation "keys only")


def activation_by_name(name: str) -> Callable[[Tensor], Tensor]:
    """An element-wise activation by its Hugging Face name (``silu``, ``gelu``, ``gelu_new``, ``relu``...)."""
    from transformers.activations import ACT2FN

    if name not in ACT2FN:
        raise ConfigError(f"unknown activation {name!r}; valid: {sorted(ACT2FN)}")
    return ACT2FN[name]


class MemorySpaceInjection(Injection):
    """Extra key/value slots in the FFNs of ``layers`` (all layers when None).

    Args:
        width: the LM's hidden size d.
        num_slots: M >= n; slots beyond the image's n visual vectors have f(z) = 0 and act as learned
            memories (code: 320 slots for 256 patches).
        lam: lambda, the scale of f(z) in keys and values (code: 0.01).
        scale: s, the branch's output scale.
        dropout: dropout probability on phi(x K^T) while training.
        activation: phi by name, or None for each FFN's own activation (non-gated FFNs).
        layers: layer indices that get the memory, within each chosen stack (negative indices count from
            the stack's end); None = every layer.
        stacks: which stacks get the memory, ``"encoder"`` and/or ``"decoder"`` (a decoder-only LM has only
            a decoder); None = every stack the LM has.
        visual_prompts: False zeroes f(z) everywhere, leaving only p_k / p_v (paper ablation "w/o
            visual prompts").
        position: ``add`` (code): K = lam f(z) + p_k. ``concat`` (ours, for the paper's "concat instead
            of add" ablation, whose layout is not published): the feature axis is split, K =
            [lam f(z)[:d - position_dim] ; p_k] with p_k of width ``position_dim``; the connector then
            only needs to produce the first d - position_dim features.
        position_dim: width of p_k / p_v in ``concat`` mode.
        visual_in_keys / visual_in_values: where lam f(z) enters (paper ablations "keys only" /
            "values only" turn one of them off).
    """

    def __init__(
        self,
        width: int,
        num_slots: int = 320,
        lam: float = 0.01,
        scale: float = 0.1,
        dropout: float = 0.1,
        activation: str | None = "silu",
        layers: Sequence[int] | None = None,
        stacks: Sequence[str] | None = None,
        visual_prompts: bool = True,
        position: str = "add",
        position_dim: int | None = None,
        visual_in_keys: bool = True,
        visual_in_values: bool = True,
    ):
        super().__init__()
        if position not in POSITION_MODES:
            raise ConfigError(f"unknown position mode {position!r}; valid: {list(POSITION_MODES)}")
        if num_slots < 1:
            raise ConfigError(f"num_slots must be >= 1, got {num_slots}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if activation is not None:
            activation_by_name(activation)  # fail at construction, not at attach
        if position == "concat":
            if position_dim is None or not 0 < position_dim < width:
                raise ConfigError(f"concat position embeddings need 0 < position_dim < {width}, got {position_dim}")
        else:
            position_dim = width
        self.width, self.num_slots, self.position_dim = width, num_slots, position_dim
        self.lam, self.scale, self.dropout = lam, scale, dropout
        self.activation = activation
        self.layer_indices = None if layers is None else tuple(layers)
        self.stacks = None if stacks is None else tuple(stacks)
        self.visual_prompts, self.position = visual_prompts, position
        self.visual_in_keys, self.visual_in_values = visual_in_keys, visual_in_values
        # one set of position embeddings for all layers (code); p_v = 0 makes the branch a no-op at init
        self.p_k = nn.Parameter(torch.randn(num_slots, position_dim) * 0.02)  # (M, d_p)
        self.p_v = nn.Parameter(torch.zeros(num_slots, position_dim))  # (M, d_p)
        # plain attributes (not submodules): the LM's own modules must not be re-registered here
        self._hooks: list = []
        self._phi: dict[int, Callable[[Tensor], Tensor]] = {}  # site -> phi; a site numbers the LM's FFNs
        self._where: dict[int, tuple[str, int]] = {}  # site -> (stack, layer index in the stack)
        self._inputs: dict[int, Tensor] = {}  # site -> FFN input, between its input and output modules
        self._memory: SharedMemory | None = None  # this batch's (B, M, d) keys and values
        self._captured: dict[int, Tensor] | None = None  # site -> FFN input, while capturing

    # --- assembly -------------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        """The attached sites: indices into ``language_model.ffn_sites()`` (a decoder-only LM's decoder
        layer indices; for an encoder-decoder LM the encoder's layers come first, then the decoder's)."""
        return tuple(sorted(self._phi))

    def layers_in(self, stack: str) -> tuple[int, ...]:
        """The attached layer indices within ``stack`` (``"encoder"`` or ``"decoder"``)."""
        return tuple(index for site, (name, index) in sorted(self._where.items()) if name == stack)

    def _chosen_sites(self, sites) -> list[int]:
        """Site numbers selected by ``stacks`` and, within each stack, by ``layers``."""
        by_stack: dict[str, list[int]] = {}
        for number, site in enumerate(sites):
            by_stack.setdefault(site.stack, []).append(number)
        stacks = tuple(by_stack) if self.stacks is None else self.stacks
        chosen = []
        for stack in stacks:
            if stack not in by_stack:
                raise ConfigError(f"the LM has no {stack} to put the memory in; its stacks: {list(by_stack)}")
            numbers = by_stack[stack]
            count = len(numbers)
            indices = range(count) if self.layer_indices is None else self.layer_indices
            resolved = []
            for i in indices:
                if not -count <= i < count:
                    raise ConfigError(f"memory layer {i} does not exist; the LM's {stack} has {count} layers")
                resolved.append(i % count)
            if len(set(resolved)) != len(resolved):
                raise ConfigError(f"memory layers repeat: {list(indices)}")
            chosen += [numbers[i] for i in sorted(resolved)]
        return chosen

    def attach(self, language_model) -> None:
        if self._hooks:
            raise RuntimeError("this memory-space injection is already attached to a language model")
        sites = language_model.ffn_sites()
        for number in self._chosen_sites(sites):
            site = sites[number]
            if self.activation is not None:
                self._phi[number] = activation_by_name(self.activation)
            elif site.activation is not None:
                self._phi[number] = site.activation
            else:
                raise ConfigError(
                    f"{site.stack} layer {site.index}'s FFN ({type(site.input).__name__}) exposes no activation "
                    "to reuse as phi; set the memory's activation explicitly"
                )
            self._where[number] = (site.stack, site.index)
            if site.input is site.output:
                self._hooks.append(site.output.register_forward_hook(self._make_hook(number)))
            else:  # BART: the FFN's input enters fc1, its output leaves fc2
                self._hooks.append(site.input.register_forward_pre_hook(self._make_input_hook(number)))
                self._hooks.append(site.output.register_forward_hook(self._make_hook(number, separate_input=True)))

    def detach(self) -> None:
        """Remove the hooks: the LM is the bare LM again."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self._phi.clear()
        self._where.clear()
        self._inputs.clear()

    # --- the memory -----------------------------------------------------------------------------
    @property
    def max_visual_tokens(self) -> int:
        return self.num_slots

    def input_width(self, language_model=None) -> int:
        """d_c: d, or d - position_dim in ``concat`` mode (the position embeddings fill the rest)."""
        return self.width if self.position == "add" else self.width - self.position_dim

    def visual_part(self, visual: Tensor, has_image: Tensor, visual_lengths: Tensor | None = None) -> Tensor:
        """lam * f(z) as it enters the memory: (B, n, d_c) visual vectors -> (B, M, d_c), with f(z) = 0 on
        rows without an image (the code's indicator), on slots past n (or past the row's ``visual_lengths``),
        and everywhere without visual prompts. d_c = :meth:`input_width`."""
        B, n, d = visual.shape
        content_dim = self.input_width()
        if n > self.num_slots:
            raise ValueError(f"{n} visual vectors do not fit in {self.num_slots} memory slots; raise num_slots")
        if d != content_dim:
            raise ValueError(f"visual vectors are {d} wide, the memory expects {content_dim}")
        keep = self.lam * has_image.to(visual.dtype)[:, None, None]  # (B, 1, 1)
        if visual_lengths is not None:
            keep = keep * (torch.arange(n, device=visual.device) < visual_lengths[:, None])[..., None].to(visual.dtype)
        content = visual * keep
        if not self.visual_prompts:
            content = torch.zeros_like(content)
        return F.pad(content, (0, 0, 0, self.num_slots - n))  # (B, M, d_c)

    def _with_position(self, content: Tensor, position: Tensor, use_visual: bool) -> Tensor:
        """(B, M, d_c) content and (M, d_p) position embeddings -> (B, M, d) keys or values."""
        if not use_visual:
            content = torch.zeros_like(content)
        position = position.to(content.dtype).expand(content.shape[0], -1, -1)
        if self.position == "add":
            return content + position
        return torch.cat([content, position], dim=-1)

    def memory(self, visual: Tensor, has_image: Tensor, visual_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Keys and values (B, M, d) for a batch's visual vectors (B, n, d_c)."""
        content = self.visual_part(visual, has_image, visual_lengths)
        keys = self._with_position(content, self.p_k, self.visual_in_keys)
        values = self._with_position(content, self.p_v, self.visual_in_values)
        return keys, values

    def phi(self, layer: int) -> Callable[[Tensor], Tensor]:
        """The memory's activation at site ``layer`` (see :attr:`layers`)."""
        return self._phi[layer]

    def branch(self, layer: int, x: Tensor, memory: SharedMemory) -> Tensor:
        """s * dropout(phi(x K^T)) V: (B, L, d) FFN input -> (B, L, d) added to the FFN's output."""
        scores = memory.scores(x)  # (B, L, M)
        weights = dropout(self._phi[layer](scores), self.dropout, self.training)  # 16-bit mask: cheaper on CPU
        return self.scale * memory.read(weights)  # (B, L, d)

    def _make_input_hook(self, layer: int):
        def hook(module: nn.Module, args: tuple):
            if self._memory is not None:
                if not args:
                    raise RuntimeError(f"{type(module).__name__} was called without a positional input")
                self._inputs[layer] = args[0]  # (B, L, d), read by the output module's hook
            return None

        return hook

    def _make_hook(self, layer: int, separate_input: bool = False):
        def hook(module: nn.Module, args: tuple, output: Tensor):
            if self._memory is None:  # outside inject(): the bare LM
                return None
            if separate_input:
                x = self._inputs.pop(layer)
            elif not args:
                raise RuntimeError(f"{type(module).__name__} was called without a positional input")
            else:
                x = args[0]  # (B, L, d) the FFN's normalised input
            if x.shape[0] != self._memory.batch_size:
                raise RuntimeError(
                    f"the LM ran on {x.shape[0]} rows inside a memory of {self._memory.batch_size} rows "
                    "(beam search and several sequences per prompt are not supported)"
                )
            if self._captured is not None:
                self._captured[layer] = x.detach()
            return output + self.branch(layer, x, self._memory)

        return hook

    # --- the Injection interface ----------------------------------------------------------------
    @contextmanager
    def inject(self, language_model, input_ids, attention_mask, visual, has_image, labels=None, padding_side="right",
               visual_lengths=None):
        if not self._hooks:
            raise RuntimeError("attach() the memory-space injection to the language model first")
        if self._memory is not None:
            raise RuntimeError("memory-space injections do not nest")
        keys, values = self.memory(visual, has_image, visual_lengths)
        # cast once per batch to the dtype the LM is stored in (bf16: vlbridge.precision), not in every layer
        dtype = language_model.model.get_input_embeddings().weight.dtype
        self._memory = SharedMemory(keys.to(dtype), values.to(dtype))
        try:
            # n = 0: the image placeholder is removed and the LM sees the text only
            yield splice_visual_tokens(language_model.embed, input_ids, attention_mask, visual[:, :0], labels,
                                       padding_side)
        finally:
            self._memory = None
            self._inputs.clear()

    def visual_sequence_length(self, num_visual: int) -> int:
        return 0

    def lm_flops(self, language_model, text_tokens: int, num_visual: int, logit_positions: int) -> int:
        """The text-only sequence, with ``num_slots`` extra slots in each memory layer's FFN (``4·T·d·M``),
        whether or not the sample has an image (text-only rows keep p_k / p_v)."""
        stacks = {stack: len(self.layers_in(stack)) for stack in ("encoder", "decoder")}
        return lm_forward_flops(language_model, text_tokens, logit_positions, self.num_slots, stacks)

    def describe_cost(self) -> str:
        return f"{self.num_slots} memory slots per FFN in {len(self.layers)} layers"

    def activation_bytes(self, language_model, tokens: int, num_visual: int, rows: int,
                         bytes_per_value: int = 4) -> int:
        """Each memory layer keeps its input and its slot activations before and after dropout (d + 2M per
        token), and the keys and values once per row (2·M·d)."""
        per_token = len(self.layers) * (self.width + 2 * self.num_slots)
        return (tokens * per_token + rows * 2 * self.num_slots * self.width) * bytes_per_value

    @contextmanager
    def capture_inputs(self):
        """Record each memory layer's FFN input (B, L, d) during the LM calls inside the context, for
        the analyses (``vlbridge.analysis``). Yields the dict ``site -> input`` it fills (see :attr:`layers`)."""
        captured: dict[int, Tensor] = {}
        self._captured = captured
        try:
            yield captured
        finally:
            self._captured = None

    def extra_repr(self) -> str:
        stacks = "" if self.stacks is None else f", stacks={list(self.stacks)}"
        return (f"slots={self.num_slots}, width={self.width}, lam={self.lam}, scale={self.scale}, "
                f"dropout={self.dropout}, position={self.position}, layers={self.layers or self.layer_indices}{stacks}")


def build_memory_space(language_model, options: MemorySpaceOptions) -> MemorySpaceInjection:
    """Registry builder: None options take the values the FFN's layout calls for (module docstring)."""
    d = language_model.hidden_size
    gated = language_model.layout.gated
    if options.memory_in not in MEMORY_IN:
        raise ConfigError(f"memory_space: unknown memory_in {options.memory_in!r}; valid: {list(MEMORY_IN)}")
    position_dim = None
    if options.position == "concat":
        position_dim = options.position_dim if options.position_dim is not None else d // 2
        if not 0 < position_dim < d:
            raise ConfigError(f"memory_space: position_dim must be in 1..{d - 1}, got {position_dim}")
    return MemorySpaceInjection(
        d,
        num_slots=options.num_slots,
        lam=options.lam,
        scale=options.scale if options.scale is not None else (0.1 if gated else 1.0),
        dropout=options.dropout if options.dropout is not None else (0.1 if gated else 0.0),
        activation=options.activation if options.activation is not None else ("silu" if gated else None),
        layers=None if options.layers is None else tuple(options.layers),
        stacks=MEMORY_IN[options.memory_in],
        visual_prompts=options.visual_prompts,
        position=options.position,
        position_dim=position_dim,
        visual_in_keys=options.visual_in_keys,
        visual_in_values=options.visual_in_values,
    )
