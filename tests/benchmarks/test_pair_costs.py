"""benchmarks/pair_costs.py end to end on the tiny LLaMA: every pair, FLOPs agreeing, ratios from the rows."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script

from vlbridge.bridges.registry import CONNECTORS, INJECTIONS


def test_every_pair_is_measured_with_analytic_equal_to_measured_flops(tiny_llama_dir, tmp_path, capsys):
    script = load_script("pair_costs")
    out = tmp_path / "costs.json"
    assert script.main(["--lm", str(tiny_llama_dir), "--grid", "16", "--vision-dim", "32", "--text", "12",
                        "--answer", "2", "--batch", "2", "--repeats", "2", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["pair"]: r for r in report["rows"]}
    expected = {f"{c}->{i}" for c in CONNECTORS if c not in script.LEFT_OUT for i in INJECTIONS}
    assert set(rows) == {"text"} | expected
    for name, row in rows.items():
        assert row["lm_flops_measured"] == pytest.approx(row["lm_flops_analytic"], rel=script.TOLERANCE), name
        assert row["step_over_text"] > 0 and row["latency_over_text"] > 0
    assert rows["text"]["step_over_text"] == rows["text"]["lm_flops_over_text"] == 1.0
    # input space lengthens the sequence by the connector's vectors; memory space and cross-attention do not
    assert rows["mlp->input_space"]["visual_tokens"] == 16 and rows["qformer->input_space"]["visual_tokens"] == 32
    assert rows["mlp->input_space"]["lm_flops_analytic"] > rows["mlp->memory_space"]["lm_flops_analytic"]
    assert rows["mlp->memory_space"]["trainable_parameters"] > 0
    assert "| mlp->cross_attention |" in capsys.readouterr().out
