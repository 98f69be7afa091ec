"""benchmarks/vs_huggingface.py --quick on tiny models: its parity checks pass and every row is measured."""

from __future__ import annotations

import json

from benchmark_scripts import load_script


def test_quick_run_checks_parity_and_measures_every_row(tmp_path, capsys):
    script = load_script("vs_huggingface")
    out = tmp_path / "results.json"
    assert script.main(["--quick", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["parity"]["max_logit_difference"] < script.TOLERANCE
    assert report["parity"]["loss_difference"] < script.TOLERANCE and report["parity"]["positions"] > 0
    generated = report["generations_identical"]
    assert [len(row) for row in generated["image_prompts"]] == [script.QUICK.new_tokens] * script.QUICK.batch
    assert len({tuple(row) for row in generated["image_prompts"]}) > 1  # the rows differ: the check can fail
    names = [row["name"] for row in report["rows"]]
    assert [n.split(" (")[0] for n in names[:4]] == ["train step", "1-token latency", "greedy generation tokens/s",
                                                     "text-only generation tokens/s on the bare LM"]
    assert names[4:] == ["Q-Former tiny queries: forward + backward", "Q-Former tiny joint: forward + backward"]
    for row in report["rows"]:
        assert len(row["ours_seconds"]) == len(row["hf_seconds"]) == 1 and row["ratio_median"] > 0
    printed = capsys.readouterr().out
    assert "ours/HF speed" in printed and "greedy generations identical" in printed


def test_a_generation_that_differs_stops_the_run(monkeypatch, tmp_path):
    """The identical-output check is real: a Hugging Face side that generates other tokens fails it."""
    import pytest
    from transformers import LlavaForConditionalGeneration

    script = load_script("vs_huggingface")
    original = LlavaForConditionalGeneration.generate

    def shifted(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        out[:, -1] = (out[:, -1] + 1) % self.config.text_config.vocab_size
        return out

    monkeypatch.setattr(LlavaForConditionalGeneration, "generate", shifted)
    with pytest.raises(AssertionError, match="greedy generations differ"):
        script.main(["--quick", "--repeats", "1", "--threads", "1"])
