"""A frozen Hugging Face causal LM, exposed the way bridges need it.

Bridges need four things from an LM: its input embeddings (input-space injection), each decoder layer's
FFN (memory-space injection, MemVP), its hidden states (EVE's patch aligning layer), and a loss that
computes LM-head logits only where a label needs them (the head of a 49k vocabulary is a fifth of a
small model's FLOPs; DESIGN.md "Performance habits").

Where a model keeps its decoder layers and FFNs is read from :data:`LAYOUTS`, keyed by the config's
``model_type`` field; a model of another type can pass its :class:`DecoderLayout` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from vlbridge.errors import ConfigError


@dataclass(frozen=True)
class DecoderLayout:
    """Attribute paths inside a Hugging Face causal LM."""

    layers: str  # dotted path from the *base model* to the list of decoder layers
    ffn: str  # attribute of one layer holding its FFN (the module whose input is the normalised h)
    gated: bool  # SwiGLU-style gate/up/down FFN (LLaMA family) vs. a plain two-matrix FFN (GPT-2)


LAYOUTS: dict[str, DecoderLayout] = {
    "llama": DecoderLayout(layers="layers", ffn="mlp", gated=True),
    "mistral": DecoderLayout(layers="layers", ffn="mlp", gated=True),
    "qwen2": DecoderLayout(layers="layers", ffn="mlp", gated=True),
    "qwen3": DecoderLayout(layers="layers", ffn="mlp", gated=True),
    "gemma": DecoderLayout(layers="layers", ffn="mlp", gated=True),
    "gpt2": DecoderLayout(layers="h", ffn="mlp", gated=False),
}


@dataclass(frozen=True)
class FFNSite:
    """One layer's FFN as a memory-space injection sees it (``LanguageModel.ffn_sites``)."""

    stack: str  # "decoder" in a decoder-only LM; "encoder" or "decoder" in an encoder-decoder LM
    index: int  # the layer's index within its stack
    input: nn.Module  # called with the FFN's (normalised) input x (B, L, d) as its first positional argument
    output: nn.Module  # returns the FFN's output (B, L, d), before the residual add; often ``input`` itself
    activation: Callable[[Tensor], Tensor] | None  # the FFN's own element-wise activation; None if not exposed


def layout_for(config) -> DecoderLayout:
    try:
        return LAYOUTS[config.model_type]
    except KeyError:
        raise ConfigError(
            f"no decoder layout known for model_type {config.model_type!r}; known: {sorted(LAYOUTS)}. "
            "Pass a DecoderLayout to LanguageModel(layout=...) for other architectures."
        ) from None


@dataclass
class LMOutput:
    """Sum of token losses and the number of supervised tokens (normalise across micro-batches once,
    in :func:`vlbridge.train.loss.normalise`), plus what generation and EVE need."""

    loss_sum: Tensor  # () summed cross-entropy over supervised tokens
    num_tokens: Tensor  # () number of supervised tokens
    hidden_states: tuple[Tensor, ...] | None = None  # per layer (B, L, d) when asked for
    row_loss: Tensor | None = None  # (B,) summed cross-entropy of each row's supervised tokens, when asked for
    visual_positions: Tensor | None = None  # (B, L) bool where visual vectors sit, with hidden states (VisionLanguageModel)
    alignment_sum: Tensor | None = None  # () an aligner's loss, summed like loss_sum (training with a teacher)


def row_loss(logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """(N, V) logits of the kept positions of (B, T) ``targets`` -> (B,) each row's summed cross-entropy
    (a separate pass: the batch sum keeps its own reduction, so training is bit-for-bit unchanged)."""
    losses = nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none")  # (N,)
    rows = keep.nonzero()[:, 0]  # (N,) the row of each kept position, in the order keep selects them
    return losses.new_zeros(keep.shape[0]).index_add_(0, rows, losses)


class LanguageModel(nn.Module):
    """Wraps ``model`` (a ``*ForCausalLM``); frozen unless :meth:`unfreeze` is called."""

    is_encoder_decoder = False  # see vlbridge.models.seq2seq_language_model for T5 / BART

    def __init__(self, model: nn.Module, layout: DecoderLayout | None = None, freeze: bool = True):
        super().__init__()
        self.model = model
        self.layout = layout or layout_for(model.config)
        if freeze:
            self.model.requires_grad_(False)

    # --- shapes ---------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def base(self) -> nn.Module:
        """The decoder stack without the LM head (``LlamaModel``, ``GPT2Model``, ...)."""
        return getattr(self.model, self.model.base_model_prefix)

    @property
    def layers(self) -> nn.ModuleList:
        module = self.base
        for name in self.layout.layers.split("."):
            module = getattr(module, name)
        return module

    def ffn(self, index: int) -> nn.Module:
        return getattr(self.layers[index], self.layout.ffn)

    def ffn_sites(self) -> list[FFNSite]:
        """Every decoder layer's FFN, in layer order (where memory-space injection adds its slots)."""
        sites = []
        for i in range(len(self.layers)):
            ffn = self.ffn(i)
            act = getattr(ffn, "act", None)  # GPT-2's MLP exposes it; LLaMA's gated MLP has act_fn
            sites.append(FFNSite("decoder", i, ffn, ffn, act if callable(act) else None))
        return sites

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, d) input embeddings."""
        return self.model.get_input_embeddings()(input_ids)

    # --- forward --------------------------------------------------------------------------------
    def forward(
        self,
        inputs_embeds: Tensor,  # (B, L, d)
        attention_mask: Tensor,  # (B, L) 1 = real token
        labels: Tensor | None = None,  # (B, L) next-token targets aligned with inputs, -100 = ignore
        position_ids: Tensor | None = None,
        output_hidden_states: bool = False,
        row_losses: bool = False,  # also return each row's summed loss (LMOutput.row_loss)
    ) -> LMOutput:
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        out = self.base(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state  # (B, L, d), final norm applied
        if labels is None:
            zero = hidden.new_zeros(())
            return LMOutput(zero, zero, out.hidden_states)
        # position t predicts token t+1; only supervised positions go through the LM head
        targets = labels[:, 1:]
        keep = targets != -100
        logits = self.model.get_output_embeddings()(hidden[:, :-1][keep])  # (N, V)
        loss_sum = nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        rows = row_loss(logits, targets, keep) if row_losses else None
        return LMOutput(loss_sum, keep.sum(), out.hidden_states, rows)


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Position ids that start at 0 on each row's first real token (correct under left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

