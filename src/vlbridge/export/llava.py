"""A vlbridge ``mlp -> input_space`` model (the ``llava`` preset) as a Hugging Face ``LlavaForConditionalGeneration``
folder with its ``LlavaProcessor``: the same weights, the same visual features, the same prompt, the same answers.

How vlbridge's choices map to ``LlavaConfig`` (each one that has no LLaVA equivalent refuses the export, naming the
recipe option):

- the encoder's grid layer (``model.vision_layer``, hidden-states index, pre-final-norm) -> ``vision_feature_layer``
  (the same index into the same ``hidden_states``);
- the encoder's prefix tokens vlbridge drops: one (CLS: CLIP, DINOv2) -> ``vision_feature_select_strategy: default``,
  none (SigLIP) -> ``full``; more (registers) has no LLaVA equivalent;
- the projector ``Linear(d_v, d) -> act -> Linear(d, d)`` -> ``multi_modal_projector.linear_1/act/linear_2``; LLaVA's
  hidden width is the LM's, so ``hidden`` must be None (or the LM width) and ``layers`` 2;
- ``pool`` (k x k average pooling), ``features: pooled`` and ``vision_adapter_dim`` (adapters inside the ViT) have
  none;
- LoRA is merged into the LM's weights (:func:`vlbridge.export.lora.merged_state_dict`);
- the image placeholder: vlbridge's is an out-of-vocabulary id; LLaVA needs a vocabulary token, so ``<image>`` is added
  to the tokenizer; if that adds a row to the LM's embeddings (and tied head), the row is zero and the token is
  suppressed in generation (``generation_config.suppress_tokens``), so the vocabulary the LM can answer with is
  unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.errors import ConfigError
from vlbridge.export.lora import merged_state_dict
from vlbridge.export.processor import IMAGE_TOKEN, chat_template, image_processor
from vlbridge.recipe import Recipe
from vlbridge.text.tokenize import IMAGE_TOKEN_ID

SELECT_STRATEGY = {1: "default", 0: "full"}  # prefix tokens vlbridge drops -> LLaVA's strategy dropping as many
LLAVA_TIED_EMBEDDINGS = "embed_tokens.weight"  # the LM embedding LlavaForConditionalGeneration ties its head to
ACTIVATIONS = {nn.GELU: "gelu", nn.SiLU: "silu", nn.ReLU: "relu"}  # our projector's modules -> ACT2FN names


@dataclass(frozen=True)
class LlavaLayout:
    """The LlavaConfig fields a vlbridge model decides."""

    vision_feature_layer: int
    vision_feature_select_strategy: str
    projector_hidden_act: str
    image_seq_length: int  # visual tokens per image


def _option(recipe: Recipe, key: str) -> str:
    """How the recipe names a projector option: the preset's ``bridge_options`` or ``connector_options``."""
    m = recipe.model
    return f"model.bridge_options.{key}" if m.bridge is not None and m.connector is None else \
        f"model.connector_options.{key}"


def llava_layout(built, recipe: Recipe) -> LlavaLayout:
    """The LLaVA fields of ``built``, or a ConfigError listing every option LLaVA cannot express."""
    model, spec = built.model, built.spec
    encoder, bridge, lm = model.vision_encoder, model.bridge, model.language_model
    refusals = []
    if spec.connector != "mlp" or spec.injection != "input_space":
        refusals.append(f"LLaVA is an mlp -> input_space bridge; this run's is {spec.pair}")
    if lm.is_encoder_decoder:
        refusals.append(f"model.language_model={recipe.model.language_model!r} is an encoder-decoder LM; LLaVA's "
                        "language model is a causal (decoder-only) one")
    layout = None
    if encoder is None:
        refusals.append("model.vision_encoder=none: LLaVA reads features of a vision tower")
    elif encoder.backbone.kind != "vit" or not hasattr(encoder.model, "config"):
        refusals.append(f"model.vision_encoder={recipe.model.vision_encoder!r} is not a Hugging Face vision "
                        "transformer (LLaVA's vision tower is one: CLIP, SigLIP, DINOv2)")
    else:
        prefix = encoder.backbone.num_prefix_tokens
        if prefix not in SELECT_STRATEGY:
            refusals.append(f"model.vision_encoder={recipe.model.vision_encoder!r} has {prefix} prefix tokens (CLS and "
                            "registers) that vlbridge drops; LLaVA's vision_feature_select_strategy drops the first "
                            "token (default) or none (full)")
        if encoder.adapters is not None:
            refusals.append(f"model.vision_adapter_dim={recipe.model.vision_adapter_dim}: adapters inside the vision "
                            "encoder have no LLaVA equivalent")
        layout = (encoder.layer, SELECT_STRATEGY.get(prefix), encoder.num_tokens)
    if spec.features != "grid":
        refusals.append(f"model.bridge_options.features={spec.features!r}: LLaVA's projector reads the grid "
                        "features, not the pooled vector")
    if spec.pool != 1:
        refusals.append(f"model.bridge_options.pool={spec.pool}: LLaVA has no pooling of the grid before its "
                        "projector")
    act = None
    connector = bridge.connector
    if isinstance(connector, MLPProjector):
        if len(connector.net) != 3:
            refusals.append(f"{_option(recipe, 'layers')}=1: LLaVA's projector is Linear -> activation -> Linear")
        else:
            if connector.hidden != lm.config.hidden_size:
                refusals.append(f"{_option(recipe, 'hidden')}={connector.hidden}: LLaVA's projector hidden width is "
                                f"the LM's ({lm.config.hidden_size})")
            act = ACTIVATIONS.get(type(connector.net[1]))
            if act is None or getattr(connector.net[1], "approximate", "none") != "none":
                refusals.append(f"{_option(recipe, 'activation')}: {connector.net[1]} has no LLaVA name")
    if refusals:
        raise ConfigError("this run cannot be a Hugging Face LlavaForConditionalGeneration:\n  - "
                          + "\n  - ".join(refusals) + "\n(--format bridge exports its trained tensors and a model card)")
    return LlavaLayout(layout[0], layout[1], act, bridge.num_visual_tokens(layout[2]))


