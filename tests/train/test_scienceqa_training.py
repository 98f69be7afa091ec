"""MemVP on ScienceQA-layout data through the one trainer: a Shapes export trains end to end with periodic
multiple-choice evaluation, ``vlbridge eval --task multiple-choice`` on the run asks and scores the same way,
and the shipped MemVP recipes load with the right keys and paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
from vlbridge.data.shapes_export import export_shapes
from vlbridge.datasets.training_sets import check_data_format
from vlbridge.errors import ConfigError
from vlbridge.eval.scoring import score_predictions
from vlbridge.datasets.scienceqa import read_scienceqa
from vlbridge.recipe import load_recipe
from vlbridge.train.trainer import train
from vlbridge_cli.main import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """12 scenes at 56 px: 20 training problems, 2 validation and 2 test problems in a ScienceQA folder."""
    out = tmp_path_factory.mktemp("shapes_sqa_train")
    export_shapes(generate_shapes(ShapesConfig(n=12, seed=5, image_size=56)), out, ["scienceqa"])
    return out


def tiny_memvp(root, out, llm, vision, *extra):
    return load_recipe(None, [
        f"model.language_model={llm}", f"model.vision_encoder={vision}", "model.vision_layer=-1",
        "model.bridge=memvp", "model.bridge_options={num_slots: 20, hidden: 16}", "model.vision_adapter_dim=4",
        "data.format=scienceqa", f"data.train={root}", f"data.val={root}", "data.val_split=val",
        "train.trainable=[bridge, vision_adapters]", "train.steps=4", "train.batch_size=4", "train.lr=5e-3",
        "train.betas=[0.9, 0.95]", "train.weight_decay=0.02", "train.warmup_steps=1", "train.eval_every=2",
        "train.eval_samples=0", f"train.output_dir={out}", "eval.max_new_tokens=8", "eval.batch_size=2", *extra])


def test_memvp_trains_on_a_scienceqa_folder_and_evaluates_multiple_choice(export, tmp_path, tiny_llama_dir,
                                                                         tiny_dinov2_dir):
    root, run = export / "scienceqa", tmp_path / "run"
    val = read_scienceqa(root, "val")
    result = train(tiny_memvp(root, run, tiny_llama_dir, tiny_dinov2_dir), log=lambda *_: None)
    losses = torch.tensor([h["loss"] for h in result["history"]])
    assert len(losses) == 4 and torch.isfinite(losses).all()
    trained = result["built"].model.trainable_state_dict()
    assert any(n.startswith("vision_encoder.") and ".adapter" in n for n in trained)  # MemVP's ViT adapters
    assert any(n.startswith("bridge.") for n in trained)
    # periodic evaluation at steps 2 and 4 reports multiple-choice accuracy on every validation problem
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scored = [line for line in lines if "val_accuracy" in line]
    assert [line["step"] for line in scored] == [2, 4]
    assert all(line["val_count"] == len(val) == 2 and "val_unparsed" in line for line in scored)
    # ... and the reported numbers are the multiple-choice scores of the final predictions
    predictions = json.loads((run / "predictions.json").read_text())
    assert [p["id"] for p in predictions] == [s.id for s in val]
    final = score_predictions(val, [p["prediction"] for p in predictions])
    assert {k: scored[-1][f"val_{k}"] for k in final} == final == result["val"]

    # vlbridge eval on the run: the same prompts and greedy answers, scored with the ScienceQA breakdown
    out = tmp_path / "eval.json"
    assert main(["eval", "--run", str(run), "--task", "multiple-choice", "--scienceqa", str(root), "--split", "val",
                 "--max-new-tokens", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [p["prediction"] for p in report["predictions"]] == [p["prediction"] for p in predictions]
    assert report["scores"]["accuracy"]["average"] == final["accuracy"]
    assert report["scores"]["count"]["average"] == 2


def test_unknown_format_and_split_fail_before_any_model_is_built(export, tmp_path):
    # the default (packaged) model is never loaded: the data section is checked first
    with pytest.raises(ConfigError, match=r"unknown data.format 'sciencqa'; valid: \['llava', 'scienceqa'\]"):
        train(load_recipe(None, ["data.format=sciencqa", f"train.output_dir={tmp_path / 'a'}"]), log=lambda *_: None)


def test_missing_split_is_named(export, tmp_path, tiny_llama_dir, tiny_dinov2_dir):
    recipe = tiny_memvp(export / "scienceqa", tmp_path / "run", tiny_llama_dir, tiny_dinov2_dir,
                        "data.train_split=minitrain")
    with pytest.raises(ConfigError, match=r"data.train_split='minitrain' is not a split of .*pid_splits.json"):
        train(recipe, log=lambda *_: None)


def header_commands(path: Path) -> str:
    return "\n".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))


def test_memvp_scienceqa_recipe(export):
    path = RECIPES / "memvp" / "scienceqa.yaml"
    recipe = load_recipe(path)
    model, data, cfg = recipe.model, recipe.data, recipe.train
    check_data_format(data)
    assert (model.bridge, model.language_model, model.vision_encoder) == ("memvp", "smollm2-135m", "dinov2-small")
    assert model.vision_adapter_dim == 12 and model.lora_rank == 0 and cfg.trainable == ["bridge", "vision_adapters"]
    assert (data.format, data.train, data.val) == ("scienceqa", "data/shapes/scienceqa", "data/shapes/scienceqa")
    assert (data.train_split, data.val_split, data.scienceqa_captions) == ("train", "val", False)
    # the Shapes exporter writes exactly this layout under data/shapes (relative to its --out)
    manifest = json.loads((export / "manifest.json").read_text())["files"]["scienceqa"]
    assert str(Path("data/shapes") / Path(manifest["problems"]).parent) == data.train
    # MemVP's ScienceQA optimiser, lr by their rule blr * batch / 256 with blr 9e-3
    assert cfg.betas == [0.9, 0.95] and cfg.weight_decay == 0.02 and cfg.clip_grad == 0
    assert cfg.lr == pytest.approx(9e-3 * cfg.batch_size * cfg.grad_accum / 256)
    assert cfg.warmup_steps * 10 == cfg.steps and cfg.min_lr_ratio == 0.0
    # the header's commands make this data, train into output_dir and evaluate that run on the test split
    header = header_commands(path)
    assert "vlbridge data shapes --out data/shapes" in header
    assert f"vlbridge train {path.relative_to(RECIPES.parent)}" in header
    assert (f"vlbridge eval --run {cfg.output_dir} --task multiple-choice --scienceqa {data.train} --split test"
            in header)


def test_memvp_shapes_short_recipe():
    path = RECIPES / "memvp" / "shapes_short.yaml"
    recipe = load_recipe(path)
    llava = load_recipe(RECIPES / "llava_shapes.yaml")
    check_data_format(recipe.data)
    assert recipe.model.bridge == "memvp" and recipe.data.format == "llava"
    # the same data and budget as the LLaVA recipe, in its own run folder
    assert recipe.data == llava.data
    assert (recipe.train.steps, recipe.train.batch_size) == (llava.train.steps, llava.train.batch_size)
    assert recipe.train.output_dir != llava.train.output_dir
    header = header_commands(path)
    assert f"vlbridge train {path.relative_to(RECIPES.parent)}" in header
    assert re.search(rf"vlbridge eval --run {recipe.train.output_dir} --data data/shapes/test_short.json", header)
