"""What a training run records beside its weights: accuracy by question and answer type at each evaluation
(metrics.jsonl and the log), the prompt format it was trained with (meta.json, `vlbridge eval`'s default),
and what filling the feature cache did (encoded, or loaded from the disk cache)."""

from __future__ import annotations

import json

from vlbridge.train.checkpoint import read_meta
from vlbridge.train.trainer import train


def test_training_logs_accuracy_by_type_and_records_its_prompts(make_recipe, tmp_path):
    logged = []
    train(make_recipe("train.steps=2"), log=logged.append)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    [final] = [line for line in lines if "val_by_type" in line]
    assert final["step"] == 2
    table = final["val_by_type"]["short"]["question_type"]
    assert sum(row["count"] for row in table.values()) == 2  # train.eval_samples
    assert any("question type" in str(message) for message in logged)
    # Shapes short answers are bare questions: evaluation must not append an instruction to them
    assert read_meta(tmp_path / "run" / "final")["prompts"] == {"vqa": "{question}"}


def test_a_second_run_says_it_loaded_cached_features(make_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    messages = []
    for run in ("first", "second"):
        logged = []
        train(make_recipe("train.steps=1", "data.cache_features=true", f"train.output_dir={tmp_path / run}"),
              log=logged.append)
        messages.append([m for m in map(str, logged) if "cached features" in m or "encoded" in m])
    assert messages[0] and all(m.startswith("encoded ") for m in messages[0])
    [second] = messages[1]
    assert second.startswith("loaded ") and "cached features" in second and "encoded" not in second


def test_every_steps_time_goes_to_the_slowdown_warning(make_recipe, monkeypatch):
    import torch

    from vlbridge.train import trainer
    from vlbridge.train.slowdown import SlowdownDetector

    seen = []

    class Recording(SlowdownDetector):
        def observe(self, step, seconds, threads):
            seen.append((step, seconds > 0, threads))
            return "steps got slow" if step == 2 else None

    monkeypatch.setattr(trainer, "SlowdownDetector", Recording)
    logged = []
    train(make_recipe("train.steps=2"), log=logged.append)
    assert seen == [(1, True, torch.get_num_threads()), (2, True, torch.get_num_threads())]
    assert "steps got slow" in logged
