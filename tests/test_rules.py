"""The shared rules of `vaebench.rules` on their own: the steady-state cut and the contention
limit that run, report and compare all go by (the scaling rules are tested with launch)."""

from __future__ import annotations

import math

from vaebench import rules


def test_warmup_is_the_wanted_steps_or_half_a_short_run() -> None:
    assert rules.warmup_steps(100) == 10  # the default, WARMUP_STEPS
    assert rules.warmup_steps(6) == 3  # a 6-step run keeps half its steps to measure
    assert rules.warmup_steps(7, 2) == 2
    assert rules.warmup_steps(1) == 0


def test_steady_rate_drops_steps_with_no_time_to_divide_by() -> None:
    # A step timed at 0 ms has no rate (not an infinite one): the median is over the three
    # 10 ms steps of 64 samples, 6400 samples/s.
    assert rules.steady_rate([10, 0, 10, 10], [64] * 4, 0) == 6400
    assert rules.steady_rate([50, 10, 20], [64, 64, 32], 1) == 4000  # after warm-up: 6400 and 1600 a second
    assert math.isnan(rules.steady_rate([0, 0], [64, 64], 0))


def test_contention_starts_past_the_limit() -> None:
    limit = rules.NEIGHBOUR_LIMIT_PCT
    assert limit == 25.0
    assert not rules.contended(limit)  # "more than" the limit: the limit itself is quiet enough
    assert rules.contended(limit + 0.1) and rules.contended(97)
    for unknown in (None, math.nan, "90", True):
        assert not rules.contended(unknown), unknown
