"""The Shapes dataset: deterministic splits, disjoint scenes, balanced answers, sound samples."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from vlbridge.data.prompts import format_multiple_choice
from vlbridge.data.sample import IMAGE_PLACEHOLDER
from vlbridge.data.shapes_captions import N_REFERENCES
from vlbridge.data.shapes_dataset import (CAPTION_PROMPT, SPLITS, Balancer, ShapesConfig, generate_shapes)
from vlbridge.errors import ConfigError


@pytest.fixture(scope="module")
def big():
    return generate_shapes(ShapesConfig(n=1000, seed=0))


def test_split_sizes():
    assert ShapesConfig(n=1000).split_sizes() == {"train": 800, "val": 100, "test": 100}
    assert ShapesConfig(n=10).split_sizes() == {"train": 8, "val": 1, "test": 1}
    assert ShapesConfig(n=3).split_sizes() == {"train": 1, "val": 1, "test": 1}
    assert ShapesConfig(n=50, train_fraction=0.5, val_fraction=0.2).split_sizes() == {"train": 25, "val": 10, "test": 15}


@pytest.mark.parametrize("bad", [dict(n=2), dict(train_fraction=0.95, val_fraction=0.1), dict(max_objects=0),
                                 dict(max_objects=10), dict(image_size=8), dict(mc_per_scene=-1)])
def test_bad_config(bad):
    with pytest.raises(ConfigError, match="shapes"):
        ShapesConfig(**bad)


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate_shapes(ShapesConfig(n=40, seed=5)), generate_shapes(ShapesConfig(n=40, seed=5))
    assert a.scenes == b.scenes
    assert generate_shapes(ShapesConfig(n=40, seed=6)).scenes != a.scenes


def test_a_scene_does_not_depend_on_n():
    # Scene i comes from its own seeded generator; only split membership changes with n.
    small, large = generate_shapes(ShapesConfig(n=20)), generate_shapes(ShapesConfig(n=40))
    assert [s.scene for s in small.split("train")[:10]] == [s.scene for s in large.split("train")[:10]]


def test_splits_are_disjoint_and_new(big):
    ids = [s.scene.id for s in big.scenes]
    assert len(set(ids)) == len(ids) == 1000
    assert [s.index for s in big.scenes] == list(range(1000))
    train = {s.scene.signature for s in big.split("train")}
    held_out = [s.scene.signature for split in ("val", "test") for s in big.split(split)]
    assert big.redraw_failures == 0
    assert not train & set(held_out) and len(set(held_out)) == len(held_out)
    for split in ("val", "test"):  # redrawing keeps the object-count mix
        counts = Counter(len(s.scene.objects) for s in big.split(split))
        assert set(counts) == {1, 2, 3, 4} and max(counts.values()) < 0.4 * 100


def test_answer_balance_and_question_mix(big):
    train = [q for s in big.split("train") for q in s.short]
    assert len(train) == 800 * 4
    by_type = Counter(q.question_type for q in train)
    assert max(by_type.values()) - min(by_type.values()) <= 2  # types rotate evenly
    assert sum(q.local for q in train) / len(train) > 0.5  # most questions need "where"
    for name in by_type:
        answers = Counter(q.answer for q in train if q.question_type == name)
        share = max(answers.values()) / sum(answers.values())
        if set(answers) <= {"yes", "no"}:
            assert 0.45 <= share <= 0.55, name
        else:
            assert share <= 0.32, (name, answers)
    baselines = big.majority_baselines()
    assert baselines["train"]["short"]["per_type_majority_accuracy"] < 0.3
    for split in SPLITS:
        mc = baselines[split]["mc"]
        assert mc["answer"] in "ABCDE" and mc["accuracy"] < 0.42 and 0.25 < mc["chance"] < 0.4
    mc_types = Counter(m.question.question_type for s in big.split("train") for m in s.mc)
    assert not {"exists", "exists_at", "relation"} & set(mc_types) and len(mc_types) == 10


def test_majority_baselines_match_a_direct_count():
    data = generate_shapes(ShapesConfig(n=30, seed=2))
    baselines = data.majority_baselines()
    for split in SPLITS:
        questions = [q for s in data.split(split) for q in s.short]
        hits = 0
        for name in {q.question_type for q in questions}:
            answers = Counter(q.answer for q in questions if q.question_type == name)
            hits += max(answers.values())
            assert baselines[split]["short"]["by_question_type"][name]["accuracy"] == round(
                max(answers.values()) / sum(answers.values()), 4)
        assert baselines[split]["short"]["per_type_majority_accuracy"] == pytest.approx(hits / len(questions), abs=1e-4)
        letters = Counter(m.answer_index for s in data.split(split) for m in s.mc)
        assert baselines[split]["mc"]["accuracy"] == round(max(letters.values()) / sum(letters.values()), 4)


def test_samples(tmp_path):
    data = generate_shapes(ShapesConfig(n=20, seed=1))
    for split in SPLITS:
        items = data.split(split)
        short, mc, caps = (data.samples(split, task, tmp_path) for task in ("short", "mc", "caption"))
        assert len(short) == sum(len(s.short) for s in items) and len(caps) == len(items)
        assert len({s.id for s in short + mc + caps}) == len(short) + len(mc) + len(caps)
        for sample, (item, k, q) in zip(short, [(s, k, q) for s in items for k, q in enumerate(s.short)]):
            assert sample.turns[0].text == f"{IMAGE_PLACEHOLDER}\n{q.text}" and sample.answer == q.answer
            # question_id: the VQAv2 layout's id of the same question, so results files match its annotations
            assert sample.meta == {"task": "short", "answers": [q.answer] * 10, "question_type": q.question_type,
                                   "answer_type": q.answer_type, "local": q.local, "question_id": item.index * 100 + k}
            assert sample.image == tmp_path / (sample.id.split("_q")[0] + ".png")
        for sample, m in zip(mc, [m for s in items for m in s.mc]):
            assert sample.turns[0].text == IMAGE_PLACEHOLDER + "\n" + format_multiple_choice(m.question.text, m.choices)
            assert sample.answer == "ABCDE"[m.answer_index] and sample.meta["choices"] == list(m.choices)
            assert sample.meta["answer_index"] == m.answer_index and sample.meta["task"] == "mc"
        for sample, item in zip(caps, items):
            assert sample.turns[0].text == f"{IMAGE_PLACEHOLDER}\n{CAPTION_PROMPT}"
            assert sample.answer == item.captions[0] and sample.meta["answers"] == list(item.captions)
    with pytest.raises(ConfigError, match="valid"):
        data.samples("dev", "short", tmp_path)
    with pytest.raises(ConfigError, match="valid"):
        data.samples("train", "vqa", tmp_path)


def test_captions_are_five_distinct_references(big):
    for item in big.scenes[:200]:
        assert len(item.captions) == N_REFERENCES == len(set(item.captions))
        for text in item.captions:
            assert text[0].isupper() and text.endswith(".") and "  " not in text
            for obj in item.scene.objects:  # every reference mentions every object's colour and shape
                assert re.search(rf"\b{obj.color} {obj.shape}\b", text), (text, obj)
        assert all(f"{o.size} {o.color} {o.shape}" in item.captions[0] for o in item.scene.objects)


def test_balancer_prefers_the_rarest_value():
    import random

    balancer, rng = Balancer(), random.Random(0)
    picks = [balancer.pick("k", ["a", "a", "b", "c"], rng) for _ in range(9)]
    assert Counter(picks) == {"a": 3, "b": 3, "c": 3}
    assert balancer.pick("k", ["b"], rng) == "b"  # a single option is always taken
