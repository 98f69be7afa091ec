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
    """The targets read the n = 256, L = 64 ratios: MemVP's step at most 1.15x text-only's, and the
    LLaVA-style / MemVP step ratio at least 80 % of their FLOPs ratio."""
    def row(bridge, n, flops, step):
        return {"bridge": bridge, "n": n, "L": 64, "flops_analytic": flops, "flops_measured": flops,
                "train_step_s": step, "train_step_cpu_s": step, "latency_s": step / 2, "tokens_per_s": 10 / step}

    report = {"settings": {"text": [64], "visual": [256], "bridges": ["text", "llava", "memvp"]},
              "results": [row("text", 0, 10.0, 1.0), row("llava", 256, 50.0, 3.0), row("memvp", 256, 11.0, 1.16)]}
    targets = bench.summarise(report)["targets"]
    assert targets["memvp_step_at_most_1.15x_text (n=256, L=64)"] == {"value": 1.16, "met": False}
    llava = targets["llava_over_memvp_step_at_least_80pct_of_flops_ratio (n=256, L=64)"]
    assert llava["share"] == pytest.approx((3.0 / 1.16) / (50.0 / 11.0)) and llava["met"] is False
