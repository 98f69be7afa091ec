"""A task's prompt replaces a record's conversation and keeps everything else: its image or clip and its place."""

from __future__ import annotations

from pathlib import Path

from vlbridge.data.sample import Sample, Turn
from vlbridge.eval.result import prompt_only


def test_the_prompt_keeps_the_clip_the_file_and_the_position():
    clip = Sample("c1", (Turn("user", "<image>\nWhich way?"), Turn("assistant", "left")), source="clips.json",
                  meta={"question_type": "direction"}, frames=(Path("f0.png"), Path("f1.png")), position=7)
    asked = prompt_only(clip, "<image>\nWhich way did it move?")
    assert asked.turns == (Turn("user", "<image>\nWhich way did it move?"),)
    assert (asked.frames, asked.image, asked.source, asked.meta, asked.position) == (clip.frames, None, "clips.json",
                                                                                     clip.meta, 7)
