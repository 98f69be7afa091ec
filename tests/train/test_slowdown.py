"""The slow-step warning: a baseline from the first steps' median, a warning at factor x, at most once per N
steps, naming the thread count and the cure."""

from __future__ import annotations

import pytest

from vlbridge.train.slowdown import SlowdownDetector


def test_a_step_far_slower_than_the_first_ones_is_reported_at_most_once_per_window():
    detector = SlowdownDetector(baseline_steps=5, factor=3.0, every=10)
    # the first step's warm-up does not move the median baseline (1.2 s)
    assert [detector.observe(step, s, threads=2) for step, s in enumerate([9.0, 1.2, 1.1, 1.3, 1.2], 1)] == [None] * 5
    assert detector.baseline == 1.2
    assert detector.observe(6, 3.5, threads=2) is None  # under 3x
    warning = detector.observe(7, 8.4, threads=2)
    assert warning.startswith("step 7 took 8.4 s, 7.0x the first 5 steps' median (1.20 s)")
    assert "2 threads" in warning and "fewer threads" in warning and "train.threads" in warning
    assert detector.observe(16, 27.0, threads=2) is None  # within 10 steps of the last warning
    assert detector.observe(17, 27.0, threads=2).startswith("step 17 took 27.0 s")
    assert detector.observe(18, 1.2, threads=2) is None


def test_settings_are_checked():
    for bad in ({"baseline_steps": 0}, {"factor": 1.0}, {"every": 0}):
        with pytest.raises(ValueError):
            SlowdownDetector(**bad)
