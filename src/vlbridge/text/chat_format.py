"""How a conversation is laid out around user and assistant texts.

A :class:`ChatFormat` is five fixed strings. It is derived from the LM's own chat template by rendering
a probe conversation with sentinel texts and cutting at the sentinels (:func:`format_from_template`),
or given explicitly (:data:`PLAIN`) for LMs without a chat template. Because the labels are built from
these pieces turn by turn, only the answer and its end-of-turn marker are ever supervised, whatever the
template (a common failure of VLM frameworks is masks that silently break when the template changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlbridge.errors import ConfigError

_USER = ["@@U1@@", "@@U2@@"]
_ASSISTANT = ["@@A1@@", "@@A2@@"]


@dataclass(frozen=True)
class ChatFormat:
    """Rendered conversation = prefix + u1 + user_to_assistant + a1 + assistant_end
    + assistant_to_user + u2 + user_to_assistant + a2 + assistant_end + suffix."""

    prefix: str  # before the first user text (system prompt and user header)
    user_to_assistant: str  # after a user text, up to the assistant's text (generation prompt)
    assistant_end: str  # closes an answer; supervised, so the model learns to stop
    assistant_to_user: str  # after an answer's end, up to the next user text
    suffix: str  # after the last answer's end
    # encoder-decoder LM (T5, BART): the prompt is the encoder's input and the last answer the decoder's
    # target, each framed by the tokenizer's special tokens (vlbridge.text.seq2seq); set by the builder
    encoder_decoder: bool = False

    def render(self, turns: list[tuple[str, str]]) -> str:
        """Render (role, text) turns as one string; a trailing user turn gets the generation prompt."""
        parts = [self.prefix]
        for i, (role, text) in enumerate(turns):
            if role == "user":
                if i > 0:
                    parts.append(self.assistant_to_user)
                parts += [text, self.user_to_assistant]
            else:
                parts += [text, self.assistant_end]
        if turns and turns[-1][0] == "assistant":
            parts.append(self.suffix)
        return "".join(parts)


PLAIN_TEMPLATE = "plain"


def plain_format(eos_token: str) -> ChatFormat:
    """For base LMs without a chat template: ``question\\nanswer<eos>``."""
    return ChatFormat(prefix="", user_to_assistant="\n", assistant_end=eos_token, assistant_to_user="\n", suffix="")


def format_from_template(tokenizer, system_prompt: str | None = None) -> ChatFormat:
    """Derive the five strings from ``tokenizer.chat_template`` by rendering sentinel conversations.

    ``system_prompt`` replaces the template's default system message (None keeps the default; SmolLM2's
    adds ~20 tokens to every sample, a third of a short VQA prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template; use chat_format='{PLAIN_TEMPLATE}'"
        )
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    for u, a in zip(_USER, _ASSISTANT):
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    try:
        prefix, rest = full.split(_USER[0])
        user_to_assistant, rest = rest.split(_ASSISTANT[0])
        between, rest = rest.split(_USER[1])
        user_to_assistant_2, rest = rest.split(_ASSISTANT[1])
        final = rest
    except ValueError:
        raise ConfigError("the chat template does not render user and assistant texts verbatim") from None
    if user_to_assistant != user_to_assistant_2:
        raise ConfigError("the chat template is not regular across turns; pass an explicit ChatFormat")
    eos = tokenizer.eos_token or ""
    cut = final.find(eos) + len(eos) if eos and eos in final else len(final)
    assistant_end, suffix = final[:cut], final[cut:]
    if not between.startswith(assistant_end):
        raise ConfigError("the chat template closes answers differently across turns; pass an explicit ChatFormat")
    return ChatFormat(prefix, user_to_assistant, assistant_end, between[len(assistant_end):], suffix)


def chat_format_for(tokenizer, name: str = "auto", system_prompt: str | None = None) -> ChatFormat:
    """``auto``: the tokenizer's chat template if it has one, else plain; or ``template`` / ``plain``."""
    choices = {"auto", "template", PLAIN_TEMPLATE}
    if name not in choices:
        raise ConfigError(f"unknown chat_format {name!r}; valid: {sorted(choices)}")
    if name == PLAIN_TEMPLATE or (name == "auto" and not getattr(tokenizer, "chat_template", None)):
        return plain_format(tokenizer.eos_token or "")
    return format_from_template(tokenizer, system_prompt)
