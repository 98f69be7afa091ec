"""Two CPU processes (gloo, torchrun) train in bf16 the same parameters as one process with the same global batch.

In fp32 the two agree to float rounding (tests/train/test_distributed.py: rtol 1e-5). In bf16 each process runs its
half of the batch through the bf16 LM, whose products and attention then see other shapes (2 rows instead of 4), so
activations and gradients differ in the last bits of bf16 (2^-8 relative) before DDP averages the fp32 gradients,
and AdamW, which normalises each element's step, passes such differences on to the parameters. The tolerances bf16
needs, stated: losses within 1e-3 relative, gradient norms within 1e-2 relative, and the update of the trained
tensors (trained - initial, all tensors together) within 10 % of its norm. A run whose updates are twice as large
(twice the learning rate) is ~100 % off, far outside. MemVP's memory dropout is off here: each process draws its
own masks, which no tolerance can absorb (the fp32 test uses a bridge without dropout too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlbridge.train.trainer import train

BIN = Path(sys.executable).parent
LOSS_RTOL = 1e-3  # bf16: see the module docstring
GRAD_NORM_RTOL = 1e-2
UPDATE_TOL = 0.1  # of the update's norm


def initial(recipe) -> dict:
    """The trained tensors before the first step (the bridge drawn from the recipe's seed, as the trainer does)."""
    from vlbridge.runs import build_seeded
    from vlbridge.train.parameter_groups import apply_trainable

    model = build_seeded(recipe).model
    apply_trainable(model, recipe.train.trainable)
    return model.trainable_state_dict()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logged(run: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def losses(run: Path) -> list[float]:
    return logged(run, "loss")


def update_difference(a: dict, b: dict, start: dict) -> float:
    """How far apart two runs' updates of the trained tensors are: |(a - start) - (b - start)| / |b - start|, over
    all tensors together (Frobenius norms)."""
    difference = sum(((a[k] - b[k]).double() ** 2).sum() for k in b)
    update = sum(((b[k] - start[k]).double() ** 2).sum() for k in b)
    return (difference / update).sqrt().item()


def test_two_bf16_processes_train_the_same_parameters_as_one(tmp_path, make_recipe):
    common = ("model.bridge=memvp", "model.bridge_options={num_slots: 20, dropout: 0.0}", "model.precision=bf16",
              "train.precision=bf16", "train.steps=4", "train.grad_accum=2", "train.save_every=2",
              "train.eval_samples=4", "eval.batch_size=1", "train.threads=1")
    recipe = make_recipe(*common, "train.batch_size=2", f"train.output_dir={tmp_path / 'torchrun'}")
    recipe_file = make_recipe.write(recipe, tmp_path / "torchrun.yaml")
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "vlbridge_cli.main", "train", str(recipe_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=os.environ | {"OMP_NUM_THREADS": "1"})
    threads = torch.get_num_threads()
    try:
        single = train(make_recipe(*common, "train.batch_size=4", f"train.output_dir={tmp_path / 'single'}"),
                       log=lambda *_: None)
        # the same one-process run with twice the learning rate: updates twice as large
        wrong = train(make_recipe(*common, "train.batch_size=4", "train.lr=1e-2",
                                  f"train.output_dir={tmp_path / 'wrong'}"), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    run = tmp_path / "torchrun"
    assert "precision: frozen weights and their activations bf16" in output
    trained = load_file(run / "final" / "trained.safetensors")
    expected = single["built"].model.trainable_state_dict()
    assert set(trained) == set(expected)
    start = initial(make_recipe(*common))
    torch.testing.assert_close(losses(run), losses(tmp_path / "single"), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(logged(run, "grad_norm"), logged(tmp_path / "single", "grad_norm"),
                               rtol=GRAD_NORM_RTOL, atol=0)
    assert update_difference(trained, expected, start) <= UPDATE_TOL
    # the tolerance tells a real difference apart: twice the learning rate moves the tensors far beyond it
    assert update_difference(wrong["built"].model.trainable_state_dict(), expected, start) > 5 * UPDATE_TOL
