"""Numerical guards and bad records during training: stop or skip with a message naming step and batch;
skipped records counted and listed at the end, never silently."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from vlbridge.build import build_model
from vlbridge.errors import ConfigError, DataError
from vlbridge.train.guards import NonFiniteError
from vlbridge.train.trainer import train


def poisoned(recipe, bad_call: int):
    """The recipe's model whose ``bad_call``-th forward pass returns a NaN loss; and the ids it saw."""
    built = build_model(recipe.model)
    calls: list[list[str]] = []

    def hook(module, args, output):
        calls.append(list(args[0].sample_ids))
        if len(calls) == bad_call:
            return dataclasses.replace(output, loss_sum=output.loss_sum * float("nan"))
        return output

    built.model.register_forward_hook(hook)
    return built, calls


def test_nonfinite_loss_stops_the_run_naming_step_and_batch(make_recipe):
    recipe = make_recipe("train.steps=3")
    built, calls = poisoned(recipe, bad_call=2)
    with pytest.raises(NonFiniteError) as error:
        train(recipe, built=built, log=lambda *_: None)
    message = str(error.value)
    assert message.startswith("step 2: non-finite loss (loss nan")
    assert f"micro-batch 1 on process 0 has loss nan; samples {calls[1]}" in message
    assert "train.on_nonfinite=skip" in message
    assert len(calls) == 2  # nothing ran after the bad step


def test_nonfinite_loss_skips_only_that_update_when_asked(make_recipe):
    recipe = make_recipe("train.steps=3", "train.grad_accum=2", "train.on_nonfinite=skip")
    built, calls = poisoned(recipe, bad_call=4)  # step 2, its second micro-batch
    updates = []
    handle = register_optimizer_step_post_hook(lambda *_: updates.append(1))
    messages = []
    try:
        result = train(recipe, built=built, log=messages.append)
    finally:
        handle.remove()
    history = result["history"]
    assert len(history) == 3 and len(updates) == 2
    assert history[1].get("update_skipped") and torch.isnan(torch.tensor(history[1]["loss"]))
    assert not any(h.get("update_skipped") for h in (history[0], history[2]))
    assert all(torch.isfinite(p).all() for p in built.model.trainable_parameters().values())
    skipped = [m for m in messages if m.startswith("step 2: non-finite loss")]
    assert len(skipped) == 1 and f"micro-batch 2 on process 0 has loss nan; samples {calls[3]}" in skipped[0]
    assert "update was skipped" in skipped[0]
    assert history[2]["lr"] < history[1]["lr"] < history[0]["lr"]  # the schedule went on


def test_unknown_nonfinite_policy_is_rejected(make_recipe):
    with pytest.raises(ConfigError, match=r"train.on_nonfinite='ignore'; valid: \['stop', 'skip'\]"):
        train(make_recipe("train.on_nonfinite=ignore"), log=lambda *_: None)


@pytest.fixture
def hostile_shapes(tmp_path, shapes_dir):
    """22 Shapes records and 4 bad ones of 4 kinds; 2 are left out on reading, 24 remain (6 batches of 4)."""
    records = json.loads((shapes_dir / "train_short.json").read_text())[:22]
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "images", images)
    broken = images / "broken.png"
    broken.write_bytes((images / records[0]["image"].split("/", 1)[1]).read_bytes()[:100])  # truncated
    question = records[0]["conversations"][0]["value"]
    records += [
        {"id": "truncated-image", "image": "images/broken.png", "conversations": records[1]["conversations"]},
        {"id": "too-long", "image": records[2]["image"], "conversations": [
            {"from": "human", "value": question + " and" * 300}, {"from": "gpt", "value": "yes"}]},
        {"id": "number-answer", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": 4}]},
        {"conversations": [{"from": "human", "value": "no id"}, {"from": "gpt", "value": "none"}]},
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    val = records[:3] + [records[22]]  # evaluation meets the truncated image too
    (tmp_path / "val.json").write_text(json.dumps(val))
    return tmp_path


@pytest.mark.parametrize("cache_features", [False, True])
def test_bad_records_are_skipped_and_reported_at_the_end(hostile_shapes, make_recipe, monkeypatch, cache_features):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(hostile_shapes / "cache"))
    data = (f"data.train={hostile_shapes / 'train.json'}", f"data.val={hostile_shapes / 'val.json'}",
            f"data.image_root={hostile_shapes}", "data.max_length=200", f"data.cache_features={cache_features}")
    recipe = make_recipe(*data, "data.on_bad_record=skip", "train.steps=6", "train.eval_samples=0")
    messages = []
    result = train(recipe, log=messages.append)  # one epoch: every record is met once
    train_file, val_file = str(hostile_shapes / "train.json"), str(hostile_shapes / "val.json")
    by_place = {(e["file"], e["position"]): e for e in result["skipped_records"]}
    assert len(by_place) == len(result["skipped_records"])
    # the truncated image is both in train (position 22) and val (position 3): two records, both left out
    assert {place: e["id"] for place, e in by_place.items()} == {
        (train_file, 22): "truncated-image", (val_file, 3): "truncated-image", (train_file, 23): "too-long",
        (train_file, 24): "number-answer", (train_file, 25): None}
    assert by_place[train_file, 24]["stage"] == "read train" and by_place[train_file, 25]["stage"] == "read train"
    assert "cannot read image" in by_place[train_file, 22]["reason"]
    assert "cannot read image" in by_place[val_file, 3]["reason"]
    assert "longer than max_length=200" in by_place[train_file, 23]["reason"]
    assert by_place[train_file, 23]["stage"].startswith("step ")
    saved = json.loads((hostile_shapes / "run" / "skipped_records.json").read_text())
    assert saved == result["skipped_records"]
    assert f"skipped {len(by_place)} bad record(s) (data.on_bad_record=skip)" in messages[-1]
    assert f"{val_file} position 3, id 'truncated-image'" in messages[-1]
    assert json.loads((hostile_shapes / "run" / "predictions.json").read_text())[-1]["id"] != "truncated-image"


def test_bad_records_stop_the_run_by_default_naming_the_record(hostile_shapes, make_recipe):
    data = (f"data.train={hostile_shapes / 'train.json'}", f"data.val={hostile_shapes / 'val.json'}",
            f"data.image_root={hostile_shapes}")
    with pytest.raises(DataError, match=r"record 'number-answer', field 'conversations\[1\].value'"):
        train(make_recipe(*data), log=lambda *_: None)
