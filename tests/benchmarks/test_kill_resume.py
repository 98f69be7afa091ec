"""benchmarks/kill_resume.py --quick on the tiny models: a run killed twice (its latest checkpoint damaged
once) ends bitwise equal to the uninterrupted run; the comparison does see a difference when there is one."""

from __future__ import annotations

import json
import shutil

import torch
from benchmark_scripts import load_script
from safetensors.torch import load_file, save_file


def test_quick_mode_kills_resumes_and_ends_bitwise_equal(tiny_llama_dir, tiny_dinov2_dir, tmp_path, capsys):
    script = load_script("kill_resume")
    out = tmp_path / "out"
    assert script.main(["--out", str(out), "--quick", "--lm", str(tiny_llama_dir),
                        "--encoder", str(tiny_dinov2_dir)]) == 0
    report = json.loads((out / "kill_resume.json").read_text())
    assert report["kills"] == report["resumes"] == 2
    assert report["damaged_checkpoint"] and report["damaged_checkpoint_skipped"]
    assert report["final_weights_bitwise_equal"] and report["training_state_bitwise_equal"]
    assert report["metrics_equal"] and all(report["checks"].values())
    assert report["kill_steps"] == sorted(report["kill_steps"]) and report["kill_steps"][-1] < 12  # before the end
    printed = capsys.readouterr().out
    assert "kills: 2" in printed and "final weights bitwise equal to the uninterrupted run: yes" in printed

    # the same comparison on a copy with one optimizer value changed by one ulp
    copy = shutil.copytree(out / "killed", tmp_path / "changed")
    last = script.checkpoints(copy)[-1]
    state = load_file(copy / last / "training_state.safetensors")
    name = next(k for k in state if k.startswith("optimizer/exp_avg/"))
    state[name].view(-1)[0] = torch.nextafter(state[name].view(-1)[0], torch.tensor(1.0))
    save_file(state, copy / last / "training_state.safetensors")
    checks = script.compare_runs(copy, out / "reference")
    assert [k for k, v in checks.items() if not v] == [f"{last}/training_state.safetensors"]
