"""Exact resume in bf16 (the frozen parts stored in bf16, the trained parts' products autocast): a run killed with
SIGKILL and resumed, and every preset resumed in process, log the uninterrupted run's losses bit for bit; a run
keeps the precision it recorded when `auto` would resolve otherwise on resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vlbridge.bridges.registry import PRESETS
from vlbridge.train.parameter_groups import group_of
from vlbridge.train.state import latest_checkpoint
from vlbridge.train.trainer import train
from vlbridge_cli.main import main

BF16 = ("model.precision=bf16", "train.precision=bf16")
# MemVP (dropout 0.1 on the memory branch) plus LoRA (dropout 0.05): the random state matters
RESUMABLE = ("model.bridge=memvp", "model.bridge_options={num_slots: 20}", "model.lora_rank=2", *BF16,
             "train.steps=8", "train.grad_accum=2", "train.save_every=2", "train.keep_checkpoints=2",
             "train.eval_every=4", "train.threads=1")


def losses(run):
    return [(line["step"], line["loss"], line["lr"], line["grad_norm"])
            for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in line]


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_losses_bitwise_in_bf16(tmp_path, make_recipe):
    threads = torch.get_num_threads()
    try:
        reference = train(make_recipe(*RESUMABLE, f"train.output_dir={tmp_path / 'reference'}"), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert {p.dtype for n, p in reference["built"].model.named_parameters() if group_of(n) == "lm"} == \
        {torch.bfloat16}
    run = tmp_path / "killed"
    recipe_file = make_recipe.write(make_recipe(*RESUMABLE, f"train.output_dir={run}"), tmp_path / "recipe.yaml")
    process = subprocess.Popen([sys.executable, "-m", "vlbridge_cli.main", "train", str(recipe_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if (run / "metrics.jsonl").is_file() and any(line[0] >= 3 for line in losses(run)):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert latest_checkpoint(run) is not None and not (run / "final").exists()
    try:
        assert main(["train", "--resume", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert losses(run) == losses(tmp_path / "reference")  # every step, bit for bit
    final, expected = load_file(run / "final" / "trained.safetensors"), reference["built"].model.trainable_state_dict()
    assert set(final) == set(expected) and all(torch.equal(final[k], expected[k]) for k in final)


@pytest.mark.parametrize("bridge", sorted(PRESETS))
def test_every_preset_resumes_exactly_in_bf16(tmp_path, make_recipe, bridge):
    """In process, with trainable adapters inside the bf16 vision encoder too."""
    recipe = make_recipe(f"model.bridge={bridge}", "model.vision_adapter_dim=4", "train.save_every=2", *BF16,
                         "train.trainable=[bridge, vision_adapters]")
    reference = train(recipe, log=lambda *_: None)
    run = tmp_path / "run"
    shutil.rmtree(run / "final")  # as if it had stopped some time after its checkpoint at step 2
    resumed = train(recipe, resume=run, log=lambda *_: None)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"]]
    expected = reference["built"].model.trainable_state_dict()
    assert all(torch.equal(p, expected[k]) for k, p in resumed["built"].model.trainable_state_dict().items())


def test_a_run_resumes_in_the_precision_it_recorded(tmp_path, make_recipe, monkeypatch):
    """Started where auto meant bf16, resumed where it means fp32: the run goes on in bf16, bit for bit."""
    recipe = make_recipe("model.bridge=memvp", "model.bridge_options={num_slots: 20}", "train.save_every=2")
    monkeypatch.setenv("VLBRIDGE_AUTO_PRECISION", "bf16")
    reference = train(recipe, log=lambda *_: None)
    shutil.rmtree(tmp_path / "run" / "final")
    monkeypatch.setenv("VLBRIDGE_AUTO_PRECISION", "fp32")
    lines = []
    resumed = train(recipe, resume=tmp_path / "run", log=lines.append)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"]]
    assert {p.dtype for n, p in resumed["built"].model.named_parameters() if group_of(n) == "lm"} == {torch.bfloat16}
    assert any("auto: VLBRIDGE_AUTO_PRECISION=bf16" in str(line) for line in lines)  # the reason it recorded
