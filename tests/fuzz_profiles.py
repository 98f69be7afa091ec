"""Hypothesis settings profiles of the fuzz tests (``tests/test_fuzz_*.py``).

- ``fuzz-normal`` (the default): a few dozen examples per property, so the fuzz tests run in the ordinary suite.
- ``fuzz-long``: chosen by setting ``VLBRIDGE_FUZZ_EXAMPLES=N``; N examples per property (BENCHMARKS.md,
  Reliability / Fuzzing, was produced with N = 10000)::

      VLBRIDGE_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/test_fuzz_*.py --hypothesis-show-statistics

Every property accepts one outcome per example: a clean result, or one of vlbridge's named errors
(:class:`vlbridge.errors.VLBridgeError`). Any other exception (a crash) or a record that disappears without being
reported (a silent drop) fails the property, so a passing run means 0 of either over the examples tried; the
statistics list the examples tried and, as events, the outcomes.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

ENVIRONMENT = "VLBRIDGE_FUZZ_EXAMPLES"

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("fuzz-normal", max_examples=40, **_COMMON)
settings.register_profile("fuzz-long", max_examples=int(os.environ.get(ENVIRONMENT) or 10_000), **_COMMON)

PROFILE = "fuzz-long" if os.environ.get(ENVIRONMENT) else "fuzz-normal"
FUZZ = settings.get_profile(PROFILE)
"""The decorator of every fuzz property: ``@FUZZ`` then ``@given(...)``."""
