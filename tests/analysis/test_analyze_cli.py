"""`vlbridge analyze locate|distort` on a saved run of a tiny MemVP model."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlbridge.build import build_model
from vlbridge.train.checkpoint import save_checkpoint
from vlbridge.recipe import ModelConfig, Recipe
from vlbridge_cli.main import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama_dir, tiny_dinov2_dir):
    recipe = Recipe(model=ModelConfig(language_model=str(tiny_llama_dir), vision_encoder=str(tiny_dinov2_dir),
                                      bridge="memvp", bridge_options={"num_slots": 20, "lam": 1.0}))
    built = build_model(recipe.model)
    torch.manual_seed(0)
    with torch.no_grad():  # a "trained" memory: p_v is no longer zero
        for p in built.model.bridge.parameters():
            p.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp("runs") / "memvp"
    save_checkpoint(built.model, recipe, folder)
    image = folder.parent / "image.png"
    Image.new("RGB", (56, 56), (30, 200, 90)).save(image)
    return folder, image


def test_locate_writes_a_heat_map(run_dir, tmp_path, capsys):
    folder, image = run_dir
    out = tmp_path / "heat.png"
    code = main(["analyze", "locate", "--run", str(folder), "--image", str(image), "--prompt",
                 "What color is the square?", "--tokens", "color", "square", "--out", str(out)])
    assert code == 0
    assert "4x4 grid: color square" in capsys.readouterr().out
    with Image.open(out) as png:
        assert png.format == "PNG"


def test_unknown_token_lists_the_prompt_tokens(run_dir, capsys):
    folder, image = run_dir
    code = main(["analyze", "locate", "--run", str(folder), "--image", str(image), "--prompt", "What color?",
                 "--tokens", "shape"])
    assert code == 2
    err = capsys.readouterr().err
    assert "['shape'] are not tokens of the prompt" in err and "'color'" in err


def test_distort_reports_both_answers(run_dir, capsys):
    folder, image = run_dir
    code = main(["analyze", "distort", "--run", str(folder), "--image", str(image), "--prompt",
                 "What color is the square?", "--top-k", "3", "--max-new-tokens", "4"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("zeroed visual entries (row,col of the 4x4 grid): (")
    assert out.count("(") == 3 + 1 and "original : " in out and "distorted: " in out


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_analyses_on_an_encoder_decoder_lm(kind, tmp_path, tiny_seq2seq_dirs, tiny_dinov2_dir, capsys):
    options = {"num_slots": 20, "lam": 1.0, "memory_in": "both"}
    recipe = Recipe(model=ModelConfig(language_model=str(tiny_seq2seq_dirs[kind]), vision_encoder=str(tiny_dinov2_dir),
                                      bridge="memvp", bridge_options=options))
    built = build_model(recipe.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in built.model.bridge.parameters():
            p.normal_(0, 0.5)
    save_checkpoint(built.model, recipe, tmp_path / "run")
    image = tmp_path / "image.png"
    Image.new("RGB", (56, 56), (30, 200, 90)).save(image)
    common = ["--run", str(tmp_path / "run"), "--image", str(image), "--prompt", "What color is the square?"]
    assert main(["analyze", "locate", *common, "--out", str(tmp_path / "heat.png")]) == 0
    assert "4x4 grid" in capsys.readouterr().out and (tmp_path / "heat.png").stat().st_size > 0
    assert main(["analyze", "distort", *common, "--top-k", "2", "--max-new-tokens", "3"]) == 0
    assert "original : " in capsys.readouterr().out
