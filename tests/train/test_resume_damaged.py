"""--resume when the latest checkpoint was damaged after it was written: the run continues from the newest
checkpoint that reads back whole, says so, and still ends bit for bit where the uninterrupted run ended; with
no such checkpoint, an error naming each damaged file."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlbridge.errors import DataError
from vlbridge.recipe import load_recipe
from vlbridge.train.trainer import train


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    """A 6-step MemVP + LoRA run (dropout: the random state matters) with checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("reference") / "run"
    recipe = load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1",
        "model.bridge=memvp", "model.bridge_options={num_slots: 20}", "model.lora_rank=2",
        f"data.train={shapes_dir / 'train_short.json'}", f"data.val={shapes_dir / 'val_short.json'}",
        f"data.image_root={shapes_dir}", "data.cache_features=false", "train.steps=6", "train.batch_size=4",
        "train.lr=5e-3", "train.warmup_steps=1", "train.eval_every=0", "train.eval_samples=2", "train.save_every=2",
        "train.keep_checkpoints=0", f"train.output_dir={out}", "eval.max_new_tokens=2"])
    threads = torch.get_num_threads()
    try:
        result = train(recipe, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return recipe, out, [h["loss"] for h in result["history"]], load_file(out / "final" / "trained.safetensors")


@pytest.fixture
def stopped(finished, tmp_path):
    """A copy of the run as if it had stopped after its checkpoint at step 4."""
    recipe, out, losses, weights = finished
    run = shutil.copytree(out, tmp_path / "run")
    shutil.rmtree(run / "final")
    return recipe, run, losses, weights


def truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def not_json(path):
    path.write_text(path.read_text()[:40])


def with_nan(path):
    state = load_file(path)
    next(iter(state.values())).view(-1)[0] = float("nan")
    save_file(state, path)


DAMAGES = {  # file of checkpoint-4, damage, what the message says
    "trained.safetensors truncated": ("trained.safetensors", truncate, "is not a readable safetensors file"),
    "training_state.json not JSON": ("training_state.json", not_json, "cannot be read as JSON"),
    "training_state.safetensors truncated": ("training_state.safetensors", truncate, "not a readable safetensors"),
    "rng-0.json not JSON": ("rng-0.json", not_json, "cannot be read as JSON"),
    "rng-0.json of the wrong structure": ("rng-0.json", lambda p: p.write_text('{"python": [3, [1, 2], null], '
                                                                                '"numpy": ["MT19937"]}'),
                                          "the Python or NumPy generator state is missing or malformed"),
    "rng-0.safetensors of another generator": ("rng-0.safetensors",
                                               lambda p: save_file({"torch": torch.zeros(7, dtype=torch.uint8)}, p),
                                               "the torch generator state is missing or malformed"),
    "trained tensor NaN": ("trained.safetensors", with_nan, "holds 1 NaN or infinite value(s)"),
    "meta.json deleted": ("meta.json", lambda p: p.unlink(), "meta.json is missing"),
    "training_state.json without a field": ("training_state.json", lambda p: p.write_text('{"world_size": 1}'),
                                            "field or tensor 'step' is missing or malformed"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_latest_checkpoint_is_skipped_for_the_previous_one(stopped, damage):
    recipe, run, losses, weights = stopped
    name, spoil, says = DAMAGES[damage]
    spoil(run / "checkpoint-4" / name)
    messages = []
    threads = torch.get_num_threads()
    try:
        resumed = train(recipe, resume=run, log=messages.append)
    finally:
        torch.set_num_threads(threads)
    said = "\n".join(messages)
    assert f"cannot resume from checkpoint-4: file {run / 'checkpoint-4'}" in said and says in said
    assert "resuming from checkpoint-2, the newest complete checkpoint, instead of checkpoint-4" in said
    assert "removing the damaged checkpoint-4/ (the resumed run writes them again)" in said
    assert f"resumed {run} from checkpoint-2 at step 2" in said
    assert [h["loss"] for h in resumed["history"]] == losses  # the same run, bit for bit
    final = load_file(run / "final" / "trained.safetensors")
    assert set(final) == set(weights) and all(torch.equal(final[k], weights[k]) for k in final)
    assert load_file(run / "checkpoint-4" / "trained.safetensors").keys() == weights.keys()  # written again
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5, 6]


def test_resume_with_every_checkpoint_damaged_is_an_error_naming_each(stopped):
    recipe, run, _, _ = stopped
    truncate(run / "checkpoint-4" / "trained.safetensors")
    not_json(run / "checkpoint-2" / "training_state.json")
    with pytest.raises(DataError) as error:
        train(recipe, resume=run, log=lambda *_: None)
    message = str(error.value)
    assert message.startswith(f"--resume {run}: no checkpoint of the run can be resumed from, every one is damaged")
    assert f"file {run / 'checkpoint-4' / 'trained.safetensors'}: is not a readable safetensors file" in message
    assert f"file {run / 'checkpoint-2' / 'training_state.json'}: cannot be read as JSON" in message
    assert message.endswith("start the run again with --overwrite")
    assert (run / "checkpoint-4").is_dir() and (run / "checkpoint-2").is_dir()  # nothing removed


def test_resume_of_a_finished_run_whose_final_meta_is_not_json_names_the_file(finished, tmp_path):
    recipe, out, _, _ = finished
    run = shutil.copytree(out, tmp_path / "run")
    (run / "final" / "meta.json").write_text("{")
    with pytest.raises(DataError, match=rf"^file {run / 'final' / 'meta.json'}: cannot be read as JSON"):
        train(recipe, resume=run, log=lambda *_: None)


def test_resume_keeps_only_the_newest_checkpoints_even_when_killed_before_pruning(stopped):
    """A kill between renaming a new checkpoint into place and removing the oldest leaves one too many; the resumed
    run prunes it (here: the run kept every checkpoint, and is resumed with train.keep_checkpoints=1)."""
    recipe, run, _, _ = stopped
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    keep_one = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, keep_checkpoints=1))
    threads = torch.get_num_threads()
    try:
        train(keep_one, resume=run, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4"]


def test_resume_removes_what_interrupted_saves_left(stopped):
    recipe, run, _, _ = stopped
    for name in (".checkpoint-6.tmp", ".final.k2x9_a", ".checkpoint-4.old"):  # kills during saves leave these
        (run / name).mkdir()
        (run / name / "trained.safetensors").write_bytes(b"torn")
    threads = torch.get_num_threads()
    try:
        train(recipe, resume=run, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert not list(run.glob(".*"))
