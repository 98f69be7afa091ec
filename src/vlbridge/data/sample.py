"""The one internal sample type every reader produces and every collator consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

IMAGE_PLACEHOLDER = "<image>"
"""Where the image (or the whole clip of frames) goes in a user turn (LLaVA convention). At most one per sample."""

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation. User text may hold :data:`IMAGE_PLACEHOLDER` once."""

    role: Role
    text: str


@dataclass(frozen=True)
class Sample:
    """An image, a clip of frames, or neither, and a conversation about it.

    A clip (``frames``: its image files in time order, ``image`` None) fills the one image placeholder as a
    whole: the vision encoder reads each frame, and the connector reads the frames together (only a connector
    that takes clips, :attr:`vlbridge.bridges.connectors.base.Connector.takes_frames`).

    ``meta`` carries what evaluation needs and the model never sees; its keys, when present:
    ``task`` ("short" | "mc" | "caption"), ``answers`` (list of reference answers: the 10 human
    answers for VQA, several captions for captioning), ``choices`` (list of option texts for multiple
    choice), ``answer_index`` (index of the right choice), ``question_type`` and ``answer_type``.
    """

    id: str
    turns: tuple[Turn, ...]
    image: Path | None = None
    source: str = ""  # the file the record came from, for error messages
    meta: dict[str, Any] = field(default_factory=dict)
    frames: tuple[Path, ...] = ()  # a clip: its frames' image files in time order (then image is None)
    position: int | str | None = field(default=None, compare=False)  # where the record is in `source` (its
    # 0-based index in the file's list); with `source` it tells apart records that share an id. None: not from a file

    def __post_init__(self) -> None:
        if self.image is not None and self.frames:
            raise ValueError(f"sample {self.id!r}: an image or a clip of frames, not both")

    @property
    def image_files(self) -> tuple[Path, ...]:
        """The image files the sample shows: its clip's frames, its one image, or none."""
        return self.frames if self.frames else (() if self.image is None else (self.image,))

    @property
    def is_clip(self) -> bool:
        return bool(self.frames)

    @property
    def prompt_turns(self) -> tuple[Turn, ...]:
        """All turns before the last assistant answer (what generation is conditioned on)."""
        return self.turns[:-1] if self.turns and self.turns[-1].role == "assistant" else self.turns

    @property
    def answer(self) -> str | None:
        """The last assistant answer, or None for a prompt-only sample."""
        return self.turns[-1].text if self.turns and self.turns[-1].role == "assistant" else None
