"""The tuner's batch search against an exhaustive power-of-two sweep, on this machine's CPU.

Issue 6's target: the search lands within 5% of the exhaustive sweep's best throughput in
at most 20% of its time. Both use the same trial (`tuning.trial_spec`: the loop's warm-up,
then a measured tail sized by batch) on the seed's reference loader and synthetic data. The
exhaustive sweep runs every power of two from 16 to the samples per epoch as an isolated
run, the way `vaebench sweep --batch-size 16,32,...` would; the tuner's search is timed in
its default one-process screen and, for reference, as isolated runs.

The search's pick is judged by the exhaustive sweep's own figure at that batch size (or the
nearest power of two, for a refined midpoint), so both sides are read on one ruler.

    pytest benchmarks/test_tune_search.py -m slow -s
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from vaebench.measure.run import RunOptions, prepare_data
from vaebench.spec import RunSpec
from vaebench.tune.driver import isolated
from vaebench.tune.screen import screen
from vaebench.tune.search import START_BATCH, SearchResult, Trial, search_batch, trial_spec

SAMPLES = 16_384


@pytest.mark.slow
def test_search_versus_exhaustive_sweep(tmp_path: Path) -> None:
    base, data = prepare_data(RunSpec(device="cpu", data="synthetic", samples=SAMPLES), None)
    options = RunOptions(out=tmp_path / "runs", measure_peak=False)

    t0 = time.monotonic()
    searched = screen(base, data, work=tmp_path / "screen", max_batch=SAMPLES, start=START_BATCH, budget_s=600)
    search_s = time.monotonic() - t0

    t0 = time.monotonic()
    measure = isolated(data, options, "exhaustive")
    exhaustive: dict[int, Trial] = {}
    batch = START_BATCH
    while batch <= SAMPLES:
        exhaustive[batch] = measure(trial_spec(base, batch))
        batch *= 2
    exhaustive_s = time.monotonic() - t0

    t0 = time.monotonic()
    isolated_search = search_batch(base, isolated(data, options, "climb"), max_batch=SAMPLES)
    isolated_s = time.monotonic() - t0

    best = max((t for t in exhaustive.values() if t.ok), key=lambda t: t.samples_per_s)
    print()
    print("exhaustive sweep (isolated runs):")
    for b, t in exhaustive.items():
        print(f"  batch {b:>6}: {t.samples_per_s:10,.0f} samples/s  ({t.wall_s:.1f} s)")
    for name, result, seconds in (("one-process screen", searched, search_s),
                                  ("isolated search", isolated_search, isolated_s)):
        _summary(name, result, seconds, exhaustive, best, exhaustive_s)
    print(f"exhaustive: best batch {best.batch}, {best.samples_per_s:,.0f} samples/s, {exhaustive_s:.1f} s")
    assert searched.best is not None and best.ok


def _summary(name: str, result: SearchResult, seconds: float, exhaustive: dict[int, Trial], best: Trial,
             exhaustive_s: float) -> None:
    pick = result.best
    assert pick is not None
    nearest = min(exhaustive, key=lambda b: abs(math.log2(b / pick.batch)))
    ruler = exhaustive[nearest].samples_per_s
    print(f"{name}: tried {[t.batch for t in result.trials]}; stop: {result.stop_reason}")
    print(f"  pick batch {pick.batch} ({pick.samples_per_s:,.0f} samples/s by its own trial; "
          f"{ruler:,.0f} by the exhaustive sweep at batch {nearest}: {ruler / best.samples_per_s:.1%} of the best)")
    print(f"  time {seconds:.1f} s = {seconds / exhaustive_s:.1%} of the exhaustive sweep's")
