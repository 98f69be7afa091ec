"""Shapes clips: shapes move by whole cells without collisions, every answer agrees with the frames (and with the
rendered pixels), answers are balanced, and `vlbridge data shapes --clips N` writes LLaVA JSON clips that read
back, byte-identical for the same seed."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.shapes import CELLS, COLORS, object_center, render_scene
from vlbridge.data.shapes_clip_questions import CLIP_QUESTION_TYPES, all_clip_questions, clip_caption
from vlbridge.data.shapes_clips import DIRECTIONS, STILL, sample_clip
from vlbridge.data.shapes_clips_dataset import CLIP_TASKS, ClipsConfig, generate_clips
from vlbridge.data.shapes_dataset import SPLITS
from vlbridge.errors import ConfigError
from vlbridge_cli.main import main


def clips(count=300, num_frames=4, seed=0):
    return [sample_clip(random.Random(f"test:{seed}:{i}"), f"c{i}", num_frames) for i in range(count)]


def row_col(cell: str) -> tuple[int, int]:
    return CELLS.index(cell) // 3, CELLS.index(cell) % 3


@pytest.mark.parametrize("num_frames", [2, 4, 6])
def test_shapes_move_by_whole_cells_one_way_and_never_share_a_cell(num_frames):
    kinds = Counter()
    for clip in clips(200, num_frames):
        assert 1 <= len(clip.objects) <= 3 and clip.num_frames == num_frames
        for t in range(num_frames):
            cells = [o.cells[t] for o in clip.objects if o.cells[t] is not None]
            assert len(cells) == len(set(cells)), f"{clip.id}: two shapes in one cell in frame {t}"
        for o in clip.objects:
            assert o.shown, "every shape is shown in some frame"
            steps = [(row_col(b)[0] - row_col(a)[0], row_col(b)[1] - row_col(a)[1])
                     for a, b in zip(o.cells, o.cells[1:]) if a is not None and b is not None and a != b]
            if steps:
                assert o.always_shown and len(set(steps)) == 1 and steps[0] in DIRECTIONS.values()
                assert 1 <= len(steps) <= 2 and o.direction == next(d for d, v in DIRECTIONS.items() if v == steps[0])
                kinds["moving"] += 1
            else:
                assert o.direction == STILL and len(set(c for c in o.cells if c)) == 1
                kinds["still" if o.always_shown else "passing"] += 1
    assert min(kinds.values()) > 20, kinds


def test_every_answer_agrees_with_the_frames():
    """Answers recomputed from the frames as scenes (what the images show), not from the clip's own fields."""
    for clip in clips(150):
        scenes = [clip.frame(t) for t in range(clip.num_frames)]
        for question_type, questions in all_clip_questions(clip).items():
            for q in questions:
                if question_type == "frames_showing":
                    word = q.text.removeprefix("How many frames show ").removesuffix("?").split()[1]
                    fits = (lambda o: o.color == word) if word in COLORS else (lambda o: o.shape == word)
                    assert q.answer == str(sum(any(fits(o) for o in s.objects) for s in scenes)), q
                elif question_type == "moved_count":
                    assert q.answer == str(sum(len({c for c in o.cells if c}) > 1 for o in clip.objects))
                else:  # "the <name> ..." picks out one shape; find it in the frames by its attributes
                    name = q.text.split(" the ", 1)[1].split(" move?")[0].split(" in the ")[0].split()
                    found = [[o for o in s.objects if all(w in (o.size, o.color, o.shape) for w in name)]
                             for s in scenes]
                    assert all(len(f) <= 1 for f in found), f"{q.text}: the name fits two shapes"
                    cells = [f[0].cell if f else None for f in found]
                    if question_type == "where_first":
                        assert q.answer == cells[0]
                    elif question_type == "where_last":
                        assert q.answer == cells[-1]
                    else:
                        assert None not in cells
                        (r0, c0), (r1, c1) = row_col(cells[0]), row_col(cells[-1])
                        expected = {(0, 0): STILL, (0, -1): "left", (0, 1): "right", (-1, 0): "up", (1, 0): "down"}
                        assert q.answer == expected[(int(np.sign(r1 - r0)), int(np.sign(c1 - c0)))]


