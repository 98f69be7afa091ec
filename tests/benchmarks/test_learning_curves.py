"""benchmarks/learning_curves.py --quick end to end on the tiny models: a curve per arm read from the trainer's own
metrics.jsonl, the tables and plot, stored arms reused without training; the arms' keys and the --arm syntax."""

from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("learning_curves")


def test_quick_run_draws_a_curve_per_arm_from_the_trainers_metrics(bench, tiny_llama_dir, tiny_dinov2_dir, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "curves"
    argv = ["--quick", "--out", str(out), "--arms", "llava,memvp", "--image-size", "56", "--threads", "1",
            "--set", f"model.language_model={tiny_llama_dir}", "--set", f"model.vision_encoder={tiny_dinov2_dir}",
            "--set", "model.vision_layer=-1"]
    assert bench.main(argv) == 0
    report = json.loads((out / "learning_curves.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"llava", "memvp"}
    for name, arm in arms.items():
        curve = arm["curve"]
        assert [p["step"] for p in curve] == [2, 4]  # --quick: 4 steps, evaluated every 2
        assert curve[0]["train_seconds"] < curve[1]["train_seconds"]
        logged = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        evaluations = [line for line in logged if "val_by_type" in line]
        assert len(evaluations) == len(curve)
        for point, line in zip(curve, evaluations):
            types = line["val_by_type"]["short"]["question_type"]
            assert point["by_question_type"] == {t: row["exact_match"] for t, row in types.items()}
            assert point["overall"] == line["val_exact_match"]
            assert sum(point["type_counts"].values()) == 6  # the first 6 val questions
            assert all(0 <= v <= 100 for v in [point["overall"], *point["by_question_type"].values()])
            steps = sum(s["step_seconds"] for s in logged if "step_seconds" in s and s["step"] <= point["step"])
            assert point["wall_seconds"] == pytest.approx(arm["encoding"]["seconds"] + steps)
        assert arm["epochs"] == pytest.approx(4 * 4 / arm["train_questions"])
    # both arms read one encoder's features: the first encodes them, the second finds them in the cache
    assert arms["llava"]["encoding"]["encoded"] > 0 and arms["memvp"]["encoding"]["loaded"] > 0
    table = (out / "learning_curves.md").read_text()
    assert "| llava | llava |" in table and "| memvp | memvp |" in table
    assert (out / "learning_curves.png").stat().st_size > 0

    import vlbridge.train.trainer

    monkeypatch.setattr(vlbridge.train.trainer, "train", lambda *a, **k: pytest.fail("a stored arm was trained again"))
    assert bench.main(argv) == 0
    assert json.loads((out / "learning_curves.json").read_text())["arms"] == report["arms"]


def test_every_arm_names_existing_recipe_keys_and_bridge_options(bench):
    from argparse import Namespace

    args = Namespace(steps=2, batch_size=2, seed=0, threads=1, eval_every=1, eval_samples=2, overrides=[])
    for name, overrides in bench.ARMS.items():
        bench.check_arm(name, overrides, args)  # raises SystemExit naming the arm on an unknown key or option
    with pytest.raises(SystemExit, match="arm typo"):
        bench.check_arm("typo", [*bench.MEMVP, "model.bridge_options.lambda=0.1"], args)


def test_an_added_arm_starts_from_a_named_arm_and_keeps_commas_inside_values(bench):
    name, overrides = bench.parse_arm("mine=memvp,model.bridge_options={lam: 0.1, scale: 1.0},train.lr=5e-3",
                                      bench.ARMS)
    assert name == "mine"
    assert overrides == [*bench.MEMVP, "model.bridge_options={lam: 0.1, scale: 1.0}", "train.lr=5e-3"]
    assert bench.parse_arm("plain=train.lr=1e-4", bench.ARMS) == ("plain", ["train.lr=1e-4"])
    with pytest.raises(SystemExit, match="neither"):
        bench.parse_arm("bad=nosuch,train.lr=1", bench.ARMS)
