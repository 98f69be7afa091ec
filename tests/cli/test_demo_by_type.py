"""`vlbridge demo` prints, for each bridge, exact match per question and answer type before and after training,
and keeps the numbers (counts, standard errors) in summary.json; --threads sets torch's threads."""

from __future__ import annotations

import json

import torch

from vlbridge_cli.main import main


def test_the_demo_shows_each_bridges_accuracy_by_type(tmp_path, tiny_llama_dir, tiny_dinov2_dir, capsys):
    tiny = [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
            "model.vision_layer=-1"]
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    try:
        assert main(["demo", "--out", str(out), "--bridges", "llava", "--scenes", "20", "--steps", "1",
                     "--batch-size", "4", "--eval-samples", "6", "--threads", "1",
                     *(item for setting in tiny for item in ("--set", setting))]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    [row] = json.loads((out / "summary.json").read_text())["rows"]
    for when in ("before", "after"):
        table = row[f"by_type_{when}"]
        assert sum(r["count"] for r in table["question_type"].values()) == 6
        assert all("exact_match_stderr" in r for r in table["answer_type"].values())
    section = printed[printed.index("llava: exact match by type"):]
    header = section.splitlines()[1].split()
    assert header == ["question", "type", "n", "before", "after"]
    assert all(kind in section for kind in row["by_type_after"]["question_type"])
