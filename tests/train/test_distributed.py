"""Two CPU processes (gloo), launched by torchrun and by ``accelerate launch``, train the same parameters
as one process with the same global batch; evaluation is gathered across them."""

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]


def test_two_processes_train_the_same_parameters_as_one(tmp_path, make_recipe):
    # 5 validation samples: the processes generate 3 and 2 answers, gathered back into order
    common = ("train.steps=4", "train.grad_accum=2", "train.save_every=2", "train.eval_samples=5",
              "eval.batch_size=1", "train.threads=1")
    launches = {
        "torchrun": [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"],
        "accelerate": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", str(free_port())],
    }
    processes = {}
    for name, launcher in launches.items():  # per process batch 2 x 2 processes = one process's batch 4
        recipe = make_recipe(*common, "train.batch_size=2", f"train.output_dir={tmp_path / name}")
        recipe_file = make_recipe.write(recipe, tmp_path / f"{name}.yaml")
        command = launcher + ["-m", "vlbridge_cli.main", "train", str(recipe_file)]
        processes[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                           env=os.environ | {"OMP_NUM_THREADS": "1"})
    threads = torch.get_num_threads()
    try:
        single = train(make_recipe(*common, "train.batch_size=4", f"train.output_dir={tmp_path / 'single'}"),
                       log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    outputs = {name: process.communicate(timeout=600)[0] for name, process in processes.items()}
    expected = single["built"].model.trainable_state_dict()
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name][-3000:]
        run = tmp_path / name
        trained = load_file(run / "final" / "trained.safetensors")
        assert set(trained) == set(expected)
        for key, value in expected.items():  # DDP averages gradients: equal up to float rounding
            torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-6, msg=f"{name} {key}")
        torch.testing.assert_close(losses(run), losses(tmp_path / "single"), rtol=1e-5, atol=0)
        # every validation sample answered once, in order, by one of the two processes
        assert json.loads((run / "predictions.json").read_text()) == \
            json.loads((tmp_path / "single" / "predictions.json").read_text())
        assert len(json.loads((run / "predictions.json").read_text())) == 5
        # the step checkpoint holds each process's random state
        assert {p.name for p in (run / "checkpoint-2").glob("rng-*.safetensors")} == \
            {"rng-0.safetensors", "rng-1.safetensors"}
        assert outputs[name].count('"output_dir"') == 1  # one summary, from the main process
