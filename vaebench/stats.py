"""Pure statistics for comparing benchmark samples: stdlib only, deterministic, documented.

Everything here takes plain sequences of floats, so that the analysis side can be tested
against textbook numbers without numpy, scipy or pandas. Quantiles are Hyndman and Fan's
type 7 (linear interpolation between order statistics, numpy's and R's default), so a value
here matches `numpy.quantile` on the same data.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_NORMAL = statistics.NormalDist()


# Values as records hold them: a missing measurement is None in JSON and NaN in memory.


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> float:
    """A cell as a float; NaN for missing, None, text or booleans."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finite(value: Any) -> Any:
    """For JSON, which has no NaN: non-finite floats become null, in dicts and lists too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
EXACT_MAX_TOTAL = 40
"""Mann-Whitney uses the exact null distribution when there are no ties and nx + ny <= this."""


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile, Hyndman and Fan type 7: h = (n - 1) q, interpolate x[floor h], x[ceil h]."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def iqr(values: Sequence[float]) -> float:
    """Interquartile range, Q3 - Q1, with type 7 quartiles."""
    return quantile(values, 0.75) - quantile(values, 0.25)


def relative_iqr(values: Sequence[float]) -> float:
    """IQR / median: a robust, unit-free noise level (0.02 reads as 2 %)."""
    return iqr(values) / median(values)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation: sample standard deviation (n - 1) over the mean."""
    if len(values) < 2:
        return math.nan
    return statistics.stdev(values) / statistics.fmean(values)


def log_sd(values: Sequence[float]) -> float:
    """Sample standard deviation of log(values): the noise of a multiplicative model.

    For small noise it is close to the CV; unlike the CV it treats a run twice as fast and one
    twice as slow alike, which is how slowdowns compose.
    """
    if len(values) < 2:
        return math.nan
    if min(values) <= 0:
        raise ValueError("log_sd needs positive values")
    return statistics.stdev([math.log(v) for v in values])


