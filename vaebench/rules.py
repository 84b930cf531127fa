"""The rules every side applies to a run's numbers, each in one place.

A threshold, a cut or a default that two modules each spelled out would drift, and then one
run would get two verdicts; so they live here and everyone imports them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from .spec import RunSpec

# Steady state --------------------------------------------------------------------------------
WARMUP_STEPS = 10  # steps left out of steady-state figures: first touch, allocator, compile


def warmup_steps(total_steps: int, wanted: int = WARMUP_STEPS) -> int:
    """The warm-up a run of `total_steps` leaves out: `wanted` (10), or half a short run."""
    return min(wanted, total_steps // 2)


def steady(values: Sequence[float], warmup: int, excluded: Collection[int] = ()) -> list[float]:
    """The steady-state part of a run's per-step values: past the warm-up, without the steps
    the run excluded (a profiler window's, which the profiler slowed)."""
    return [v for i, v in enumerate(values) if i >= warmup and i not in excluded]


def steady_rate(step_ms: Sequence[float], step_samples: Sequence[int], warmup: int,
                excluded: Collection[int] = ()) -> float:
    """Steady-state samples/s: the median over steady steps of each step's own samples over its
    own time, so a ragged last batch or a short epoch is not counted as a full one."""
    rates = [1e3 * n / ms if ms > 0 else math.nan for n, ms in zip(step_samples, step_ms, strict=True)]
    kept = [r for r in steady(rates, warmup, excluded) if not math.isnan(r)]
    return statistics.median(kept) if kept else math.nan


MIN_SPREAD_STEPS = 4  # fewer steady steps than this give a run's step time no IQR: quartiles of 3 are noise

# What bounds a step ----------------------------------------------------------------------------
INPUT_BOUND_SHARE = 0.30  # data wait + copy at or above this share of the step: the input pipeline bounds it
INPUT_BAND = 0.05  # a share this close to INPUT_BOUND_SHARE is on the line: repeats of one configuration
# read 28%, 28% and 32% on a busy 2-core machine, so either side of the cut may be named

# Regression checks ---------------------------------------------------------------------------
REGRESSION_THRESHOLD = 0.10  # compare's smallest slowdown that counts, and the one calibrate plans repeats for
ALPHA = 0.05  # the one-sided significance level of compare's test, and of calibrate's detectable slowdowns

# Measuring -------------------------------------------------------------------------------------
SAMPLE_HZ = 10.0  # the outside monitor's default rate: 0.3% of a core (benchmarks/test_overhead.py)
NVML_UTIL_PERIOD_S = 1.0
"""NVML's utilization.gpu is the share of its own last sample period, 1/6 s to 1 s by product,
and GPM's SM activity that of the interval between two reads: over a shorter training window
either mostly measures the idle time around it (a 36 ms tune trial on an H200 read 1 %), so
both are left unknown there rather than reported diluted."""
NEIGHBOUR_LIMIT_PCT = 25.0
"""A run is contended when processes outside its tree used more than this share of one core
(percent) on average while it trained. A quarter of a core is well above a quiet machine's
daemons (a few percent) and well below what slows a run that has the cores to itself: on the
2-core VM a busy neighbour of 100 % made 2-thread steps up to 30x slower. `run`'s summary,
`report` and `compare` all go by it."""


def contended(neighbour_cpu_pct: object) -> bool:
    """Whether a recorded `neighbour_cpu_pct` passes `NEIGHBOUR_LIMIT_PCT`; unknown is not."""
    return (isinstance(neighbour_cpu_pct, int | float) and not isinstance(neighbour_cpu_pct, bool)
            and math.isfinite(neighbour_cpu_pct) and neighbour_cpu_pct > NEIGHBOUR_LIMIT_PCT)

# Bounds on the options of how to run (a run's own fields have theirs in spec.LIMITS) ----------
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: past that a timeout guards nothing
# The monitor's cost, measured on the 2-core VM beside a child with two workers: about 0.5 ms
# of CPU per sample with everything a CPU run reads (psutil's per-core CPU, the child's threads
# from /proc, the neighbour figure's counters every half second), 0.55 % of a core at the default
# 10 Hz and 0.95 % at 20 Hz. 15 Hz keeps it near 0.75 %, under 1 % with NVML's reads on a GPU.
MAX_SAMPLE_HZ = 15.0
MIN_SAMPLE_HZ = 0.01  # a sample every 100 s; slower, a training window may hold none (1e-10 Hz overflowed the wait)
MAX_REPEATS = 1_000  # runs of one configuration: statistics stop improving long before
MAX_RUNS = 10_000  # runs in one sweep (grid times repeats): weeks of a GPU at a minute each


# Data-parallel scaling -------------------------------------------------------------------------
def one_rank(spec: RunSpec) -> RunSpec:
    """The same configuration on one process at the same per-rank batch: the scaling baseline."""
    return dataclasses.replace(spec, nproc_per_node=1, nnodes=1)


def single_rank_rate(rows: Iterable[Mapping[str, Any]], spec: RunSpec, hostname: str) -> float:
    """Median samples/s of this host's successful one-rank runs of `spec`; NaN without one."""
    return single_rank_rates(rows)(spec, hostname)


def single_rank_rates(rows: Iterable[Mapping[str, Any]]) -> Callable[[RunSpec, str], float]:
    """`single_rank_rate` of any spec and host, the rows indexed once by spec key and host: a
    folder's many multi-rank runs each look theirs up instead of scanning every row."""
    rates: dict[tuple[Any, Any], list[float]] = {}
    for row in rows:
        rate = row.get("samples_per_s")
        if row.get("status") == "ok" and isinstance(rate, int | float) and math.isfinite(rate):
            rates.setdefault((row.get("spec_key"), row.get("fp_hostname") or ""), []).append(float(rate))

    def rate_of(spec: RunSpec, hostname: str) -> float:
        found = rates.get((one_rank(spec).key(), hostname))
        return statistics.median(found) if found else math.nan

    return rate_of


def scaling_efficiency(samples_per_s: float, world_size: int, single_rank: float) -> float:
    """samples/s at N ranks over N x samples/s of one rank at the same per-rank batch: 1.0 is
    perfect data-parallel scaling, 1/N no gain at all."""
    if not (single_rank > 0 and world_size > 0) or math.isnan(samples_per_s):
        return math.nan
    return samples_per_s / (world_size * single_rank)
