"""benchmarks/vadapter_convergence.py end to end on tiny models: four arms, curves, scores and FLOPs consistent."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script


def test_quick_run_measures_every_arm(tiny_llama_dir, tiny_dinov2_dir, shapes_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    script = load_script("vadapter_convergence")
    out = tmp_path / "out"
    assert script.main(["--out", str(out), "--quick", "--data", str(shapes_dir), "--lm", str(tiny_llama_dir),
                        "--tiny-lm", str(tiny_llama_dir), "--tiny-layers", "1", "--tiny-width", "64",
                        "--encoder", str(tiny_dinov2_dir), "--vision-layer", "-1", "--latents", "3", "--heads", "2",
                        "--head-dim", "8", "--threads", "1", "--clips", "6", "--frames", "2"]) == 0
    report = json.loads((out / "vadapter_convergence.json").read_text())
    arms = report["arms"]
    assert set(arms) == {"a", "b", "c", "d"} and (out / "vadapter_convergence.png").is_file()
    assert [step for step, _ in report["stage1"]["curve"]] == [2, 3]
    for arm in arms.values():
        assert [step for step, _ in arm["curve"]] == [2, 4]  # every eval_every steps and the last
        assert arm["connector_flops"]["ratio"] == pytest.approx(1.0, rel=0.01)
        assert arm["trainable_parameters"] > 0 and arm["val_caption_loss"] > 0
        assert arm["short_answer_exact_match"]["n"] == report["data"]["val_questions"] == 4
        assert arm["cider_d"]["n"] == report["data"]["val_captions"] > 0
    # the adapter holds a tiny LM layer more than (d)'s lone resampler; (c) and (b) are the same size
    assert arms["b"]["trainable_parameters"] == arms["c"]["trainable_parameters"] > arms["d"]["trainable_parameters"]
    convergence = report["convergence"]
    assert convergence["baseline_final_val_loss"] == arms["a"]["curve"][-1][1]
    printed = capsys.readouterr().out
    assert "(b) reaches (a)'s final val loss" in printed
    # on clips: (a) and (b) with frame embeddings, scored by question type, motion questions apart
    clips = report["clips"]
    assert set(clips) == {"a", "b"} and "clips (b)" in printed
    for arm in clips.values():
        kinds = arm["by_question_type"]
        assert sum(k["n"] for k in kinds.values()) == arm["exact_match"]["n"] == report["clips_data"]["val_questions"] > 0
        assert set(kinds) <= {"direction", "frames_showing", "moved_count", "where_first", "where_last"}
        assert arm["curve"] and arm["curve"][-1][0] == 2


def test_the_clip_part_alone_reuses_the_stage_one_run(tiny_llama_dir, tiny_dinov2_dir, shapes_dir, tmp_path,
                                                       monkeypatch, capsys):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    script = load_script("vadapter_convergence")
    out = tmp_path / "out"
    common = ["--out", str(out), "--quick", "--data", str(shapes_dir), "--lm", str(tiny_llama_dir), "--tiny-lm",
              str(tiny_llama_dir), "--tiny-layers", "1", "--tiny-width", "64", "--encoder", str(tiny_dinov2_dir),
              "--vision-layer", "-1", "--latents", "3", "--heads", "2", "--head-dim", "8", "--threads", "1",
              "--arms", "none", "--clips", "10", "--frames", "2", "--set", "train.warmup_steps=2", "--clip-arms", "b"]
    assert script.main(common) == 0
    assert "reusing" not in capsys.readouterr().out
    assert script.main(common) == 0  # again: stage 1 is not trained twice
    assert "reusing the stage-1 run" in capsys.readouterr().out
    report = json.loads((out / "vadapter_convergence_clips.json").read_text())
    assert set(report["clips"]) == {"b"} and report["arms"] == {}
    recipe = (out / "clips_b" / "recipe.yaml").read_text()  # --set reaches every run
    assert "warmup_steps: 2" in recipe and "warmup_steps: 2" in (out / "stage1" / "recipe.yaml").read_text()
    assert not (out / "vadapter_convergence.json").exists()
    with pytest.raises(SystemExit, match="clip-arms"):
        script.main([*common[:-1], "c"])
