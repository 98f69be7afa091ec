"""`vlbridge demo` (the README's main command) end to end at toy size, on tiny models through its --set."""

from __future__ import annotations

import json

import torch

from vlbridge_cli.main import main


def run_tiny_demo(out, tiny_llama_dir, tiny_dinov2_dir) -> int:
    tiny = [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
            "model.vision_layer=-1"]
    args = ["demo", "--out", str(out), "--scenes", "20", "--steps", "2", "--batch-size", "4", "--eval-samples", "6"]
    return main([*args, *(item for setting in tiny for item in ("--set", setting))])


def test_demo_trains_each_bridge_and_reports_side_by_side(tmp_path, tiny_llama_dir, tiny_dinov2_dir, capsys):
    out = tmp_path / "demo"
    assert run_tiny_demo(out, tiny_llama_dir, tiny_dinov2_dir) == 0

    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [row["bridge"] for row in summary["rows"]] == ["llava", "memvp"]
    for row in summary["rows"]:
        assert row["trainable_parameters"] > 0 and row["lm_gflops_per_sample"] > 0
        assert 0 <= row["accuracy_before"] <= 100 and 0 <= row["accuracy_after"] <= 100
        assert (out / "runs" / row["bridge"] / "final").is_dir()  # each bridge's trained tensors are kept
        assert f"{row['bridge']:<8}{row['trainable_parameters']:>12,}" in printed  # its line in the table
    assert "majority-answer baseline" in printed and 0 <= summary["majority_baseline"] <= 100
    # every photo is answered by every trained bridge
    assert set(summary["photos"]) == {"llava", "memvp"}
    for answers in summary["photos"].values():
        assert [a["photo"] for a in answers] == ["chelsea.png", "astronaut.png", "coffee.png"]
    assert (out / "photos" / "chelsea.png").is_file()


def test_demo_repeats_itself_whatever_ran_before(tmp_path, tiny_llama_dir, tiny_dinov2_dir):
    """Each bridge starts from its recipe's seed, not from whatever state the global generator was left in."""
    losses = []
    for run, prior_seed in enumerate((1, 2)):
        torch.manual_seed(prior_seed)
        assert run_tiny_demo(tmp_path / f"demo{run}", tiny_llama_dir, tiny_dinov2_dir) == 0
        summary = json.loads((tmp_path / f"demo{run}" / "summary.json").read_text())
        losses.append({row["bridge"]: row["final_loss"] for row in summary["rows"]})
    assert losses[0] == losses[1]