def exported_tokenizer(tokenizer, folder: Path):
    """A copy of ``tokenizer`` (saved to and read back from ``folder``) with ``<image>`` as a special token and no
    BOS/EOS added to plain text, as vlbridge tokenizes (``add_special_tokens=False``)."""
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(folder)
    copy_ = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    copy_.add_tokens([IMAGE_TOKEN], special_tokens=True)
    for flag in ("add_bos_token", "add_eos_token"):
        if getattr(copy_, flag, False):
            setattr(copy_, flag, False)
    return copy_


def _lm_parts(lm: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A Hugging Face causal LM's merged weights split into its base model's (``AutoModel``'s names) and its head's."""
    state = merged_state_dict(lm)
    head = lm.get_output_embeddings()
    head_name = next(name for name, module in lm.named_modules() if module is head)
    # a LoRA-wrapped head is found under its base layer's name
    head_name = head_name.removesuffix(".base_layer")
    base = f"{lm.base_model_prefix}."
    return ({k[len(base):]: v for k, v in state.items() if k.startswith(base)},
            {k[len(head_name) + 1:]: v for k, v in state.items() if k.startswith(head_name + ".")})


def _grow_rows(state: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """Vocabulary-sized tensors (first dimension = the old vocabulary) with zero rows appended up to ``rows``."""
    return {k: torch.cat([v, v.new_zeros(rows - v.shape[0], *v.shape[1:])]) if v.shape[0] < rows else v
            for k, v in state.items()}


def hf_llava(built, recipe: Recipe, tokenizer):
    """``built`` as an in-memory ``LlavaForConditionalGeneration`` for ``tokenizer`` (:func:`exported_tokenizer`). Its
    tensors are ``built``'s own where nothing changes (no copy of a large LM): save it, do not train it."""
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration

    layout = llava_layout(built, recipe)
    model = built.model
    lm, encoder, projector = model.language_model.model, model.vision_encoder, model.bridge.connector.net
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    base, head = _lm_parts(lm)
    vocabulary = _embedding_key(lm, base)
    rows = max(base[vocabulary].shape[0], image_id + 1)
    text_config = copy.deepcopy(lm.config)
    if hasattr(text_config, "quantization_config"):
        del text_config.quantization_config
    text_config.vocab_size = rows
    # tied stays tied unless LoRA on the head made the two differ, or LLaVA cannot tie them: its tying names
    # `embed_tokens` (LLaMA family), so a GPT-2 (`wte`) gets its head as a separate copy
    tied = bool(getattr(lm.config, "tie_word_embeddings", False)) and torch.equal(head["weight"], base[vocabulary]) \
        and vocabulary == LLAVA_TIED_EMBEDDINGS
    text_config.tie_word_embeddings = tied
    config = LlavaConfig(
        vision_config=copy.deepcopy(encoder.model.config).to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_id,
        image_seq_length=layout.image_seq_length,
        projector_hidden_act=layout.projector_hidden_act,
        vision_feature_select_strategy=layout.vision_feature_select_strategy,
        vision_feature_layer=layout.vision_feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=tied,
    )
    added = rows - base[vocabulary].shape[0]
    base[vocabulary] = _grow_rows({"w": base[vocabulary]}, rows)["w"]
    head = {"weight": base[vocabulary]} if tied else _grow_rows(head, rows)
    state = {**{f"model.language_model.{k}": v for k, v in base.items()},
             **{f"lm_head.{k}": v for k, v in head.items()},
             **{f"model.vision_tower.{k}": v for k, v in encoder.model.state_dict().items()},
             **{f"model.multi_modal_projector.linear_1.{k}": v for k, v in projector[0].state_dict().items()},
             **{f"model.multi_modal_projector.linear_2.{k}": v for k, v in projector[2].state_dict().items()}}
    with _no_init_weights():  # every tensor is set below: drawing 135M random values first would take seconds
        hf = LlavaForConditionalGeneration(config).eval()
    hf.load_state_dict(state, strict=True, assign=True)  # strict: nothing is left uninitialised
    if tied:
        hf.tie_weights()  # assign gave the head its own Parameter object
    hf.generation_config = _generation_config(lm, built, tokenizer, GenerationConfig,
                                              suppress=[image_id] if added else [])
    return hf


def _no_init_weights():
    """transformers' context that skips weight initialisation (moved between modules in transformers 5)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def _embedding_key(lm: nn.Module, base: dict[str, torch.Tensor]) -> str:
    """The base model's name of the input embedding weight (``embed_tokens.weight``, GPT-2's ``wte.weight``)."""
    embedding = lm.get_input_embeddings()
    prefix = f"{lm.base_model_prefix}."
    name = next(n for n, m in lm.named_modules() if m is embedding)
    key = f"{name.removeprefix(prefix)}.weight"
    if key not in base:
        raise ConfigError(f"cannot find the input embeddings of {type(lm).__name__} (looked for {key})")
    return key


def _generation_config(lm, built, tokenizer, generation_config_class, suppress: list[int]):
    """The LM's generation config with vlbridge's greedy default and its end of answer (the chat format's end of
    turn when that is one token, as ``vlbridge.eval.generate_answers`` stops there) and pad token."""
    config = generation_config_class.from_dict(lm.generation_config.to_dict())
    end = built.chat_format.assistant_end
    eos = tokenizer.convert_tokens_to_ids(end) if end in tokenizer.get_vocab() else tokenizer.eos_token_id
    config.eos_token_id = eos
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
    if suppress:
        config.suppress_tokens = suppress  # the row added for <image> must never be generated
    return config


def hf_processor(built, layout: LlavaLayout, tokenizer):
    """The ``LlavaProcessor``: the encoder's preprocessing, ``tokenizer`` and the chat template of vlbridge's layout."""
    from transformers import LlavaProcessor

    backbone = built.model.vision_encoder.backbone
    return LlavaProcessor(
        image_processor=image_processor(backbone.preprocessing),
        tokenizer=tokenizer,
        patch_size=backbone.stride,
        vision_feature_select_strategy=layout.vision_feature_select_strategy,
        num_additional_image_tokens=backbone.num_prefix_tokens,
        chat_template=chat_template(built.chat_format),
        image_token=IMAGE_TOKEN,
    )


PROBE = "What is in the image?"  # the prompt the export checks its tokenization with


def check_prompt_tokens(built, processor, layout: LlavaLayout, image) -> None:
    """Refuse a processor whose token ids for a probe prompt differ from vlbridge's (the image's positions aside)."""
    from vlbridge.runs import prompt_collator

    sample = Sample("probe", (Turn("user", f"{IMAGE_PLACEHOLDER}\n{PROBE}"),), image=Path("probe.png"))
    ours = prompt_collator(built).encode(sample).input_ids  # the ids only: no image is read
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ours = [t for i in ours for t in ([image_id] * layout.image_seq_length if i == IMAGE_TOKEN_ID else [i])]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROBE}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    theirs = processor(text=text, images=image, return_tensors="pt")["input_ids"][0].tolist()
    if theirs != ours:
        first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        raise ConfigError(f"the exported processor tokenizes the prompt {PROBE!r} differently from vlbridge (its "
                          f"tokenizer {type(processor.tokenizer).__name__} adds or merges tokens): {len(theirs)} ids "
                          f"vs {len(ours)}, first difference at position {first}")


def write_llava(built, recipe: Recipe, folder: Path) -> None:
    """Write the ``LlavaForConditionalGeneration`` folder of ``built`` into the (empty) ``folder``."""
    from PIL import Image

    layout = llava_layout(built, recipe)  # refuse before any work
    tokenizer = exported_tokenizer(built.tokenizer, folder)
    processor = hf_processor(built, layout, tokenizer)
    size = built.model.vision_encoder.backbone.preprocessing.output_size
    check_prompt_tokens(built, processor, layout, Image.new("RGB", (size[1], size[0]), (127, 127, 127)))
    hf = hf_llava(built, recipe, tokenizer)
    hf.save_pretrained(folder)
    processor.save_pretrained(folder)
