"""The browser demo without a browser: runs as served, their answers and heat maps, and the page's replies to
good and bad input (the same functions the page calls)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from vlbridge.ask import ask
from vlbridge.errors import ConfigError
from vlbridge.eval.generate_answers import GenerationSettings
from vlbridge.serve.app import respond
from vlbridge.serve.served_run import answer, load_served_runs

SETTINGS = GenerationSettings(max_new_tokens=6, batch_size=1)


@pytest.fixture(scope="module")
def runs(serve_runs):
    return load_served_runs([serve_runs["llava"], serve_runs["memvp"]])


def test_runs_are_named_after_their_folders_and_only_memvp_locates(runs, serve_runs, tmp_path):
    assert [(r.name, r.pair, r.locates) for r in runs] == [("llava", "mlp -> input_space", False),
                                                          ("memvp", "mlp -> memory_space", True)]
    copy = shutil.copytree(serve_runs["llava"], tmp_path / "other" / "llava")
    twins = load_served_runs([serve_runs["llava"], copy])
    assert [r.name for r in twins] == [str(serve_runs["llava"]), str(copy)]  # same name: told apart by path


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path / 'empty'} is not a run or checkpoint folder"):
        load_served_runs([tmp_path / "empty"])


def test_answers_are_what_ask_gives_and_memvp_draws_a_heat_map(runs, photo, tmp_path):
    image = Image.open(photo).convert("RGB")
    for run in runs:
        result = answer(run, photo, image, "What color is the corner?", SETTINGS, tmp_path / f"{run.name}.png")
        assert result.text == ask(run.built, photo, "What color is the corner?", SETTINGS) and result.text
        assert result.seconds > 0
        if run.locates:
            with Image.open(result.heat_map) as png:
                assert png.format == "PNG"
        else:
            assert result.heat_map is None and not (tmp_path / f"{run.name}.png").exists()


def test_heat_map_of_chosen_words(runs, photo, tmp_path):
    image = Image.open(photo).convert("RGB")
    one = answer(runs[1], photo, image, "What color is the corner?", SETTINGS, tmp_path / "all.png")
    two = answer(runs[1], photo, image, "What color is the corner?", SETTINGS, tmp_path / "words.png",
                 ["color", "corner"])
    with Image.open(one.heat_map) as a, Image.open(two.heat_map) as b:
        assert b.width > 2 * a.width  # a panel per word and their mean, beside one panel for the question


def _big_image(path):
    Image.new("1", (10_000, 10_000), 1).save(path)  # 1 bit per pixel: a small file claiming 100 megapixels
    return path


@pytest.mark.parametrize("image, question, words, message", [
    (None, "What is it?", "", "upload an image or pick an example first"),
    ("photo", "   ", "", "type a question about the image"),
    ("text", "What is it?", "", "file fake.png: cannot read image (UnidentifiedImageError"),
    ("big", "What is it?", "", "image is 10000x10000 = 100000000 pixels, more than max_pixels"),
    ("photo", "What color is it?", "shape", "words ['shape'] are not tokens of the prompt"),
])
def test_bad_input_gets_a_message_and_no_answers(runs, photo, tmp_path, image, question, words, message):
    paths = {None: None, "photo": photo, "text": tmp_path / "fake.png", "big": tmp_path / "big.png"}
    (tmp_path / "fake.png").write_text("not an image")
    if image == "big":
        _big_image(paths["big"])
    reply = respond(runs, paths[image] and str(paths[image]), question, words, SETTINGS, tmp_path)
    assert reply.status.startswith("**Error:** ") and message in reply.status
    assert str(tmp_path) not in reply.status  # the upload's temporary folder is left out
    assert reply.answers == (None, None)


def test_a_good_question_is_answered_by_every_run(runs, photo, tmp_path):
    reply = respond(runs, str(photo), " What color is it? ", "", SETTINGS, tmp_path)
    assert reply.status == "Answered: *What color is it?*"
    assert [a.text for a in reply.answers] == [ask(r.built, photo, "What color is it?", SETTINGS) for r in runs]
    assert reply.answers[0].heat_map is None and reply.answers[1].heat_map.parent == tmp_path
