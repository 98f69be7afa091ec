"""PaLM2-VAdapter's adapter (Xiao et al. 2024; METHODS.md 3.2): a tiny pretrained LM between the vision encoder and
the large LM. Vision features -> FC_in -> a 1-layer Perceiver resampler -> the tiny LM (trainable, fed
``inputs_embeds``, no LM head) -> FC_out -> soft tokens for the large LM.

The paper trains it progressively: stage 1 trains the resampler and the tiny LM as the *decoder* of a captioning
model (recipes/vadapter/stage1.yaml: connector ``perceiver`` of depth 1 into the tiny LM truncated by
``model.language_model_layers``, both trainable); stage 2 builds this connector from that run (``model.init_from``;
:meth:`TinyLMConnector.adopt_state` renames the stage-1 tensors) and trains it in front of the frozen large LM.

Where the paper is silent, ours, each an option (:class:`TinyLMOptions`):

- soft tokens out: the tiny LM's outputs at the latent positions, one per latent (``num_latents``, 64);
- attention over the latents: the tiny LM's own causal mask (``attention: causal``, as it attended to the visual
  prefix as a stage-1 decoder) or ``bidirectional``;
- the text prompt: by default it does not enter the tiny LM, which sees only the image (so one image's soft tokens
  serve any question, as with every other connector); ``prompt: prefix`` puts the prompt's tokens (embedded by the
  tiny LM's own pretrained embeddings, a fixed table that never trains; the large LM's tokenizer must be the tiny
  LM's) before the latents, so the soft tokens depend on the question, as InstructBLIP's queries do.

Module names: ``perceiver`` is a :class:`PerceiverConnector` (``input_projection`` = FC_in, ``resampler``,
``output_projection`` into the tiny LM's input space: stage 1's connector, unchanged), ``tiny_lm`` the tiny LM's
decoder stack (its base model, embeddings dropped, final norm kept), ``output_projection`` = FC_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vlbridge.bridges.connectors.base import Connector, is_positive_int
from vlbridge.bridges.connectors.perceiver import PerceiverConnector, PerceiverOptions, build_perceiver
from vlbridge.errors import ConfigError
from vlbridge.flops import LMShape, layer_flops
from vlbridge.models.language_model import layout_for

ATTENTION_MODES = ("causal", "bidirectional")
PROMPT_MODES = ("none", "prefix")
CONNECTOR_PREFIX = "bridge.connector."  # where a VisionLanguageModel keeps its connector's tensors


@dataclass(frozen=True)
class TinyLMOptions:
    """The tiny-LM adapter connector (``tiny_lm``); the resampler's options are the Perceiver connector's."""

    language_model: str = "smollm2-135m"  # the tiny LM: a registry name or a local Hugging Face causal-LM folder
    layers: int | None = 4  # keep its first k decoder layers (and its final norm); None = all of them
    num_latents: int = 64  # resampler latents = soft tokens out (ours: the paper does not say)
    resampler_depth: int = 1  # PaLM2-VAdapter: a 1-layer resampler inside the adapter
    heads: int = 8  # resampler attention heads
    head_dim: int = 64  # resampler head width
    ff_mult: int = 4  # resampler feed-forward width multiple
    attention: str = "causal"  # the tiny LM over the latents: causal (its own mask) | bidirectional (ours: option)
    max_frames: int | None = None  # learned frame embeddings in the resampler for clips of up to this many frames
    prompt: str = "none"  # none: the image alone | prefix: the prompt's tokens before the latents (ours: option)


class TinyLMConnector(Connector):
    """(B, n, d_v) features or (B, F, v, d_v) clip frames -> (B, num_latents, d_out) soft tokens.

    ``perceiver``: features -> (B, N, d_tiny) latents in the tiny LM's input space; ``tiny_lm``: a Hugging Face
    decoder stack without embeddings (fed ``inputs_embeds``), its final norm applied; ``output_projection``:
    d_tiny -> d_out."""

    takes_frames = True

    def __init__(self, perceiver: PerceiverConnector, tiny_lm: nn.Module, output_projection: nn.Linear,
                 attention: str = "causal", gated: bool = True, lm_prefix: str = "model.model.",
                 prompt_tokenizer=None, prompt_embeddings: Tensor | None = None):
        """``gated``: the tiny LM's FFN is SwiGLU (for FLOPs); ``lm_prefix``: where its decoder stack's tensors sit
        under a :class:`~vlbridge.models.language_model.LanguageModel` (a stage-1 run's ``language_model.*``);
        ``prompt_tokenizer`` and ``prompt_embeddings`` (vocabulary, d_tiny): the tiny LM's tokenizer and pretrained
        token embeddings when the prompt enters it (option ``prompt: prefix``), else None. The embeddings are a
        buffer, not a parameter: no training group reaches them, and they are not saved (rebuilt from the tiny LM)."""
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ConfigError(f"tiny_lm connector option attention={attention!r}; valid: {list(ATTENTION_MODES)}")
        if (prompt_tokenizer is None) != (prompt_embeddings is None):
            raise ConfigError("tiny_lm connector: the prompt needs both the tiny LM's tokenizer and its token "
                              "embeddings (option prompt)")
        width = tiny_lm.config.hidden_size
        if perceiver.output_width != width:
            raise ConfigError(f"tiny_lm connector: the resampler gives {perceiver.output_width}-wide latents, the tiny "
                              f"LM reads {width}-wide inputs")
        if output_projection.in_features != width:
            raise ConfigError(f"tiny_lm connector: FC_out reads {output_projection.in_features}-wide vectors, the tiny "
                              f"LM gives {width}-wide ones")
        self.perceiver = perceiver
        self.tiny_lm = tiny_lm
        self.output_projection = output_projection
        self.attention = attention
        self.gated = gated
        self.lm_prefix = lm_prefix
        self.prompt_tokenizer = prompt_tokenizer
        self.reads_prompt = prompt_tokenizer is not None
        self.register_buffer("prompt_embeddings", prompt_embeddings, persistent=False)
        self.input_width = perceiver.input_width
        self.output_width = output_projection.out_features

    def check_tokenizer(self, tokenizer, where: str) -> None:
        """The prompt reaches the tiny LM as the large LM's token ids: both must read them the same way."""
        if self.reads_prompt and tokenizer.get_vocab() != self.prompt_tokenizer.get_vocab():
            raise ConfigError(f"tiny_lm connector option prompt=prefix: the tiny LM's tokenizer differs from that of {where}, "
                              "so the prompt's token ids would mean other words to it; use a tiny LM of the same "
                              "tokenizer, or prompt: none")

    @property
    def max_frames(self) -> int | None:
        return self.perceiver.max_frames

    def frames_refused(self, num_frames: int) -> str | None:
        """As the resampler's: clips need its frame embeddings (connector option max_frames)."""
        return self.perceiver.frames_refused(num_frames)

    def num_output_tokens(self, num_inputs: int) -> int:
        """``num_latents``, whatever the number of inputs (or frames)."""
        return self.perceiver.num_output_tokens(num_inputs)

    def forward(self, features: Tensor, prompt_ids: Tensor | None = None,
                prompt_mask: Tensor | None = None) -> Tensor:
        """``prompt_ids`` / ``prompt_mask`` (B, T), left-padded, with option ``prompt: prefix`` only: the prompt's
        tokens go before the latents (so causal latents see all of it)."""
        if self.reads_prompt != (prompt_ids is not None):
            raise ValueError("the tiny_lm connector reads a prompt exactly when its option prompt is prefix")
        latents = self.perceiver(features)  # (B, N, d_tiny)
        B, N, _ = latents.shape
        inputs, valid = latents, torch.ones(B, N, dtype=torch.bool, device=latents.device)
        if prompt_ids is not None:
            prompt = nn.functional.embedding(prompt_ids, self.prompt_embeddings).to(latents.dtype)  # (B, T, d_tiny)
            inputs = torch.cat([prompt, latents], dim=1)  # (B, T + N, d_tiny)
            valid = torch.cat([prompt_mask.bool(), valid], dim=1)
        mask = valid.long() if prompt_ids is not None else None  # the tiny LM's own causal mask (over valid positions)
        if self.attention == "bidirectional":  # every position sees every valid one: a 4-D mask is used as given
            L = inputs.shape[1]
            mask = valid[:, None, None, :].expand(B, 1, L, L)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # from 0 at each row's first real position
        hidden = self.tiny_lm(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                              use_cache=False).last_hidden_state  # (B, T + N, d_tiny), final norm applied
        return self.output_projection(hidden[:, -N:])  # (B, N, d_out): the latents' positions

    def flops(self, num_inputs: int, prompt_tokens: int = 0) -> int:
        """Forward FLOPs for one image of ``num_inputs`` vectors (and a prompt of ``prompt_tokens`` tokens with option
        ``prompt: prefix``), closed form: the resampler (:meth:`PerceiverConnector.flops`), the tiny LM's layers over
        the prompt and the N latents (:func:`vlbridge.flops.layer_flops`, every key counted, as torch's counter does
        for a masked attention), FC_out over the latents (biases ignored)."""
        shape = LMShape.from_config(self.tiny_lm.config, self.gated)
        N = self.num_output_tokens(num_inputs)
        T = prompt_tokens if self.reads_prompt else 0
        return (self.perceiver.flops(num_inputs) + shape.layers * layer_flops(shape, T + N)
                + 2 * N * shape.width * self.output_width)

    def adopt_state(self, state: dict[str, Tensor], meta: dict, source: str) -> dict[str, Tensor]:
        """A run's trained tensors under this connector's names (``model.init_from``).

        A stage-1 run (a ``perceiver`` connector feeding a trained LM of this tiny LM's depth) gives the resampler
        (``bridge.connector.*`` -> ``bridge.connector.perceiver.*``) and the tiny LM's decoder stack
        (``language_model.model.<base>.*`` -> ``bridge.connector.tiny_lm.*``; its embeddings and head become
        ``stage1/language_model.*``, loaded nowhere: with ``prompt: prefix`` the tiny LM reads the prompt through its
        pretrained embeddings, which never train and are not saved, so training and inference see the same ones); a run of this connector gives its tensors as they are; any other run is refused, naming ``source``."""
        spec = meta.get("spec") or {}
        if spec.get("connector") == "tiny_lm":
            return state
        why = _not_stage1(spec, meta, state, self)
        if why:
            raise ConfigError(f"model.init_from={source}: the tiny_lm connector starts from a PaLM2-VAdapter stage-1 "
                              f"run (recipes/vadapter/stage1.yaml) or another tiny_lm run; this one {why}")
        base = f"language_model.{self.lm_prefix}"
        ours = {name for name, _ in self.tiny_lm.named_parameters()}
        adopted = {}
        for name, tensor in state.items():
            if name.startswith(CONNECTOR_PREFIX):
                adopted[f"{CONNECTOR_PREFIX}perceiver.{name[len(CONNECTOR_PREFIX):]}"] = tensor
            elif name.startswith(base) and name[len(base):] in ours:
                adopted[f"{CONNECTOR_PREFIX}tiny_lm.{name[len(base):]}"] = tensor
            else:  # the stage-1 LM's token embeddings and head: under a name no tensor of this model has, so they
                # are reported as not in the model instead of landing on the large LM's tensors of the same name
                adopted[f"stage1/{name}"] = tensor
        return adopted


def _not_stage1(spec: dict, meta: dict, state: dict[str, Tensor], connector: TinyLMConnector) -> str | None:
    """Why a run is not a stage-1 run for ``connector``, or None."""
    if spec.get("connector") != "perceiver" or spec.get("injection") != "input_space":
        return f"has connector {spec.get('connector')!r} -> injection {spec.get('injection')!r} (spec in meta.json)"
    depth = spec.get("connector_options", {}).get("depth", PerceiverOptions.depth)
    if depth != connector.perceiver.resampler.depth:
        return (f"has a {depth}-layer resampler (connector_options.depth), this connector "
                f"{connector.perceiver.resampler.depth} (option resampler_depth)")
    layers = (meta.get("language_model") or {}).get("layers")
    ours = connector.tiny_lm.config.num_hidden_layers
    if layers != ours:
        return (f"trained an LM of {layers} layers (model.language_model_layers), this tiny LM has {ours} (connector "
                "option layers)")
    base = f"language_model.{connector.lm_prefix}"
    if not any(name.startswith(base) for name in state):
        return "did not train its LM (train.trainable must include lm in stage 1)"
    return None


def _check(name: str, ok: bool, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"tiny_lm connector option {name}={value!r}: {why}")


def build_tiny_lm(input_width: int, output_width: int, options: TinyLMOptions) -> TinyLMConnector:
    """The adapter from ``input_width`` (d_v) features to ``output_width`` (the large LM's width): a new random
    resampler and FC layers around the pretrained tiny LM ``options.language_model`` truncated to ``options.layers``
    decoder layers. Bad option values raise :class:`ConfigError` naming the option."""
    from vlbridge.models.truncate import keep_first_layers
    from vlbridge.weights import load_language_model

    for name in ("num_latents", "resampler_depth", "heads", "head_dim", "ff_mult"):
        _check(name, is_positive_int(getattr(options, name)), getattr(options, name), "must be a positive integer")
    for name in ("layers", "max_frames"):
        value = getattr(options, name)
        _check(name, value is None or is_positive_int(value), value, "must be None or a positive integer")
    _check("attention", options.attention in ATTENTION_MODES, options.attention, f"valid: {list(ATTENTION_MODES)}")
    _check("prompt", options.prompt in PROMPT_MODES, options.prompt, f"valid: {list(PROMPT_MODES)}")
    model, tokenizer = load_language_model(options.language_model)
    if getattr(model.config, "is_encoder_decoder", False):
        raise ConfigError(f"tiny_lm connector option language_model={options.language_model!r}: an encoder-decoder "
                          "model; the tiny LM must be a decoder-only causal LM")
    if options.layers is not None:
        keep_first_layers(model, options.layers, where="tiny_lm connector option layers")
    tiny_lm = getattr(model, model.base_model_prefix)  # the decoder stack; the LM head is dropped here
    embeddings = tiny_lm.get_input_embeddings()
    # fed inputs_embeds: the stack's token embeddings are dropped (nor trained, nor saved); with prompt: prefix their
    # pretrained table embeds the prompt, as a buffer that never trains (ours: 28 M fewer trained parameters)
    setattr(tiny_lm, next(name for name, module in tiny_lm.named_children() if module is embeddings), None)
    tiny_lm.requires_grad_(True)
    prompt_embeddings = embeddings.weight.detach().clone() if options.prompt == "prefix" else None
    width = model.config.hidden_size
    perceiver = build_perceiver(input_width, width, PerceiverOptions(
        depth=options.resampler_depth, num_latents=options.num_latents, heads=options.heads,
        head_dim=options.head_dim, ff_mult=options.ff_mult, width=width, max_frames=options.max_frames))
    return TinyLMConnector(perceiver, tiny_lm, nn.Linear(width, output_width), options.attention,
                           layout_for(model.config).gated, f"model.{model.base_model_prefix}.",
                           tokenizer if options.prompt == "prefix" else None, prompt_embeddings)
