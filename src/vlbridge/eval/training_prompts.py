"""The prompts a run was trained with: recorded in its checkpoint, and ``vlbridge eval``'s default for it.

A model learns the form of its prompts along with the task: a bridge trained on bare Shapes questions lost
20 points when evaluated with the ``vqa`` task's standard prompt, which appends LLaVA-1.5's "Answer the
question using a single word or phrase.". So training records, per evaluation task, the template its
training samples used (``meta.json``: ``"prompts": {task: template}``, :func:`training_prompts`), and
``vlbridge eval --task`` asks with it unless ``--prompt`` or ``--task-prompt`` says otherwise
(:func:`choose_prompt`).

How a template is read off the training samples (each sample gives one; the most common one is recorded):

- ``vqa``, from the short-answer samples (``meta["task"]`` ``short``, or none, as scoring reads them) with one
  user turn: the user text with the question replaced by ``{question}``. The question is ``meta["question"]``
  when the sample has it (VQAv2 readers); otherwise the text less an instruction line that at least half of
  the samples share at their start or end (e.g. LLaVA-1.5's suffix). Shapes' bare questions give ``{question}``.
- ``multiple-choice``, from the ``mc`` samples with ``meta["question"]`` and ``meta["choices"]`` (ScienceQA):
  the question, the options (``(A) .. (B) ..``) and the context replaced by their fields.
- ``caption``, from the caption samples: their user text.

The image placeholder is left out (evaluation puts it first). A template the task's checks refuse (a ``vqa``
prompt without the question) is not recorded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample
from vlbridge.errors import ConfigError
from vlbridge.eval.task_prompts import TASK_PROMPTS, check_template
from vlbridge.prompts.scienceqa import context_text, options_text

META_KEY = "prompts"
"""The checkpoint ``meta.json`` key holding ``{task: template}``."""


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def user_text(sample: Sample) -> str | None:
    """The text of the sample's one user turn without the image placeholder (None for a conversation)."""
    users = [turn.text for turn in sample.prompt_turns if turn.role == "user"]
    if len(users) != 1:
        return None
    text = users[0]
    for placeholder in (f"{IMAGE_PLACEHOLDER}\n", f"\n{IMAGE_PLACEHOLDER}", IMAGE_PLACEHOLDER):
        if placeholder in text:
            return text.replace(placeholder, "", 1).strip()
    return text.strip()


def _with_fields(text: str, values: Iterable[tuple[str, str]]) -> str | None:
    """``text`` as a template: each (field, value) replaced once by ``{field}``; None if a value is not in it."""
    template = _escape(text)
    for name, value in values:
        value = _escape(value)
        if not value or value not in template:
            return None
        template = template.replace(value, "{" + name + "}", 1)
    return template


def _instruction_line(texts: list[str], position: int) -> str | None:
    """The line (first: 0, last: -1) at least half of ``texts`` share there, among texts of several lines."""
    lines = Counter(text.split("\n")[position] for text in texts if "\n" in text)
    if not lines:
        return None
    line, count = lines.most_common(1)[0]
    return line if 2 * count >= len(texts) else None


def _short_templates(samples: list[Sample]) -> list[str]:
    texts = [(s, text) for s in samples if (text := user_text(s))]
    bare = [text for s, text in texts if not s.meta.get("question")]
    prefix, suffix = _instruction_line(bare, 0), _instruction_line(bare, -1)
    templates = []
    for sample, text in texts:
        if sample.meta.get("question"):
            template = _with_fields(text, [("question", sample.meta["question"])])
            if template is not None:
                templates.append(template)
            continue
        lines = text.split("\n")
        head = [lines.pop(0)] if prefix is not None and len(lines) > 1 and lines[0] == prefix else []
        tail = [lines.pop()] if suffix is not None and len(lines) > 1 and lines[-1] == suffix else []
        templates.append("\n".join([*map(_escape, head), "{question}", *map(_escape, tail)]))
    return templates


def _choice_templates(samples: list[Sample]) -> list[str]:
    templates = []
    for s in samples:
        text = user_text(s)
        if not text or not s.meta.get("question") or not s.meta.get("choices"):
            continue
        fields = [("question", s.meta["question"]), ("options", options_text(s.meta["choices"]))]
        context = context_text(s.meta.get("context") or "", s.meta.get("caption") or "")
        template = _with_fields(text, fields + [("context", context)]) or _with_fields(text, fields)
        if template is not None:
            templates.append(template)
    return templates


def _most_common(task: str, templates: list[str]) -> str | None:
    if not templates:
        return None
    template = Counter(templates).most_common(1)[0][0]
    try:
        return check_template(task, template)
    except ConfigError:
        return None


def training_prompts(samples: Sequence[Sample]) -> dict[str, str]:
    """``{eval task: template}`` the training ``samples`` used, for the tasks they teach (module docstring)."""
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.meta.get("task", "short"), []).append(s)
    found = {
        "vqa": _most_common("vqa", _short_templates(by_task.get("short", []))),
        "multiple-choice": _most_common("multiple-choice", _choice_templates(by_task.get("mc", []))),
        "caption": _most_common("caption", [_escape(t) for s in by_task.get("caption", []) if (t := user_text(s))]),
    }
    return {task: template for task, template in found.items() if template is not None}


def choose_prompt(task: str, given: str | None, recorded: dict[str, str], standard: bool = False) -> tuple[str, str]:
    """(template, where it comes from) for evaluating ``task``: ``given`` (``--prompt``), else the run's
    ``recorded`` training prompt unless ``standard`` (``--task-prompt``), else the task's standard prompt."""
    if given is not None:
        return check_template(task, given), "--prompt"
    if standard:
        return TASK_PROMPTS[task], "the task's standard prompt (--task-prompt)"
    if task in recorded:
        return check_template(task, recorded[task]), "the prompt the run was trained with"
    return TASK_PROMPTS[task], "the task's standard prompt (the model records no training prompt for this task)"
