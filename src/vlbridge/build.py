"""Builders: a recipe's model section -> a :class:`VisionLanguageModel`, its tokenizer and chat format."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from vlbridge.bridges.registry import build_aligner, build_bridge, resolve_spec
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.models.language_model import LanguageModel
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
from vlbridge.models.truncate import keep_first_layers
from vlbridge.text.chat_format import ChatFormat, chat_format_for
from vlbridge.recipe import ModelConfig
from vlbridge.vlm import VisionLanguageModel

NO_ENCODER = "none"  # model.vision_encoder for encoder-free bridges: the connector reads pixels


@dataclass
class Built:
    model: VisionLanguageModel
    tokenizer: object
    chat_format: ChatFormat
    spec: BridgeSpec  # the connector and injection the bridge was built from

    @property
    def image_tokens(self) -> int:
        """Sequence positions one image takes in the LM (for length limits)."""
        return self.model.image_positions


def wrap_language_model(model: nn.Module) -> LanguageModel | Seq2SeqLanguageModel:
    """A Hugging Face LM -> the wrapper bridges read; its config's ``is_encoder_decoder`` decides which."""
    return Seq2SeqLanguageModel(model) if getattr(model.config, "is_encoder_decoder", False) else LanguageModel(model)


def add_lora(language_model: LanguageModel | Seq2SeqLanguageModel, config: ModelConfig) -> None:
    """LoRA on the LM through peft, injected in place so pretrained parameter names are kept."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets))
    inject_adapter_in_model(lora, language_model.model)


def build_front_end(config: ModelConfig):
    """The frozen vision encoder the recipe names, or None for ``vision_encoder: none``."""
    from vlbridge.encoders import build_vision_encoder

    if config.vision_encoder == NO_ENCODER:
        return None
    return build_vision_encoder(config.vision_encoder, layer=config.vision_layer, adapter_dim=config.vision_adapter_dim)


def build_model(config: ModelConfig, training: bool = False) -> Built:
    """The model ``config`` names; ``training`` also builds its teacher encoder and aligner, if it names them."""
    from vlbridge.encoders import build_vision_encoder
    from vlbridge.weights import load_language_model

    spec = resolve_spec(config)  # before any weights load: a typo should not cost a model load
    build_aligner(config, None, None)  # the same for the teacher / aligner keys (no teacher: checks only)
    lm_module, tokenizer = load_language_model(config.language_model)
    if config.language_model_layers is not None:
        keep_first_layers(lm_module, config.language_model_layers)
    language_model = wrap_language_model(lm_module)
    if config.lora_rank > 0:
        add_lora(language_model, config)
    encoder = build_front_end(config)
    width, tokens = (encoder.feature_dim, encoder.num_tokens) if encoder is not None else (None, None)
    bridge = build_bridge(spec, language_model, width, tokens)
    if bridge.connector.reads_prompt:  # it reads the prompt as this LM's token ids
        bridge.connector.check_tokenizer(tokenizer, f"model.language_model={config.language_model!r}")
    teacher = None
    if training and config.teacher_encoder is not None:
        teacher = build_vision_encoder(config.teacher_encoder, layer=config.teacher_layer)
    aligner = build_aligner(config, language_model, teacher, bridge)  # None at inference
    model = VisionLanguageModel(language_model, bridge, encoder, teacher, aligner)
    chat_format = chat_format_for(tokenizer, config.chat_format, config.system_prompt)
    if language_model.is_encoder_decoder:  # prompt -> encoder, answer -> decoder (vlbridge.text.seq2seq)
        chat_format = replace(chat_format, encoder_decoder=True)
    return Built(model, tokenizer, chat_format, spec)