def bootstrap_ratio_ci(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for median(candidate) / median(baseline).

    Each sample is resampled with replacement on its own (the two are independent), the
    ratio of medians is taken `resamples` times, and the interval is the central
    `confidence` share of those ratios (type 7 quantiles). The generator is seeded, so the
    same inputs always give the same interval. With very few values the interval is coarse
    (with 3 values a bootstrap median can take only 3 distinct values) and tends to be too
    narrow; the decision in `compare` therefore never rests on the interval alone.
    """
    if not baseline or not candidate:
        raise ValueError("bootstrap needs values on both sides")
    if min(baseline) <= 0:
        raise ValueError("a ratio of medians needs positive baseline values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = random.Random(seed)
    nb, nc = len(baseline), len(candidate)
    ratios = []
    for _ in range(resamples):
        numerator = statistics.median(rng.choices(candidate, k=nc))
        ratios.append(numerator / statistics.median(rng.choices(baseline, k=nb)))
    tail = (1.0 - confidence) / 2.0
    return quantile(ratios, tail), quantile(ratios, 1.0 - tail)


def hodges_lehmann(x: Sequence[float], y: Sequence[float]) -> float:
    """Hodges-Lehmann shift of y against x: the median of all pairwise differences y_j - x_i."""
    if not x or not y:
        raise ValueError("Hodges-Lehmann needs values on both sides")
    return statistics.median([b - a for a in x for b in y])


@dataclass(frozen=True)
class RankTest:
    """A Mann-Whitney U test of x against y.

    `u` counts the pairs (x_i, y_j) with x_i > y_j, a tie counting one half (scipy's U1).
    `p_greater` is the one-sided p-value for "x tends to be larger than y", `p_less` for
    "smaller", `p_two_sided` for either.
    """

    u: float
    nx: int
    ny: int
    p_greater: float
    p_less: float
    p_two_sided: float
    method: str  # exact, or normal (approximation with tie and continuity correction)

    @property
    def p_either_way(self) -> float:
        """The one-sided p in the direction the two differ: each direction tested at the level."""
        return min(self.p_greater, self.p_less)


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """Mann-Whitney U (Wilcoxon rank-sum) test, exact when small and untied.

    Without ties and with nx + ny <= `EXACT_MAX_TOTAL` the p-values come from the exact
    null distribution of U (all C(nx + ny, nx) rank arrangements equally likely). Otherwise
    U is referred to a normal distribution with mean nx ny / 2 and the tie-corrected
    variance nx ny / 12 ((N + 1) - sum(t^3 - t) / (N (N - 1))), with a continuity correction
    of 1/2; these match scipy.stats.mannwhitneyu with method="exact" and "asymptotic".
    If every value is tied the variance is zero and all p-values are 1.
    """
    nx, ny = len(x), len(y)
    if nx == 0 or ny == 0:
        raise ValueError("Mann-Whitney needs values on both sides")
    ranks, tie_sizes = _ranks([*x, *y])
    u = sum(ranks[:nx]) - nx * (nx + 1) / 2
    if not any(t > 1 for t in tie_sizes) and nx + ny <= EXACT_MAX_TOTAL:
        counts = _u_counts(nx, ny)
        total = sum(counts)
        k = round(u)
        p_greater = sum(counts[k:]) / total
        p_less = sum(counts[: k + 1]) / total
        method = "exact"
    else:
        n = nx + ny
        mean = nx * ny / 2
        tie_term = sum(t**3 - t for t in tie_sizes) / (n * (n - 1))
        sd = math.sqrt(nx * ny / 12 * ((n + 1) - tie_term))
        if sd == 0:
            return RankTest(u, nx, ny, 1.0, 1.0, 1.0, "normal")
        p_greater = 1.0 - _NORMAL.cdf((u - mean - 0.5) / sd)
        p_less = _NORMAL.cdf((u - mean + 0.5) / sd)
        method = "normal"
    p_two_sided = min(1.0, 2.0 * min(p_greater, p_less))
    return RankTest(u, nx, ny, min(p_greater, 1.0), min(p_less, 1.0), p_two_sided, method)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks from 1, ties given their average rank; and the size of every tie group."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    sizes = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        sizes.append(end - start + 1)
        start = end + 1
    return ranks, sizes


@functools.lru_cache(maxsize=256)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m + n, m) rank arrangements give U = 0, 1, ..., m n.

    These are the coefficients of the Gaussian binomial [m + n choose m](q), built as the
    product over i = 1..m of (1 - q^(n + i)) / (1 - q^i) in power series truncated at q^(m n).
    """
    top = m * n
    counts = [1] + [0] * top
    for i in range(1, m + 1):
        for k in range(top, n + i - 1, -1):
            counts[k] -= counts[k - n - i]
        for k in range(i, top + 1):
            counts[k] += counts[k - i]
    return tuple(counts)


def _critical_u(n: int, alpha: float) -> int | None:
    """Smallest U at which a one-sided n-versus-n test rejects at `alpha`; None if none does."""
    if 2 * n <= EXACT_MAX_TOTAL:
        counts = _u_counts(n, n)
        total = sum(counts)
        tail = 0
        for u in range(len(counts) - 1, -1, -1):
            tail += counts[u]
            if tail / total > alpha:
                return u + 1 if u + 1 < len(counts) else None
        return 0
    mean = n * n / 2
    sd = math.sqrt(n * n * (2 * n + 1) / 12)
    return math.ceil(mean + 0.5 + _NORMAL.inv_cdf(1.0 - alpha) * sd)


@functools.lru_cache(maxsize=64)
def _detectable_shift(n: int, alpha: float, power: float, simulations: int, seed: int) -> float:
    """Shift, in units of the noise sd, that the one-sided test finds with `power`; inf if never.

    Monte Carlo with common random numbers: for each simulated pair of standard normal
    samples x (baseline) and y (candidate), the test rejects once U(y + s, x) reaches the
    critical value, that is once s exceeds the u-th smallest pairwise difference x_i - y_j.
    The power at shift s is the share of simulations whose crossing point is below s, so the
    shift reaching `power` is the `power` quantile of the crossing points.
    """
    u_crit = _critical_u(n, alpha)
    if u_crit is None:
        return math.inf
    if u_crit == 0:
        return 0.0
    rng = random.Random(seed)
    crossings = []
    for _ in range(simulations):
        x = [rng.gauss(0.0, 1.0) for _ in range(n)]
        y = [rng.gauss(0.0, 1.0) for _ in range(n)]
        differences = sorted(a - b for a in x for b in y)
        crossings.append(differences[u_crit - 1])
    return quantile(crossings, power)


def min_detectable_slowdown(
    noise: float,
    repeats: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    simulations: int = 2000,
    seed: int = 0,
) -> float:
    """Smallest relative slowdown that `repeats` runs on each side detect with `power`.

    The model: a run's metric is its true value times exp(e), e normal with sd `noise` (use
    `log_sd` of A/A repeats; close to the CV), independently per run. A slowdown by a
    factor (1 + d) shifts log values by log(1 + d). The test is the one `compare` uses:
    one-sided Mann-Whitney at level `alpha`, exact for small samples. The shift that reaches
    `power` is found by seeded Monte Carlo (see `_detectable_shift`; with the default 2000
    simulations it is good to a few percent of itself); being rank based, it scales with
    `noise`, so one simulation per (repeats, alpha, power) serves all metrics.

    Returns d (0.05 reads as 5 %), or inf when `repeats` runs can never reach significance
    at `alpha` (2 versus 2 runs: the smallest one-sided p is 1/6). This covers the
    significance half of the decision rule only: `compare` also needs the slowdown to pass
    the threshold, so choose a threshold at least this large.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if noise < 0 or math.isnan(noise):
        raise ValueError(f"noise must be a non-negative number, got {noise}")
    shift = _detectable_shift(repeats, alpha, power, simulations, seed)
    if math.isinf(shift):
        return math.inf
    return math.expm1(max(shift, 0.0) * noise)
