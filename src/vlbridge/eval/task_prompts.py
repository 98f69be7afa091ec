"""The prompt of every evaluation task, in one place.

A prompt is a ``str.format`` template filled per item; when the item has an image, the image placeholder
comes first on its own line (``<image>\\n``, the LLaVA convention all our readers follow), and the LM's
chat format wraps the result like any user turn. The defaults are the prompts our readers put into
*training* samples of the same data, so a model is evaluated with the prompt it was trained on:

- ``caption``: ``Provide a one-sentence caption for the provided image.`` (LLaVA-1.5's short-caption
  instruction; :data:`vlbridge.datasets.coco.CAPTION_INSTRUCTION`). Alternatives in the literature are
  prefixes the LM continues rather than instructions: BLIP-2's zero-shot ``a photo of`` (LAVIS) and
  InstructBLIP's ``A short image caption:``; pass them with ``vlbridge eval --prompt``. The Shapes
  LLaVA caption split was generated with ``Describe the image briefly.``.
- ``vqa``: the question, then ``Answer the question using a single word or phrase.`` on a new line
  (LLaVA-1.5's VQAv2 prompt; :data:`vlbridge.datasets.vqav2.SHORT_ANSWER_INSTRUCTION`).
- ``multiple-choice``: ScienceQA's QCM prompt as MemVP's code builds it
  (:mod:`vlbridge.prompts.scienceqa`): ``Question: ..\\nContext: ..\\nOptions: (A) .. (B) ..\\nResponse:``,
  target ``The answer is X.``. The Shapes LLaVA multiple-choice split uses another prompt
  (:func:`vlbridge.data.prompts.format_multiple_choice`, target the bare letter); scoring parses both
  answer conventions (:func:`vlbridge.metrics.multiple_choice.parse_choice`).
- ``retrieval`` has no prompt: the captions themselves are embedded.
"""

from __future__ import annotations

import string

from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.datasets.coco import CAPTION_INSTRUCTION
from vlbridge.datasets.vqav2 import SHORT_ANSWER_INSTRUCTION
from vlbridge.errors import ConfigError

TASK_PROMPTS: dict[str, str] = {
    "caption": CAPTION_INSTRUCTION,
    "vqa": "{question}\n" + SHORT_ANSWER_INSTRUCTION,
    "multiple-choice": "Question: {question}\nContext: {context}\nOptions: {options}\nResponse:",
}
"""task -> default prompt template (fields below)."""

PROMPT_FIELDS: dict[str, dict[str, str]] = {
    "caption": {},
    "vqa": {"question": "the question text"},
    "multiple-choice": {
        "question": "the question text",
        "context": "the hint and (optionally) the image caption, or N/A",
        "options": "(A) first (B) second ...",
    },
}
"""task -> the fields its template may use, with their meaning."""

REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {"caption": (), "vqa": ("question",),
                                               "multiple-choice": ("question", "options")}
"""task -> fields a template must use (a VQA prompt without the question cannot be answered)."""


def _known_task(task: str) -> None:
    if task not in TASK_PROMPTS:
        raise ConfigError(f"no prompt for task {task!r}; tasks with prompts: {sorted(TASK_PROMPTS)}")


def check_template(task: str, template: str | None = None) -> str:
    """``template`` (or the task's default when None), checked to use only the task's fields and all
    its required ones."""
    _known_task(task)
    if template is None:
        return TASK_PROMPTS[task]
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise ConfigError(f"prompt {template!r} is not a valid template ({error}); write literal braces as "
                          "{{ and }}") from None
    unknown = sorted(used - set(PROMPT_FIELDS[task]))
    missing = [f for f in REQUIRED_FIELDS[task] if f not in used]
    if unknown or missing:
        raise ConfigError(f"prompt {template!r} for task {task!r}: unknown field(s) {unknown}, missing field(s) "
                          f"{missing}; fields: {PROMPT_FIELDS[task] or 'none'}")
    if IMAGE_PLACEHOLDER in template:
        raise ConfigError(f"prompt {template!r}: leave out {IMAGE_PLACEHOLDER}; it is put first for every item "
                          "with an image")
    return template


def render_prompt(task: str, template: str, has_image: bool, **fields: str) -> str:
    """The user text of one item: ``<image>\\n`` (when it has an image) + the filled template."""
    _known_task(task)
    text = template.format(**fields)
    if task == "multiple-choice":
        text = text.replace("  ", " ").strip()  # as MemVP's base_prompt.py cleans the QCM prompt
    return f"{IMAGE_PLACEHOLDER}\n{text}" if has_image else text
