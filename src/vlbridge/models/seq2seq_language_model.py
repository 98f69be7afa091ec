"""A frozen Hugging Face encoder-decoder LM (T5, flan-T5, BART), exposed the way bridges need it.

The sibling of :class:`vlbridge.models.language_model.LanguageModel` for seq2seq LMs, with the same
interface: input embeddings (an input-space bridge splices its visual tokens into the *encoder's* input),
every layer's FFN in both stacks (memory-space injection, MemVP), and an :class:`LMOutput` loss. The
prompt (with the image) is the encoder's input and the answer the decoder's target, as in the MemVP
paper's VL-T5 / VL-BART setting and BLIP-2's encoder-decoder setting (METHODS.md sections 1 and 2).

Where a model keeps its layers and FFNs is read from :data:`SEQ2SEQ_LAYOUTS`, keyed by the config's
``model_type``. BART has no FFN module: its FFN is ``fc2(act(fc1(x)))`` inside the layer, so its site reads
the FFN's input at ``fc1`` and its output at ``fc2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from vlbridge.errors import ConfigError
from vlbridge.models.language_model import FFNSite, LMOutput, row_loss
from vlbridge.text.tokenize import IGNORE


@dataclass(frozen=True)
class Seq2SeqLayout:
    """Attribute paths inside a Hugging Face ``*ForConditionalGeneration`` model (dotted; an integer part
    indexes a module list, ``-1`` is its last entry)."""

    encoder_layers: str  # from the model to the encoder's list of layers
    decoder_layers: str  # from the model to the decoder's list of layers
    ffn: str  # from one layer (either stack) to the module whose input is the FFN's (normalised) input
    ffn_out: str | None  # from the layer to the module whose output is the FFN's output; None = ``ffn``
    activation: str  # from the layer to the FFN's own element-wise activation
    gated: bool  # gated FFN (flan-T5 / T5 v1.1 ``gated-gelu``: wi_0, wi_1, wo) vs. two matrices


def _t5(config) -> Seq2SeqLayout:
    # the FFN sub-layer is the block's last: layer[1] in the encoder, layer[2] (after cross-attention) in the decoder
    return Seq2SeqLayout("encoder.block", "decoder.block", "layer.-1.DenseReluDense", None,
                         "layer.-1.DenseReluDense.act", gated=config.is_gated_act)


def _bart(config) -> Seq2SeqLayout:
    return Seq2SeqLayout("model.encoder.layers", "model.decoder.layers", "fc1", "fc2", "activation_fn", gated=False)


SEQ2SEQ_LAYOUTS: dict[str, Callable[[object], Seq2SeqLayout]] = {
    "t5": _t5,
    "bart": _bart,
}
"""``config.model_type`` -> the model's layout (a function of the config: T5's FFN is gated or not)."""


def seq2seq_layout_for(config) -> Seq2SeqLayout:
    try:
        return SEQ2SEQ_LAYOUTS[config.model_type](config)
    except KeyError:
        raise ConfigError(
            f"no encoder-decoder layout known for model_type {config.model_type!r}; known: {sorted(SEQ2SEQ_LAYOUTS)}. "
            "Pass a Seq2SeqLayout to Seq2SeqLanguageModel(layout=...) for other architectures."
        ) from None


def resolve(module: nn.Module, path: str):
    """Follow a dotted path of attribute names and (possibly negative) module-list indices."""
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


class Seq2SeqLanguageModel(nn.Module):
    """Wraps ``model`` (a ``*ForConditionalGeneration``); frozen by default."""

    is_encoder_decoder = True

    def __init__(self, model: nn.Module, layout: Seq2SeqLayout | None = None, freeze: bool = True):
        super().__init__()
        self.model = model
        self.layout = layout or seq2seq_layout_for(model.config)
        if freeze:
            self.model.requires_grad_(False)

    # --- shapes ---------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    def stack(self, name: str) -> nn.ModuleList:
        """The ``"encoder"`` or ``"decoder"`` list of layers."""
        paths = {"encoder": self.layout.encoder_layers, "decoder": self.layout.decoder_layers}
        if name not in paths:
            raise ValueError(f"unknown stack {name!r}; valid: {sorted(paths)}")
        return resolve(self.model, paths[name])

    def ffn_sites(self) -> list[FFNSite]:
        """Every FFN: the encoder's layers in order, then the decoder's."""
        sites = []
        for name in ("encoder", "decoder"):
            for i, layer in enumerate(self.stack(name)):
                ffn = resolve(layer, self.layout.ffn)
                out = resolve(layer, self.layout.ffn_out) if self.layout.ffn_out else ffn
                sites.append(FFNSite(name, i, ffn, out, resolve(layer, self.layout.activation)))
        return sites

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, d) encoder input embeddings (BART's embedding scale included: its
        shared embedding is a scaled embedding module)."""
        return self.model.get_input_embeddings()(input_ids)

    # --- forward --------------------------------------------------------------------------------
    def decoder_inputs(self, targets: Tensor) -> Tensor:
        """(B, T) targets -> (B, T) decoder input ids: the start token, then the targets shifted right, with
        ignored positions as padding (what T5's ``_shift_right`` and BART's ``shift_tokens_right`` do)."""
        config = self.model.config
        start = config.decoder_start_token_id
        if start is None or config.pad_token_id is None:
            raise ConfigError(f"{config.model_type} config needs decoder_start_token_id and pad_token_id")
        shifted = targets.new_full(targets.shape, start)
        shifted[:, 1:] = targets[:, :-1]
        return shifted.masked_fill(shifted == IGNORE, config.pad_token_id)

    def forward(
        self,
        inputs_embeds: Tensor,  # (B, S) x d encoder input: the prompt with any visual tokens
        attention_mask: Tensor,  # (B, S) 1 = real encoder position
        targets: Tensor | None = None,  # (B, T) the decoder's target ids (answer + EOS), IGNORE = padding
        output_hidden_states: bool = False,
        row_losses: bool = False,  # also return each row's summed loss (LMOutput.row_loss)
    ) -> LMOutput:
        """Answer-token loss; ``hidden_states`` are the *encoder's* (where the prompt and image are).

        Without ``targets`` only the encoder runs. Logits are computed at every decoder position: all of
        them are answer tokens except a batch's right padding."""
        if targets is None:
            out = self.model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                           output_hidden_states=output_hidden_states)
            zero = out.last_hidden_state.new_zeros(())
            return LMOutput(zero, zero, out.hidden_states)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         decoder_input_ids=self.decoder_inputs(targets), use_cache=False,
                         output_hidden_states=output_hidden_states)
        keep = targets != IGNORE  # (B, T)
        logits = out.logits[keep]  # (N, V)
        loss_sum = nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum")
        rows = row_loss(logits, targets, keep) if row_losses else None
        return LMOutput(loss_sum, keep.sum(), out.encoder_hidden_states, rows)
