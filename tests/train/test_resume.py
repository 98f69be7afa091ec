"""Exact resume: a run killed with SIGKILL and resumed logs the same losses, bit for bit, as one that never
stopped; checkpoints are atomic, only the last K are kept, and nothing is unpickled."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vlbridge.bridges.registry import PRESETS
from vlbridge.errors import ConfigError
from vlbridge.train.state import latest_checkpoint, remove_partial
from vlbridge.train.trainer import train
from vlbridge_cli.main import main

# MemVP (dropout 0.1 on the memory branch) plus LoRA (dropout 0.05): the random state matters
RESUMABLE = ("model.bridge=memvp", "model.bridge_options={num_slots: 20}", "model.lora_rank=2",
             "train.steps=8", "train.grad_accum=2", "train.save_every=2", "train.keep_checkpoints=2",
             "train.eval_every=4", "train.threads=1")


def lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run):
    return [(l["step"], l["loss"], l["lr"], l["grad_norm"]) for l in lines(run) if "loss" in l]


def refuse(*args, **kwargs):
    raise AssertionError("something was unpickled")


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_losses_bitwise(tmp_path, make_recipe, monkeypatch):
    threads = torch.get_num_threads()
    try:
        reference = train(make_recipe(*RESUMABLE, f"train.output_dir={tmp_path / 'reference'}"), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "killed"
    recipe_file = make_recipe.write(make_recipe(*RESUMABLE, f"train.output_dir={run}"), tmp_path / "recipe.yaml")
    process = subprocess.Popen([sys.executable, "-m", "vlbridge_cli.main", "train", str(recipe_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if (run / "metrics.jsonl").is_file() and any(l[0] >= 3 for l in losses(run)):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "final").exists()
    resumed_from = latest_checkpoint(run)
    assert resumed_from is not None and losses(run)[-1][0] > int(resumed_from.name.split("-")[1])
    (run / ".checkpoint-99.tmp").mkdir()  # what a save killed halfway leaves: never resumed from
    (run / ".checkpoint-99.tmp" / "trained.safetensors").write_bytes(b"torn")

    with monkeypatch.context() as patch:  # resuming reads safetensors and JSON only
        for target, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
            patch.setattr(target, name, refuse)
        try:
            assert main(["train", "--resume", str(run)]) == 0
        finally:
            torch.set_num_threads(threads)

    assert losses(run) == losses(tmp_path / "reference")  # every step, bit for bit
    assert [l for l in lines(run) if "val_count" in l] == [l for l in lines(tmp_path / "reference") if "val_count" in l]
    assert [h["loss"] for h in reference["history"]] == [l[1] for l in losses(run)]
    final, expected = load_file(run / "final" / "trained.safetensors"), reference["built"].model.trainable_state_dict()
    assert set(final) == set(expected) and all(torch.equal(final[k], expected[k]) for k in final)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-4", "checkpoint-6"]
    assert not list(run.glob(".checkpoint-*"))
    for path in run.rglob("*"):  # tensors in safetensors, the rest JSON or YAML: no pickles anywhere
        assert path.is_dir() or path.suffix in (".safetensors", ".json", ".jsonl", ".yaml"), path


def test_resume_refuses_a_different_recipe_and_a_finished_run(tmp_path, make_recipe):
    run = tmp_path / "run"
    run.mkdir()
    make_recipe.write(make_recipe(), run / "recipe.yaml")
    with pytest.raises(ConfigError, match=r"would not be the same run: \['train.lr: 0.005 -> 0.001'\]"):
        train(make_recipe("train.lr=1e-3", "train.save_every=7"), resume=run)
    (run / "final").mkdir()
    (run / "final" / "meta.json").write_text(json.dumps({"step": 4}))
    with pytest.raises(ConfigError, match="already finished"):
        train(make_recipe(), resume=run)


def test_a_torn_save_is_never_resumed_from(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "training_state.json").write_text("{}")
    (tmp_path / ".checkpoint-4.tmp").mkdir()  # killed while writing: not yet renamed
    (tmp_path / ".checkpoint-4.tmp" / "training_state.json").write_text("{")
    (tmp_path / "checkpoint-6").mkdir()  # no state: a bridge-only folder, not a step checkpoint
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    remove_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-6"]


@pytest.mark.parametrize("bridge", sorted(PRESETS))
def test_every_bridge_resumes_exactly(tmp_path, make_recipe, bridge):
    """In process, for each preset, with trainable adapters inside the vision encoder too."""
    recipe = make_recipe(f"model.bridge={bridge}", "model.vision_adapter_dim=4", "train.save_every=2",
                         "train.trainable=[bridge, vision_adapters]")
    reference = train(recipe, log=lambda *_: None)
    run = tmp_path / "run"
    shutil.rmtree(run / "final")  # as if it had stopped some time after its checkpoint at step 2
    resumed = train(recipe, resume=run, log=lambda *_: None)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"]]
    assert all(torch.equal(p, reference["built"].model.trainable_state_dict()[k])
               for k, p in resumed["built"].model.trainable_state_dict().items())
