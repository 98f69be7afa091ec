"""benchmarks/precision.py --quick end to end on the tiny models: every measure in both precisions, the ratios and
targets computed from the rows, the accuracy arms trained in the precision they name (and reused on a second call),
and the targets' logic."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("precision")


@pytest.fixture(scope="module")
def tables():
    return load_script("precision_tables")


def test_quick_cost_part_measures_both_precisions_side_by_side(bench, tiny_llama_dir, tmp_path):
    out = tmp_path / "precision.json"
    assert bench.main(["--quick", "--lm", str(tiny_llama_dir), "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["bridge"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {(b, p) for b in ("text", "llava", "memvp") for p in ("fp32", "bf16")}
    for (bridge, precision), row in rows.items():
        assert len(row["steps"]) == len(row["latencies"]) == len(row["generations"]) == 2  # interleaved repeats
        assert row["train_step_s"] == min(row["steps"]) > 0 and row["tokens_per_s"] > 0
        assert row["peak_train_mb"] >= 0 and row["peak_generate_mb"] >= 0
        other = rows[(bridge, "fp32")]
        assert row["step_flops"] == other["step_flops"] and 0 < row["product_flops"] <= row["step_flops"]
        ceiling = report["ceilings"][bridge]["bf16_gflops"]
        assert row["products_share_of_bf16_ceiling"] == pytest.approx(row["products_gflops"] / ceiling)
    # the frozen weights halve; a LLaVA-style step multiplies more than a text-only one (its visual tokens)
    assert rows[("llava", "fp32")]["frozen_weight_bytes"] == 2 * rows[("llava", "bf16")]["frozen_weight_bytes"]
    assert rows[("llava", "fp32")]["step_flops"] > rows[("text", "fp32")]["step_flops"]
    assert report["ceilings"]["llava"]["tokens"] == 2 * (16 + 8) and report["ceilings"]["memvp"]["tokens"] == 2 * 16
    assert [a["sequence"] for a in report["attention_backward"]] == [16, 32]
    ratios = {r["bridge"]: r for r in report["summary"]["ratios"]}
    llava = ratios["llava"]
    assert llava["step"] == rows[("llava", "fp32")]["train_step_s"] / rows[("llava", "bf16")]["train_step_s"]
    assert llava["frozen_weight_bytes"] == 2.0
    assert set(report["summary"]["targets"]) == {
        "bf16_step_at_least_2x_fp32 (llava)", "bf16_step_at_least_2x_fp32 (memvp)",
        "lm_products_at_least_0.5_of_bf16_ceiling (llava)", "lm_products_at_least_0.5_of_bf16_ceiling (memvp)"}


def test_quick_accuracy_part_trains_each_arm_in_its_precision(bench, tiny_llama_dir, tiny_dinov2_dir, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    folder, out = tmp_path / "accuracy", tmp_path / "precision.json"
    argv = ["--quick", "--no-costs", "--accuracy", str(folder), "--image-size", "56", "--threads", "1", "--seeds", "2",
            "--set", f"model.language_model={tiny_llama_dir}", "--set", f"model.vision_encoder={tiny_dinov2_dir}",
            "--set", "model.vision_layer=-1", "--out", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    arms = {(a["config"], a["precision"], a["seed"]): a for a in report["accuracy"]}
    assert set(arms) == {(c, p, s) for c in ("llava", "memvp") for p in ("fp32", "bf16") for s in (0, 1)}
    for (config, precision, seed), arm in arms.items():
        assert arm["recorded_precision"]["frozen"] == arm["recorded_precision"]["compute"] == precision
        assert len(arm["loss_curve"]) == 2 and len(arm["correct_after"]) == len(arm["question_ids"]) == 6
        assert f"train.seed={seed}" in arm["settings"]
        stored = json.loads((folder / "results" / f"{config}__{precision}__seed{seed}.json").read_text())
        assert stored["correct_after"] == arm["correct_after"]
    for difference in report["summary"]["accuracy"]:  # pooled over both seeds, question by question
        config = difference["config"]
        right = {p: sum(sum(arms[(config, p, s)]["correct_after"]) for s in (0, 1)) for p in ("fp32", "bf16")}
        assert difference["bf16_minus_fp32"] == pytest.approx(100 * (right["bf16"] - right["fp32"]) / 12)
        assert difference["questions"] == 12 and difference["seeds"] == [0, 1]
    # a second call reuses the stored arms
    monkeypatch.setattr(bench, "accuracy_arm", lambda *args: pytest.fail("a stored arm was trained again"))
    assert bench.main(argv) == 0


def test_targets_need_both_step_estimates_and_the_accuracy_within_a_point(tables):
    def cost_row(bridge, precision, steps, share=0.6):
        return {"bridge": bridge, "precision": precision, "steps": steps, "train_step_s": min(steps),
                "latency_s": 1.0, "tokens_per_s": 1.0, "frozen_weight_bytes": 2 if precision == "fp32" else 1,
                "products_share_of_bf16_ceiling": share}

    def arm(config, precision, correct):
        return {"config": config, "precision": precision, "question_ids": [f"q{i}" for i in range(len(correct))],
                "correct_after": correct, "accuracy_after": 100 * sum(correct) / len(correct)}

    report = {"results": [cost_row("llava", "fp32", [4.0, 4.4, 4.2]), cost_row("llava", "bf16", [1.9, 2.0, 2.2]),
                          cost_row("memvp", "fp32", [2.0, 3.0, 2.0]), cost_row("memvp", "bf16", [0.9, 1.8, 1.2], 0.4)],
              "accuracy": [arm("memvp", "fp32", [1, 1, 0, 0] * 25), arm("memvp", "bf16", [1, 1, 0, 1] * 25),
                           arm("llava", "fp32", [1, 0] * 50), arm("llava", "bf16", [1, 0] * 50)]}
    targets = tables.summarise(report)["targets"]
    # llava: minima 4.0 / 1.9 = 2.1x, but side by side 4.0/1.9, 4.4/2.0, 4.2/2.2: median 2.1x -> met
    assert targets["bf16_step_at_least_2x_fp32 (llava)"]["met"]
    # memvp: minima 2.0 / 0.9 = 2.2x, side by side 2.2, 1.67, 1.67: median 1.67x -> not met
    memvp = targets["bf16_step_at_least_2x_fp32 (memvp)"]
    assert memvp["value"] == pytest.approx(2.0 / 0.9) and memvp["paired_median"] == pytest.approx(2 / 1.2)
    assert not memvp["met"]
    assert targets["lm_products_at_least_0.5_of_bf16_ceiling (llava)"]["met"]
    assert not targets["lm_products_at_least_0.5_of_bf16_ceiling (memvp)"]["met"]
    assert targets["accuracy_within_1_point (llava)"] == {"value": 0.0, "standard_error": 0.0, "met": True}
    accuracy = targets["accuracy_within_1_point (memvp)"]  # bf16 answers 25 more of 100: +25 points
    assert accuracy["value"] == pytest.approx(25.0) and not accuracy["met"]
