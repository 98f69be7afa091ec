"""The cost benchmark end to end on a tiny LM: every measure per bridge, measured FLOPs equal to the analytic
count, ratios from the rows, the targets, a subset of bridges, the JSON, and the allocator setting."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bridge_costs")


def tiny_run(bench, tiny_llama_dir, tmp_path, *extra):
    out = tmp_path / "costs.json"
    argv = ["--lm", str(tiny_llama_dir), "--visual", "4", "8", "--text", "6", "--answer", "2", "--new-tokens", "3",
            "--slots", "10", "--vision-dim", "16", "--batch", "2", "--repeats", "2", "--threads", "1",
            "--out", str(out), *extra]
    assert bench.main(argv) == 0
    return json.loads(out.read_text())


def test_every_bridge_measured_and_counted_exactly(bench, tiny_llama_dir, tmp_path, monkeypatch):
    kept = []
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: kept.append(True))
    report = tiny_run(bench, tiny_llama_dir, tmp_path, "--no-memory")
    assert kept == [True]  # timed with freed memory kept, as the vlbridge command trains
    rows = {(r["bridge"], r["n"], r["L"]): r for r in report["results"]}
    assert set(rows) == {("text", 0, 6), ("llava", 4, 6), ("memvp", 4, 6), ("llava", 8, 6), ("memvp", 8, 6)}
    # the text-only LM is timed again beside each n's bridges, and each n's ratios use its own text-only row
    text_rows = {r["group_n"]: r for r in report["results"] if r["bridge"] == "text"}
    assert sorted(text_rows) == [4, 8] and all(r["n"] == 0 for r in text_rows.values())
    rows[("text", 0, 6)] = text_rows[8]
    for row in rows.values():
        assert row["flops_measured"] == row["flops_analytic"]  # the analytic formulas fit the LM's real shapes
        assert row["train_flops_measured"] > row["flops_measured"]  # forward + backward
        assert 0 < row["train_step_s"] <= row["train_step_s_median"]
        assert row["train_step_page_faults"] >= 0 and row["tokens_per_s"] > 0
    assert rows[("text", 0, 6)]["trainable_parameters"] == 0
    assert rows[("memvp", 8, 6)]["slots"] == 10
    # the memory does not grow the sequence; input-space tokens do
    assert rows[("memvp", 8, 6)]["flops_analytic"] < rows[("llava", 8, 6)]["flops_analytic"]
    assert rows[("llava", 4, 6)]["flops_analytic"] < rows[("llava", 8, 6)]["flops_analytic"]

    ratios = {(r["n"], r["L"]): r for r in report["summary"]["ratios"]}
    r = ratios[(8, 6)]
    assert r["step_memvp_over_text"] == rows[("memvp", 8, 6)]["train_step_s"] / rows[("text", 0, 6)]["train_step_s"]
    assert r["flops_llava_over_memvp"] == (rows[("llava", 8, 6)]["flops_analytic"]
                                           / rows[("memvp", 8, 6)]["flops_analytic"])
    assert r["tokens_per_s_memvp_over_llava"] > 0
    memvp_runs, text_runs = rows[("memvp", 8, 6)]["train_step_s_runs"], rows[("text", 0, 6)]["train_step_s_runs"]
    assert len(memvp_runs) == len(text_runs) == 2 and min(memvp_runs) == rows[("memvp", 8, 6)]["train_step_s"]
    assert r["step_paired_memvp_over_text"] == pytest.approx(
        (memvp_runs[0] / text_runs[0] + memvp_runs[1] / text_runs[1]) / 2)  # the median of two
    target = report["summary"]["targets"]
    assert not any(name.startswith("memvp_step") for name in target)  # only at n = 256, L = 64
    assert report["summary"]["targets"]["measured_flops_within_3pct"] == {"worst_relative_difference": 0, "met": True}


def test_a_subset_of_bridges_with_peak_memory(bench, tiny_llama_dir, tmp_path, monkeypatch):
    """Also the peak-memory subprocess, which repeats the command line, and --default-malloc."""
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: pytest.fail("--default-malloc must keep glibc's"))
    report = tiny_run(bench, tiny_llama_dir, tmp_path, "--bridges", "memvp", "text", "--default-malloc")
    assert {r["bridge"] for r in report["results"]} == {"text", "memvp"}
    assert all(r["peak_train_mb"] >= 0 and r["peak_generate_mb"] >= 0 for r in report["results"])
    assert report["model_rss_mb"] > 0
    assert report["settings"]["bridges"] == ["text", "memvp"]
    ratio = report["summary"]["ratios"][0]
    assert "step_memvp_over_text" in ratio and not any("llava" in key for key in ratio)


def test_targets_at_the_papers_configuration(bench):
    """The targets read the n = 256, L = 64 ratios: MemVP's step at most 1.15x text-only's, by the ratio of
    minima and by the median of side-by-side ratios alike, and the LLaVA-style / MemVP step ratio at least
    80 % of their FLOPs ratio."""
    def row(bridge, n, flops, runs):
        step = min(runs)
        return {"bridge": bridge, "n": n, "L": 64, "group_n": 256, "flops_analytic": flops, "flops_measured": flops,
                "train_step_s": step, "train_step_s_runs": runs, "train_step_cpu_s": step, "latency_s": step / 2,
                "tokens_per_s": 10 / step}

    def targets(text_runs, memvp_runs):
        report = {"settings": {"text": [64], "visual": [256], "bridges": ["text", "llava", "memvp"]},
                  "results": [row("text", 0, 10.0, text_runs), row("llava", 256, 50.0, [3.0, 3.0, 3.0]),
                              row("memvp", 256, 11.0, memvp_runs)]}
        return bench.summarise(report)["targets"]

    memvp = "memvp_step_at_most_1.15x_text (n=256, L=64)"
    assert targets([1.0, 1.0, 1.0], [1.16, 1.16, 1.16])[memvp] == {"value": 1.16, "paired_median": 1.16, "met": False}
    # the minima's ratio meets it, but side by side MemVP's steps took 1.2x: not met
    slow_text = targets([1.0, 1.3, 1.3], [1.14, 1.56, 1.56])[memvp]
    assert slow_text["value"] == 1.14 and slow_text["paired_median"] == pytest.approx(1.2) and not slow_text["met"]
    assert targets([1.0, 1.2, 1.1], [1.1, 1.3, 1.2])[memvp]["met"]  # 1.1x and median(1.1, 1.083, 1.091)
    llava = targets([1.0] * 3, [1.16] * 3)["llava_over_memvp_step_at_least_80pct_of_flops_ratio (n=256, L=64)"]
    assert llava["share"] == pytest.approx((3.0 / 1.16) / (50.0 / 11.0)) and llava["met"] is False


def test_random_shapes_are_the_smollm2_family(bench, monkeypatch):
    """--lm random* builds a random-init LLaMA of a named shape (its cost is the pretrained model's); the
    shapes must be valid grouped-query configurations with the published widths."""
    from transformers import LlamaConfig

    widths = {}
    for name, shape in bench.RANDOM_SHAPES.items():
        config = LlamaConfig(**shape)
        assert config.hidden_size % config.num_attention_heads == 0, name
        assert config.num_attention_heads % config.num_key_value_heads == 0, name
        widths[name] = (config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    assert widths == {"random": (576, 1536, 30), "random-360m": (960, 2560, 32), "random-1.7b": (2048, 8192, 24)}

    tiny = dict(bench.SMOLLM2, vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2)
    monkeypatch.setitem(bench.RANDOM_SHAPES, "random-tiny", tiny)
    lm = bench.load_lm("random-tiny")
    shape = bench.LMShape.of(lm)
    assert (shape.width, shape.layers, shape.vocab) == (16, 2, 64)
    assert lm.model.generation_config.eos_token_id is None  # generation always runs --new-tokens steps
