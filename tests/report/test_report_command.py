"""vlbridge report --quick end to end on the tiny models: every requested bridge trained and measured, the files
written and their numbers consistent with one another; a report cut short continues where it stopped, a finished
one is reused, one made with other settings is refused unless --force."""

from __future__ import annotations

import base64
import json
import re

import pytest

from vlbridge.bridges.registry import PRESETS
from vlbridge.report import runner
from vlbridge.report.bridges import DEFAULT_PAIRS, file_name
from vlbridge.report.render import ACCURACY_COLUMNS, COST_COLUMNS, PENDING
from vlbridge_cli.main import main

TINY_QFORMER = "model.bridge_options={init: random, sizes: {hidden_size: 32, num_hidden_layers: 2, " \
               "num_attention_heads: 2, intermediate_size: 64}}"
TINY = {  # bridge -> settings that make its connector tiny too
    "blip2": TINY_QFORMER,
    "qformer->memory_space": TINY_QFORMER,
    "eve_patch->input_space": "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}",
    "tiny_lm->input_space": "model.connector_options.layers=1",
}


def report_args(out, lm, encoder, data, *extra: str) -> list[str]:
    tiny = [a for name, setting in TINY.items() for a in ("--bridge-set", f"{name}:{setting}")]
    return ["report", "--quick", "--out", str(out), "--lm", str(lm), "--encoder", str(encoder), "--tiny-lm", str(lm),
            "--data", str(data), "--threads", "1", *tiny, *extra]


def table(markdown: str, header: str) -> dict[str, list[str]]:
    """The Markdown table under ``## header``: bridge name -> its row's cells."""
    section = markdown.split(f"## {header}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}


def close(cell: str, value: float) -> bool:
    """A cell printed to 4 significant digits shows ``value``."""
    return abs(float(cell) - value) <= 5e-4 * abs(value) + 1e-12


def check_tables(markdown: str, page: str, bridges: list[dict]) -> None:
    cost, accuracy = table(markdown, "Cost"), table(markdown, "Accuracy at equal steps")
    for b in bridges:
        row = cost[b["name"]]
        assert row[1] == f"{b['connector']} -> {b['injection']}"
        assert int(row[2].replace(",", "")) == b["trainable_parameters"] > 0
        assert int(row[3]) == b["visual_vectors"] == b["flops"]["visual_vectors"] > 0
        measured = [b["flops"]["lm_analytic"] / 1e9, b["flops"]["ratio"], b["train_step_seconds"],
                    b["train_wall_seconds"] / 60, b["latency_seconds"], b["generation"]["tokens_per_second"],
                    b["peak_memory"]["train_step_mb"], b["peak_memory"]["generation_mb"]]
        assert all(close(cell, value) for cell, value in zip(row[4:], measured)), (row, measured)
        for cell, key in zip(accuracy[b["name"]][1:4], ("short_exact_match", "mc_likelihood", "caption_cider_d")):
            entry = b["accuracy"][key]
            assert cell == f"{entry['mean']:.1f} ± {entry['stderr']:.1f}"
    # the HTML shows the same cells
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]
    for name, row in [*cost.items(), *accuracy.items()]:
        assert [c.replace("&gt;", ">") for c in row] in [[c.replace("&gt;", ">") for c in r] for r in cells]
    assert len(cost) == len(accuracy) == len(bridges)
    assert len(COST_COLUMNS) == len(next(iter(cost.values()))) and len(ACCURACY_COLUMNS) == len(
        next(iter(accuracy.values())))


def test_quick_report_end_to_end(tiny_llama_dir, tiny_dinov2_dir, shapes_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    args = report_args(out, tiny_llama_dir, tiny_dinov2_dir, shapes_dir)
    names = [*PRESETS, *DEFAULT_PAIRS]

    # cut short while training the third bridge: the report shows the two that finished
    run_bridge = runner.run_bridge

    def interrupted(name, *rest, **kwargs):
        if name == names[2]:
            raise KeyboardInterrupt
        return run_bridge(name, *rest, **kwargs)

    monkeypatch.setattr(runner, "run_bridge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    partial = json.loads((out / "report.json").read_text())
    assert [b["name"] for b in partial["bridges"]] == names[:2] and partial["missing"] == names[2:]
    assert PENDING in (out / "report.md").read_text() and not (out / "accuracy_vs_flops.png").exists()

    # run again: the two are reused, the rest trained
    monkeypatch.setattr(runner, "run_bridge", run_bridge)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}: done before" in printed for name in names[:2])
    assert not any(f"{name}: done before" in printed for name in names[2:])

    report = json.loads((out / "report.json").read_text())
    bridges = report["bridges"]
    assert [b["name"] for b in bridges] == names and report["missing"] == []  # every requested bridge
    assert bridges[:2] == partial["bridges"]
    sizes = report["data"]["test"]
    assert sizes == {"short": 6, "mc": 4, "captions": 2}  # --quick scores the first 6 of each task
    for b in bridges:
        assert b == json.loads((out / "results" / f"{file_name(b['name'])}.json").read_text())
        if "->" in b["name"]:
            assert b["name"] == f"{b['connector']}->{b['injection']}"
        assert b["flops"]["ratio"] == pytest.approx(1.0, rel=0.01)  # the formula is what torch counts
        assert len(b["loss_curve"]) == 3 and b["final_loss"] == b["loss_curve"][-1]
        assert b["train_step_seconds"] > 0 and b["latency_seconds"] > 0 and b["generation"]["tokens_per_second"] > 0
        assert b["peak_memory"]["train_step_mb"] >= 0 and b["peak_memory"]["generation_mb"] >= 0
        for key, count in (("short_exact_match", "short"), ("mc_likelihood", "mc"), ("caption_cider_d", "captions")):
            entry = b["accuracy"][key]
            assert entry["count"] == sizes[count] and entry["stderr"] is not None
            assert 0 <= entry["mean"] <= (100 if key != "caption_cider_d" else 1000)
    assert {b["visual_vectors"] for b in bridges if b["connector"] in ("qformer",)} == {32}
    assert [b["injection"] for b in bridges if b["name"] == "memvp"] == ["memory_space"]

    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    check_tables(markdown, page, bridges)
    for png in ("accuracy_vs_flops.png", "accuracy_vs_time.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and f"]({png})" in markdown
        assert base64.b64encode(data).decode() in page  # embedded in the HTML

    # a third call reuses everything; other settings are refused before any work, unless --force
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text())["bridges"] == bridges
    capsys.readouterr()
    assert main([*args, "--steps", "2"]) == 2
    assert "steps: 3 there, 2 now); run with --force" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--force", "--presets", "llava", "--pairs"]) == 0
    forced = json.loads((out / "report.json").read_text())
    assert [b["name"] for b in forced["bridges"]] == ["llava"] and len(forced["bridges"][0]["loss_curve"]) == 2
