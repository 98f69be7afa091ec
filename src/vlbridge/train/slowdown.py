"""A warning when training steps become far slower than the run's first steps.

On a CPU, torch uses every core by default (``train.threads: 0``). When another CPU-bound job runs on the same
machine, its threads and ours take turns on the cores and each of our steps waits for its slowest thread: a
step measured at 1.2 s took 8 to 27 s. Nothing fails, the run only crawls, so the trainer says so: once the
first steps have set a baseline (their median, robust to the first step's warm-up), a step taking ``factor``
times as long gives a warning naming the likely cause and the cure (fewer threads, or a quieter machine), at
most once every ``every`` steps.
"""

from __future__ import annotations

import statistics

BASELINE_STEPS = 5  # steps whose median is the baseline
FACTOR = 3.0  # a step this many times the baseline is far off
EVERY = 50  # at most one warning per this many steps


class SlowdownDetector:
    """Feed it every step's seconds (:meth:`observe`); it returns a warning, or None."""

    def __init__(self, baseline_steps: int = BASELINE_STEPS, factor: float = FACTOR, every: int = EVERY):
        if baseline_steps < 1 or factor <= 1 or every < 1:
            raise ValueError(f"need baseline_steps >= 1, factor > 1, every >= 1; got {baseline_steps}, {factor}, "
                             f"{every}")
        self.baseline_steps, self.factor, self.every = baseline_steps, factor, every
        self.first: list[float] = []
        self.last_warning: int | None = None  # the step of the last warning

    @property
    def baseline(self) -> float | None:
        """The median seconds of the first steps, once there are ``baseline_steps`` of them."""
        return statistics.median(self.first) if len(self.first) == self.baseline_steps else None

    def observe(self, step: int, seconds: float, threads: int) -> str | None:
        """Record that ``step`` took ``seconds``; a warning when it is far off the baseline (``threads``: torch's
        thread count, named in the warning)."""
        if len(self.first) < self.baseline_steps:
            self.first.append(seconds)
            return None
        baseline = self.baseline
        if seconds <= self.factor * baseline:
            return None
        if self.last_warning is not None and step - self.last_warning < self.every:
            return None
        self.last_warning = step
        return (f"step {step} took {seconds:.1f} s, {seconds / baseline:.1f}x the first {self.baseline_steps} steps' "
                f"median ({baseline:.2f} s). Another CPU-bound job may be competing for the cores (torch uses "
                f"{threads} threads); a quieter machine, or fewer threads (train.threads, --threads N), restores "
                "the speed.")
