"""One question about one image, asked the same way by ``vlbridge generate``, ``vlbridge analyze`` and
``vlbridge serve``: the sample, its one-row batch with the columns of the question's own tokens, the tokens the
MemVP analyses read, and the answer.

One builder of the sample keeps the three commands' prompts token for token the same, so an answer on the
browser page is the answer ``vlbridge generate`` prints for that image and prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlbridge.batch import Batch
from vlbridge.build import Built
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.errors import ConfigError
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.runs import prompt_collator
from vlbridge.text.tokenize import IMAGE_TOKEN_ID


def question_sample(image: str | Path | Sequence[str | Path], prompt: str, source: str = "--image") -> Sample:
    """The user turn ``<image>\\n{prompt}`` about ``image``: one image file, or a clip's frame files in time order
    (a sequence of more than one); ``source`` names where the image came from in errors."""
    turns = (Turn("user", f"{IMAGE_PLACEHOLDER}\n{prompt}"),)
    files = [Path(f) for f in image] if isinstance(image, (list, tuple)) else [Path(image)]
    if len(files) > 1:
        return Sample("cli", turns, frames=tuple(files), source=source)
    return Sample("cli", turns, image=files[0], source=source)


def ask(built: Built, image: str | Path | Sequence[str | Path], prompt: str,
        settings: GenerationSettings = GenerationSettings(max_new_tokens=32, batch_size=1),
        source: str = "--image") -> str:
    """The model's answer to ``prompt`` about the image file ``image`` (or a clip: its frame files in order; the
    bridge's connector must take clips), greedy unless ``settings`` sample."""
    sample = question_sample(image, prompt, source)
    return generate_answers(built.model, built.tokenizer, prompt_collator(built), [sample], settings)[0]


def question_batch(built: Built, image: str | Path, prompt: str) -> tuple[Batch, list[int]]:
    """The one-sample prompt batch, and the columns of ``input_ids`` that hold the prompt's own tokens (what
    the MemVP analyses read)."""
    after = f"\n{prompt}"  # the user text after the placeholder, tokenized as one piece (encode_sample)
    batch = prompt_collator(built)([question_sample(image, prompt)])
    ids = batch.input_ids[0].tolist()
    piece = built.tokenizer.encode(after, add_special_tokens=False)
    start = ids.index(IMAGE_TOKEN_ID) + 1
    if ids[start:start + len(piece)] != piece:
        raise RuntimeError("could not find the prompt's tokens after the image placeholder")
    return batch, list(range(start, start + len(piece)))


def choose_tokens(tokenizer, batch: Batch, columns: list[int], words: list[str] | None,
                  field: str = "--tokens") -> tuple[list[int], list[str]]:
    """The ``columns`` whose tokens read as one of ``words`` (case-insensitive; None or empty: every token that is
    not blank), with their texts. A word that is no token of the prompt is refused, naming ``field`` (where the
    words came from) and listing the prompt's tokens."""
    texts = [tokenizer.decode([batch.input_ids[0, c].item()]) for c in columns]
    pairs = [(c, t.strip()) for c, t in zip(columns, texts) if t.strip()]  # newlines and spaces carry nothing
    if not words:
        return [c for c, _ in pairs], [t for _, t in pairs]
    wanted = [w.lower() for w in words]
    chosen = [(c, t) for c, t in pairs if t.lower() in wanted]
    missing = sorted(set(wanted) - {t.lower() for _, t in chosen})
    if missing:
        raise ConfigError(f"{field} {missing} are not tokens of the prompt; its tokens: {[t for _, t in pairs]}")
    return [c for c, _ in chosen], [t for _, t in chosen]
