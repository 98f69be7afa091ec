"""Builders: a recipe's model section -> a :class:`VisionLanguageModel`, its tokenizer and chat format."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from vlbridge.bridges.registry import build_bridge
from vlbridge.models.language_model import LanguageModel
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
from vlbridge.text.chat_format import ChatFormat, chat_format_for
from vlbridge.train.recipe import ModelConfig
from vlbridge.vlm import VisionLanguageModel


@dataclass
class Built:
    model: VisionLanguageModel
    tokenizer: object
    chat_format: ChatFormat

    @property
    def image_tokens(self) -> int:
        """Sequence positions one image takes in the LM (for length limits)."""
        bridge = self.model.bridge
        return bridge.injection.visual_sequence_length(bridge.num_visual_tokens(self.model.vision_encoder.num_tokens))


def wrap_language_model(model: nn.Module) -> LanguageModel | Seq2SeqLanguageModel:
    """A Hugging Face LM -> the wrapper bridges read; its config's ``is_encoder_decoder`` decides which."""
    return Seq2SeqLanguageModel(model) if getattr(model.config, "is_encoder_decoder", False) else LanguageModel(model)


def add_lora(language_model: LanguageModel | Seq2SeqLanguageModel, config: ModelConfig) -> None:
    """LoRA on the LM through peft, injected in place so pretrained parameter names are kept."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets))
    inject_adapter_in_model(lora, language_model.model)


def build_model(config: ModelConfig) -> Built:
    from vlbridge.encoders import build_vision_encoder
    from vlbridge.weights import load_language_model

    lm_module, tokenizer = load_language_model(config.language_model)
    language_model = wrap_language_model(lm_module)
    if config.lora_rank > 0:
        add_lora(language_model, config)
    encoder = build_vision_encoder(config.vision_encoder, layer=config.vision_layer,
                                   adapter_dim=config.vision_adapter_dim)
    bridge = build_bridge(config.bridge, encoder.feature_dim, language_model, config.bridge_options)
    model = VisionLanguageModel(language_model, bridge, encoder)
    chat_format = chat_format_for(tokenizer, config.chat_format, config.system_prompt)
    if language_model.is_encoder_decoder:  # prompt -> encoder, answer -> decoder (vlbridge.text.seq2seq)
        chat_format = replace(chat_format, encoder_decoder=True)
    return Built(model, tokenizer, chat_format)
