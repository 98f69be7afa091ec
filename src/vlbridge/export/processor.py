"""What a Hugging Face processor needs to prepare inputs exactly as vlbridge does: the image processor of the
encoder's preprocessing, and a chat template that renders vlbridge's prompt layout.

- Images: vlbridge's :class:`~vlbridge.weights.backbone.ImagePreprocessing` (PIL resize of the short side or to a
  size, centre crop, 0..1, mean/std) is what ``CLIPImageProcessorPil`` does with the same fields; it is saved as
  that class, the PIL one, which is what vlbridge follows (``vlbridge.encoders.image_transforms``).
- Text: vlbridge lays a conversation out with the five strings of a :class:`~vlbridge.text.chat_format.ChatFormat`
  (derived from the LM's template, with the recipe's system prompt). The exported template is written from those
  strings, so ``apply_chat_template`` renders the very prompt vlbridge tokenizes. As in vlbridge, a user turn is
  always followed by the assistant's header (the generation prompt), whatever ``add_generation_prompt`` says.
"""

from __future__ import annotations

import json

from vlbridge.text.chat_format import ChatFormat
from vlbridge.weights.backbone import PIL_RESAMPLE_NAMES, ImagePreprocessing

IMAGE_TOKEN = "<image>"  # the placeholder vlbridge's data uses (vlbridge.data.sample.IMAGE_PLACEHOLDER)


def image_processor(spec: ImagePreprocessing):
    """A Hugging Face image processor computing what ``vlbridge.encoders.image_transforms`` computes for ``spec``."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    except ImportError:  # transformers 4: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil

    resample = {name: number for number, name in PIL_RESAMPLE_NAMES.items()}[spec.resample]
    if spec.shortest_edge is not None:
        size = {"shortest_edge": spec.shortest_edge}
    else:
        size = {"height": spec.resize_to[0], "width": spec.resize_to[1]}
    crop = {"height": spec.crop_size[0], "width": spec.crop_size[1]} if spec.crop_size is not None else None
    return CLIPImageProcessorPil(
        do_resize=True, size=size, resample=resample,
        do_center_crop=crop is not None, crop_size=crop or size,
        do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(spec.mean), image_std=list(spec.std),
        do_convert_rgb=True,  # vlbridge's to_rgb: transparent pixels composited on white, as Hugging Face does
    )


def _literal(text: str) -> str:
    """A Jinja string literal of ``text`` (Jinja reads Python-style escapes; non-ASCII stays as it is)."""
    return json.dumps(text, ensure_ascii=False)


def chat_template(chat_format: ChatFormat) -> str:
    """A Jinja chat template rendering ``chat_format``'s layout (:meth:`ChatFormat.render`).

    Message content may be a string (``"<image>\\nWhat is this?"``, vlbridge's own form) or a list of
    ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts; as in llava-hf's templates, each image part
    becomes ``<image>\\n`` before the text. Other roles than user and assistant are refused: the system prompt is
    part of the layout the model was trained with."""
    f = chat_format
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] not in ['user', 'assistant'] -%}"
        "{{- raise_exception('this model takes user and assistant turns only; its system prompt is fixed, as it "
        "was trained') -}}"
        "{%- endif -%}"
        "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
        "{%- else -%}{%- set text = namespace(value='') -%}"
        "{%- for part in message['content'] if part['type'] == 'image' -%}"
        f"{{%- set text.value = text.value + {_literal(IMAGE_TOKEN + chr(10))} -%}}"
        "{%- endfor -%}"
        "{%- for part in message['content'] if part['type'] == 'text' -%}"
        "{%- set text.value = text.value + part['text'] -%}"
        "{%- endfor -%}"
        "{%- set text = text.value -%}"
        "{%- endif -%}"
        f"{{%- if loop.first -%}}{{{{- {_literal(f.prefix)} -}}}}{{%- endif -%}}"
        "{%- if message['role'] == 'user' -%}"
        f"{{%- if not loop.first -%}}{{{{- {_literal(f.assistant_to_user)} -}}}}{{%- endif -%}}"
        f"{{{{- text + {_literal(f.user_to_assistant)} -}}}}"
        "{%- else -%}"
        f"{{{{- text + {_literal(f.assistant_end)} -}}}}"
        f"{{%- if loop.last -%}}{{{{- {_literal(f.suffix)} -}}}}{{%- endif -%}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )
