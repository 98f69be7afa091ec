"""EVE on bad input: each case handled or refused with an error that names it.

Handled: images 1 px wide or tall, 1:20 and 20:1, smaller than one patch (each gives at least one grid cell);
grey, alpha, palette, transparent-colour and 16-bit images (converted by the loader's rules, in memory and from a
file alike; 16-bit scaled, not clipped to white); text-only samples in an EVE batch, in training with the PAL
(they add 0 to its loss) and in generation; a blank canvas (EVE's own text-only image) in the PAL.
Refused: a PAL without a teacher and a teacher without a PAL (before any model loads), a PAL whose injection
puts no image vectors in the LM's sequence, and unreadable image files (the file and the record named)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vlbridge.bridges.eve.pal import PALOptions, PatchAligningLayer, WithAlignment
from vlbridge.bridges.eve.pel import EVEPatchOptions, build_eve_patch
from vlbridge.data.images import load_image
from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import ConfigError, DataError
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.image_inputs import PixelImages
from vlbridge.recipe import load_recipe
from vlbridge.runs import build_seeded, image_loader, prompt_collator
from vlbridge.train.trainer import train

S, P, R, C, D = 112, 14, 2, 32, 16  # canvas, patch, pool, PEL width, LM width: at most 4 x 4 tokens
MEAN, STD = np.array(EVEPatchOptions().mean), np.array(EVEPatchOptions().std)
QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def connector():
    torch.manual_seed(0)
    return build_eve_patch(3, D, EVEPatchOptions(image_size=S, patch=P, pool=R, width=C))


def inside(canvas: torch.Tensor) -> np.ndarray:
    """(4, S, S) canvas -> (valid pixels, 3) RGB in 0..255, the normalisation undone."""
    rgb = canvas[:3].permute(1, 2, 0)[canvas[3] > 0].numpy()
    return (rgb * STD + MEAN) * 255


# --- sizes and aspect ratios: at least one cell, never an empty grid ------------------------------------------
@pytest.mark.parametrize("size, grid", [
    ((1, 300), (4, 1)),  # 1 px wide: the short side becomes one cell
    ((300, 1), (1, 4)),  # 1 px tall
    ((1, 1), (4, 4)),  # one pixel: square, enlarged to the canvas
    ((20, 400), (4, 1)),  # 1:20
    ((400, 20), (1, 4)),  # 20:1
    ((5, 7), (4, 3)),  # smaller than one 14-px patch: enlarged like any image (long side -> 112, 80 px -> 3 cells)
    ((13, 13), (4, 4)),
])
def test_any_size_gives_a_grid_of_at_least_one_cell(connector, size, grid):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    pixels = connector.preprocess([image])
    vectors, lengths = connector(pixels)
    h, w = grid
    assert connector.grid_shapes(pixels).tolist() == [[h, w]]
    assert lengths.tolist() == [1 + h * (w + 1)] == [connector.num_tokens(*size)]
    assert torch.isfinite(vectors).all() and vectors.abs().sum() > 0
    mask = pixels[0, 3]
    assert int(mask.sum()) == h * w * (P * R) ** 2  # the valid region is exactly the grid's cells


def test_the_paper_sized_canvas_also_keeps_a_1_px_sliver():
    torch.manual_seed(0)
    default = build_eve_patch(3, D, EVEPatchOptions())  # 224 px, cells of 28 px: 8 x 8 at most
    for size, grid in (((1, 500), [8, 1]), ((500, 1), [1, 8])):
        pixels = default.preprocess([Image.new("RGB", size, (90, 160, 30))])
        assert default.grid_shapes(pixels).tolist() == [grid]
        assert default(pixels)[1].tolist() == [1 + grid[0] * (grid[1] + 1)]


def test_an_image_smaller_than_a_patch_keeps_its_content(connector):
    # 2 x 2 pixels of four colours -> 112 x 112: each quadrant keeps its pixel's colour near its corner
    colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], dtype=np.uint8)
    canvas = connector.preprocess([Image.fromarray(colours)])[0]
    rgb = (canvas[:3].permute(1, 2, 0).numpy() * STD + MEAN) * 255
    for (y, x), colour in zip([(0, 0), (0, -1), (-1, 0), (-1, -1)], colours.reshape(4, 3)):
        np.testing.assert_allclose(rgb[y, x], colour, atol=1.0)


# --- modes: converted by the loader's rules, the same in memory and from a file -------------------------------
def sixteen_bit(value: int) -> Image.Image:
    return Image.fromarray(np.full((30, 40), value, dtype=np.uint16))  # mode I;16


def palette(transparent: bool) -> Image.Image:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 30, 60, 200] + [0] * 762)
    if transparent:
        image.info["transparency"] = 1
    return image


def with_transparent_colour(mode: str) -> Image.Image:
    image = Image.new(mode, (40, 30), 0 if mode == "L" else (0, 0, 0))
    image.info["transparency"] = 0 if mode == "L" else (0, 0, 0)  # PNG tRNS: black means transparent
    return image


MODES = {
    "grey L": (Image.new("L", (40, 30), 128), (128, 128, 128)),
    "RGBA opaque": (Image.new("RGBA", (40, 30), (200, 30, 10, 255)), (200, 30, 10)),
    "RGBA transparent": (Image.new("RGBA", (40, 30), (200, 30, 10, 0)), (255, 255, 255)),  # on white, not red
    "RGBA half": (Image.new("RGBA", (40, 30), (0, 0, 0, 128)), (127, 127, 127)),
    "LA opaque": (Image.new("LA", (40, 30), (60, 255)), (60, 60, 60)),
    "LA transparent": (Image.new("LA", (40, 30), (0, 0)), (255, 255, 255)),  # not black
    "P": (palette(False), (30, 60, 200)),
    "P transparent": (palette(True), (255, 255, 255)),
    "L transparent colour": (with_transparent_colour("L"), (255, 255, 255)),
    "RGB transparent colour": (with_transparent_colour("RGB"), (255, 255, 255)),
    "I;16 mid grey": (sixteen_bit(32768), (128, 128, 128)),  # Pillow's own convert("RGB") clips it to 255
    "I;16 dark": (sixteen_bit(2570), (10, 10, 10)),
    "I;16 white": (sixteen_bit(65535), (255, 255, 255)),
}


@pytest.mark.parametrize("name", list(MODES))
def test_modes_are_converted_in_memory_and_from_a_file_alike(connector, tmp_path, name):
    image, expected = MODES[name]
    in_memory = connector.preprocess([image])
    np.testing.assert_allclose(inside(in_memory[0]), np.broadcast_to(expected, (112 * 84, 3)), atol=0.6)
    path = tmp_path / "image.png"
    image.save(path, **({"transparency": image.info["transparency"]} if "transparency" in image.info else {}))
    from_file = connector.preprocess([load_image(path, record="r1")])
    torch.testing.assert_close(from_file, in_memory, rtol=0, atol=1e-5)
    assert connector.grid_shapes(from_file).tolist() == [[3, 4]]  # 40 x 30 -> 112 x 84: 3 x 4 cells


def test_a_16_bit_gradient_keeps_its_range_and_order(connector, tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 56).astype(np.uint16), (56, 1))  # 0 .. 65535 left to right
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    canvas = connector.preprocess([load_image(tmp_path / "ramp.png")])[0]
    row = (canvas[0, 50].numpy() * STD[0] + MEAN[0]) * 255  # one row, red channel = grey
    assert row[0] < 3 and row[-1] > 252 and 120 < row[56] < 136  # dark to white, mid grey in the middle
    assert (np.diff(row) > -1.5).all()  # no wrap-around or clipping plateau at white


# --- unreadable files: refused, naming the file and the record ----------------------------------------------
@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"\x89PNG\r\n\x1a\nnot really", "cannot read image")])
def test_an_unreadable_image_in_an_eve_batch_names_its_file_and_record(connector, tmp_path, content, message):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (20, 20)).save(good)
    bad.write_bytes(content)
    samples = [Sample(f"s{i}", (Turn("user", "<image>\nWhat?"), Turn("assistant", "x")), image=path,
                      source="data.json") for i, path in enumerate([good, bad])]
    where = re.escape(f"file data.json, record 's1', field 'image': image {bad}: ")
    with pytest.raises(DataError, match=f"{where}.*{message}"):
        PixelImages(connector.preprocess)(samples)


# --- text-only samples and blank canvases ------------------------------------------------------------------
def test_a_blank_canvas_adds_nothing_to_the_pal_loss():
    torch.manual_seed(0)
    layer = PatchAligningLayer(D, 8, 6, PALOptions(heads=2))
    states = tuple(torch.randn(2, 6, D, requires_grad=True) for _ in range(7))
    positions = torch.zeros(2, 6, dtype=torch.bool)
    positions[1, :5] = True  # row 0: a blank canvas (no vectors); row 1: 1 + 2 x (1 + 1) = 5 vectors
    cells = torch.tensor([[False] * 5, [False, True, False, True, False]])
    teacher = torch.randn(2, 4, 8)
    both = layer.loss(states, positions, torch.tensor([0, 1]), cells, torch.tensor([[0, 0], [2, 1]]), teacher)
    alone = layer.loss(states, positions, torch.tensor([1]), cells[1:], torch.tensor([[2, 1]]), teacher[1:])
    torch.testing.assert_close(both, alone)  # not averaged in either
    only_blank = layer.loss(states, positions, torch.tensor([0]), cells[:1], torch.tensor([[0, 0]]), teacher[:1])
    assert only_blank.item() == 0.0
    only_blank.backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.fixture
def eve(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir, monkeypatch):
    """recipe(train JSON, *overrides): EVE on the tiny models, PAL on (as tests/bridges/eve/test_eve_training.py)."""
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    return lambda data, *extra: load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", "model.vision_encoder=none", "model.bridge=null",
        "model.connector=eve_patch", "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}",
        "model.injection=input_space", f"model.teacher_encoder={tiny_dinov2_dir}", "model.teacher_layer=-1",
        "model.aligner=pal", "model.aligner_options={every: 1, heads: 2}",
        f"data.train={data}", f"data.val={data}", f"data.image_root={data.parent}", "train.steps=2",
        "train.batch_size=4", "train.eval_samples=0", "train.eval_every=0", "train.lr=1e-3",
        f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=2", *extra])


ODD_IMAGES = {  # file -> image: every size and mode above, in one EVE data set
    "sliver.png": Image.new("RGB", (1, 90), (200, 40, 40)),
    "tall.png": Image.new("RGB", (6, 120), (20, 200, 40)),  # 1:20
    "wide.png": Image.new("RGB", (120, 6), (20, 40, 200)),  # 20:1
    "dot.png": Image.new("RGB", (3, 3), (250, 250, 0)),  # smaller than a patch
    "grey.png": Image.new("L", (40, 30), 128),
    "rgba.png": Image.new("RGBA", (40, 30), (200, 30, 10, 100)),
    "la.png": Image.new("LA", (40, 30), (60, 100)),
    "palette.png": palette(False),
    "deep.png": sixteen_bit(40000),
}


def odd_data(folder, text_only: int = 2):
    """A caption file over ODD_IMAGES plus ``text_only`` records without an image, interleaved."""
    records = []
    for i, (name, image) in enumerate(ODD_IMAGES.items()):
        image.save(folder / name)
        records.append({"id": f"img{i}", "image": name,
                        "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                          {"from": "gpt", "value": "a coloured image"}]})
        if i < text_only:
            records.append({"id": f"text{i}", "conversations": [{"from": "human", "value": "Say a colour."},
                                                                {"from": "gpt", "value": "red"}]})
    path = folder / "odd.json"
    path.write_text(json.dumps(records))
    return path


def test_training_with_the_pal_on_odd_images_and_text_only_samples(eve, tmp_path):
    data = odd_data(tmp_path)
    result = train(eve(data, "train.steps=3", "train.eval_samples=4"), **QUIET)  # 11 samples: mixed batches of 4
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["alignment"]) and np.isfinite(h["grad_norm"])
               for h in result["history"])
    assert all(h["alignment"] > 0 for h in result["history"])  # every batch of 4 holds an image here


def test_text_only_rows_add_zero_to_the_pal_loss_and_a_text_only_batch_does_not_crash(eve, tmp_path):
    data = odd_data(tmp_path)
    recipe = eve(data)
    built = build_seeded(recipe, training=True)
    images = image_loader(built, recipe)
    samples = {s.id: s for s in read_llava_json(data, image_root=tmp_path)}
    collate = prompt_collator(built, recipe, images, with_answer=True)
    aligned = WithAlignment(built.model)
    image_rows = [samples["img0"], samples["img2"]]
    mixed = aligned(collate([samples["text0"], image_rows[0], samples["text1"], image_rows[1]]))
    alone = aligned(collate(image_rows))
    # the PAL's per-batch mean enters multiplied by the batch's answer tokens: divide them out
    torch.testing.assert_close(mixed.alignment_sum / collate([samples["text0"], *image_rows, samples["text1"]])
                               .num_supervised, alone.alignment_sum / collate(image_rows).num_supervised)
    text = aligned(collate([samples["text0"], samples["text1"]]))
    assert text.alignment_sum.item() == 0.0 and torch.isfinite(text.loss_sum)
    text.loss_sum.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in built.model.aligner.parameters())


def test_generation_with_text_only_prompts_in_an_eve_batch(eve, tmp_path):
    data = odd_data(tmp_path)
    recipe = eve(data)
    built = build_seeded(recipe)  # inference: no teacher, no PAL
    assert built.model.teacher is None and built.model.aligner is None
    samples = {s.id: s for s in read_llava_json(data, image_root=tmp_path)}
    collate = prompt_collator(built)
    settings = GenerationSettings(max_new_tokens=3, batch_size=4)
    batch = [samples[i] for i in ("text0", "img0", "text1", "img2")]  # text, 1 x 90 px, text, 120 x 6 px
    together = generate_answers(built.model, built.tokenizer, collate, batch, settings)
    alone = [generate_answers(built.model, built.tokenizer, collate, [s], settings)[0] for s in batch]
    assert together == alone  # each row as if generated on its own
    assert len(generate_answers(built.model, built.tokenizer, collate, [samples["text0"], samples["text1"]],
                                settings)) == 2


# --- recipes: the PAL and its teacher come together, and the PAL needs the image in the sequence ---------------
@pytest.mark.parametrize("overrides, message", [
    (["model.teacher_encoder=null"], "model.teacher_encoder and model.aligner go together"),  # PAL, no teacher
    (["model.aligner=null", "model.aligner_options={}"], "model.teacher_encoder and model.aligner go together"),
    (["model.aligner=null", "model.teacher_encoder=null"], "model.aligner_options are set but model.aligner is null"),
])
def test_a_pal_without_a_teacher_or_a_teacher_without_a_pal_is_refused_before_any_model_loads(
        eve, tmp_path, monkeypatch, overrides, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("vlbridge.weights.load_language_model", no_model)
    with pytest.raises(ConfigError, match=message):
        build_seeded(eve(odd_data(tmp_path), *overrides), training=True)


@pytest.mark.parametrize("injection", ["memory_space", "cross_attention"])
def test_a_pal_with_an_injection_that_keeps_the_image_out_of_the_sequence_is_refused(eve, tmp_path, injection):
    recipe = eve(odd_data(tmp_path), f"model.injection={injection}")
    with pytest.raises(ConfigError, match=f"injection '{injection}' puts none there: use model.injection=input_space"):
        build_seeded(recipe, training=True)  # when the model is built, before any training