def test_the_rendered_frames_show_each_shape_where_the_answers_say():
    for clip in clips(12):
        for t in range(clip.num_frames):
            scene = clip.frame(t)
            pixels = np.asarray(render_scene(scene, 96))
            for o in scene.objects:
                x, y = object_center(o, 96)
                assert tuple(pixels[int(y), int(x)]) == COLORS[o.color], (clip.id, t, o)


def test_captions_say_what_every_shape_does():
    for clip in clips(60):
        caption = clip_caption(clip)
        assert caption[0].isupper() and caption.endswith(".")
        for o in clip.objects:
            assert f"{o.size} {o.color} {o.shape}" in caption
            if o.direction != STILL:
                assert f"moves {o.direction} from the {o.first_cell} to the {o.last_cell}" in caption


def test_generation_is_deterministic_split_and_balanced():
    config = ClipsConfig(n=400, seed=3)
    data = generate_clips(config)
    assert data == generate_clips(config) and data != generate_clips(ClipsConfig(n=400, seed=4))
    assert [len(data.split(s)) for s in SPLITS] == [320, 40, 40]
    train = {c.clip.signature for c in data.split("train")}
    assert not any(c.clip.signature in train for c in data.split("test")) or data.redraw_failures
    questions = [q for c in data.split("train") for q in c.short]
    types = Counter(q.question_type for q in questions)
    assert set(types) == set(CLIP_QUESTION_TYPES) and max(types.values()) - min(types.values()) <= 0.2 * max(
        types.values()), types
    directions = Counter(q.answer for q in questions if q.question_type == "direction")
    assert set(directions) == set(DIRECTIONS) | {STILL}
    assert min(directions.values()) >= 0.5 * max(directions.values()), directions
    baselines = data.majority_baselines()["train"]
    assert baselines["by_question_type"]["direction"]["accuracy"] < 0.35


@pytest.mark.parametrize("change, message", [({"num_frames": 1}, "num_frames"), ({"n": 2}, "at least 3"),
                                             ({"max_objects": 5}, "max_objects"), ({"image_size": 8}, "image_size")])
def test_bad_config_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        ClipsConfig(**change)


def test_cli_writes_clips_that_read_back(tmp_path, capsys):
    out = tmp_path / "shapes"
    args = ["data", "shapes", "--out", str(out), "--n", "3", "--clips", "10", "--frames", "3", "--image-size", "32",
            "--formats", "llava"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "clips of 3 frames" in printed and "clip_short" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    section = manifest["clips"]
    assert section["config"]["num_frames"] == 3 and section["counts"]["clips"] == {"train": 8, "val": 1, "test": 1}
    assert len(list((out / "clips").glob("*.png"))) == 30
    for split in SPLITS:
        for task in CLIP_TASKS:
            samples = read_llava_json(out / section["files"][f"{split}_{task}"], check_images=True)
            assert len(samples) == section["counts"][task][split]
            assert all(len(s.frames) == 3 and s.image is None for s in samples)
            assert all(s.turns[0].text.startswith("<image>\n") for s in samples)
    first = read_llava_json(out / "train_clip_short.json")[0]
    assert first.frames[0] == out / "clips" / "shapes_clip_000000_f0.png" and first.meta["question_type"]
    assert main(["data", "check", str(out / "train_clip_short.json")]) == 0
    assert "clips (by frames: {3:" in capsys.readouterr().out

    # the same seed gives the same bytes; regenerating without clips removes them
    again = tmp_path / "again"
    assert main([*args[:3], str(again), *args[4:]]) == 0
    assert files_of(out) == files_of(again)
    assert main(["data", "shapes", "--out", str(out), "--n", "3", "--image-size", "32", "--formats", "llava"]) == 0
    assert not (out / "clips").exists() and not (out / "train_clip_short.json").exists()
    assert "clips" not in json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("extra, message", [(["--clips", "5", "--frames", "1"], "num_frames"),
                                            (["--clips", "-1"], "--clips")])
def test_cli_refuses_bad_clip_options(tmp_path, capsys, extra, message):
    assert main(["data", "shapes", "--out", str(tmp_path / "x"), "--n", "3", *extra]) == 2
    assert message in capsys.readouterr().err


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
