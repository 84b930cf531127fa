"""Regression checks between two results folders: paired by spec key, tested per metric.

The decision rule, per (configuration, metric):

* The unit of evidence is the run. Each run contributes one value: its steady-state
  samples/s (recomputed from its step times after warm-up when the series is at hand: the
  median over steps of the samples in the step over its time, as the run computed it), its
  median epoch time, its wall/user/sys time or its peak RSS.
  Step times never enter the test as samples of their own: steps inside a run share its
  machine state (a noisy neighbour, a thermal state, a page-cache state), so thousands of
  them are not thousands of independent samples and a step-level test would call a
  run-level hiccup significant. They serve only to make each run's value a robust median.
* The change is the ratio of medians, candidate over baseline, read as a cost ratio (time
  ratio; for samples/s the inverse), so a 10 % slowdown is the same number for samples/s
  and for epoch time. Its confidence interval is a seeded percentile bootstrap over runs at
  level 1 - 2 alpha: each of its ends is a one-sided bound at alpha, the level of the one-sided
  rank test below, and the "unchanged" rule on it is then the two one-sided tests (TOST) of
  equivalence at alpha.
* **regression**: the cost ratio is at least 1 + threshold *and* a one-sided Mann-Whitney
  test in the worse direction gives p <= alpha (exact for small samples). With 3 runs a
  side the smallest possible p is 1/20, so at alpha 0.05 every candidate run must be slower
  than every baseline run; 5 a side allow 1/252. `calibration` tells how many a runner needs.
* **improvement**: the same the other way (a cost ratio at most 1 / (1 + threshold)).
* **unchanged**: neither, with runs enough a side for the test to find a change at all (3 at
  alpha 0.05), and the whole interval lies within [1 / (1 + threshold), 1 + threshold]: a
  threshold-sized change is ruled out.
* **inconclusive**: anything else (too few runs, too much noise, a change past the threshold
  that is not significant). It does not fail the check: crying wolf is the failure to avoid.
* A configuration with a run measured beside a busy neighbour (`rules.contended`: processes
  outside the run's tree used more than `NEIGHBOUR_LIMIT_PCT` of a core) on either side is
  inconclusive on every speed metric, whatever its numbers say: a neighbour can make a run
  many times slower, so neither a regression nor a pass can be read from it. The comparison
  says so loudly; `vaebench compare --strict` makes it exit 2.

Final loss is a numerics guard, not a speed metric: see `check_final_loss`. A candidate point
whose every run failed (a crash, out of memory, a timeout) fails the comparison as a regression
does: a change that makes training crash or hang is the worst slowdown.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import stats
from .._format import counted, fmt_auto, markdown_table, percent, text_table
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from ..machine import machine_label
from ..result import OK, RunSeries
from ..rules import ALPHA, NEIGHBOUR_LIMIT_PCT, REGRESSION_THRESHOLD, contended, steady_rate
from ..spec import RunSpec, samples_per_step
from ..stats import finite, number

if TYPE_CHECKING:
    import pandas as pd

REGRESSION = "regression"
IMPROVEMENT = "improvement"
UNCHANGED = "unchanged"
INCONCLUSIVE = "inconclusive"
_PLURALS = {REGRESSION: "regressions", IMPROVEMENT: "improvements"}

LOSS_BAND_WIDEN = 0.5
"""The seed band is widened on each side by this share of its width..."""
LOSS_BAND_FLOOR = 0.01
"""...or by this share of the baseline loss, whichever is more, so a single-seed baseline
(a band of width zero) tolerates run-to-run nondeterminism but not a changed computation."""

GUARDED_FINGERPRINT = ("cpu_model", "logical_cores", "gpu_name", "torch", "cuda", "threads_env")
"""Fingerprint fields that must match (as `fp_<name>`), as must any naming threads (the
thread environment, torch's intra- and inter-op counts): the same list as
`machine.COMPARABLE_FIELDS`, kept here so that compare does not import the machine probe."""


@dataclass(frozen=True)
class Metric:
    name: str  # the run column
    label: str
    unit: str
    higher_is_better: bool
    worse: str  # the word for a change in the bad direction
    better: str
    absent: str = ""  # why a run may lack the value, where it is not a fault


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("samples_per_s", "samples/s", "samples/s", True, "slower", "faster"),
        Metric("epoch_s", "epoch time", "s", False, "slower", "faster",
               "no run finished a whole epoch (--steps ended them first); compare samples/s instead"),
        Metric("real_s", "wall time", "s", False, "slower", "faster"),
        Metric("user_s", "user CPU time", "s", False, "more", "less"),
        Metric("sys_s", "system CPU time", "s", False, "more", "less"),
        Metric("peak_rss_mb", "peak RSS", "MB", False, "more", "less"),
        Metric("final_loss", "final loss", "", False, "higher", "lower"),
    )
}
DEFAULT_METRICS = ("samples_per_s", "epoch_s")


class CompareError(UsageError):
    """The two folders cannot be compared (exit status 2, not a regression)."""


class FingerprintMismatch(CompareError):
    def __init__(self, differences: Sequence[str]) -> None:
        self.differences = tuple(differences)
        lines = "\n".join(f"  {d}" for d in self.differences)
        super().__init__(
            "baseline and candidate ran on different setups where it matters for speed:\n"
            f"{lines}\ncompare anyway with --allow-different-machines"
        )


class NothingPaired(CompareError):
    pass


@dataclass(frozen=True)
class MetricCheck:
    """One metric of one configuration, baseline against candidate, with its verdict.

    `ratio` is median(candidate) / median(baseline) of the metric as recorded; `change` is
    the same move as a signed cost, positive meaning worse (0.12 reads as 12 % slower,
    whether the metric is samples/s or seconds). `p_value` is one-sided, in the direction
    the medians moved.
    """

    spec_key: str
    config: str
    metric: str
    verdict: str
    reason: str
    baseline_values: tuple[float, ...]
    candidate_values: tuple[float, ...]
    baseline_median: float = math.nan
    candidate_median: float = math.nan
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    change: float = math.nan
    p_value: float = math.nan
    confidence: float = 0.90  # 1 - 2 alpha: see the module docstring
    band_low: float = math.nan  # final loss only: the widened seed-to-seed band
    band_high: float = math.nan

    @property
    def info(self) -> Metric:
        return METRICS[self.metric]

    def describe_change(self) -> str:
        """'12.3% slower', '4.0% less', 'no change' or 'n/a'."""
        if math.isnan(self.change):
            return "n/a"
        if self.change == 0:
            return "no change"
        word = self.info.worse if self.change > 0 else self.info.better
        return f"{abs(self.change):.1%} {word}"

    @property
    def p_floor(self) -> float:
        """The smallest p the exact rank test can give with these run counts: above alpha, no
        change of any size can be significant."""
        n, m = len(self.baseline_values), len(self.candidate_values)
        return 1 / math.comb(n + m, n) if n and m else 1.0

    def describe_interval(self) -> str:
        if math.isnan(self.ci_low):
            if not math.isnan(self.band_low):
                return f"band {fmt_auto(self.band_low)}–{fmt_auto(self.band_high)}"
            return ""
        return f"×{self.ci_low:.3f}–{self.ci_high:.3f}"

    def __str__(self) -> str:
        parts = [f"{fmt_auto(self.baseline_median)} → {fmt_auto(self.candidate_median)}"]
        if not math.isnan(self.ratio):
            parts.append(f"×{self.ratio:.3f}")
        if not math.isnan(self.ci_low):
            parts.append(f"{percent(self.confidence)} CI ×{self.ci_low:.3f}–{self.ci_high:.3f}")
        if not math.isnan(self.p_value):
            parts.append(f"p={self.p_value:.3g}")
        parts.append(f"{len(self.baseline_values)} vs {len(self.candidate_values)} runs")
        return (
            f"{self.info.label} of {self.config}: {self.describe_change()} "
            f"({', '.join(parts)}): {self.verdict}, {self.reason}"
        )

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = finite({**dataclasses.asdict(self), "label": self.info.label, "summary": str(self)})
        return row


@dataclass(frozen=True)
class Unpaired:
    spec_key: str
    config: str
    reason: str  # absent from one side, or all its runs failed there

    def __str__(self) -> str:
        return f"{self.config} ({self.spec_key}): {self.reason}"


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: a check per paired configuration and metric, what could not be
    paired, and the verdict as the CLI's `exit_code` (0 pass, 1 a regression or failed runs,
    2 what `strict` left unjudged); `to_text`, `to_markdown` and `to_json` render it."""

    checks: tuple[MetricCheck, ...]
    unpaired: tuple[Unpaired, ...] = ()
    fingerprint_differences: tuple[str, ...] = ()  # allowed differences, shown as warnings
    threshold: float = REGRESSION_THRESHOLD
    alpha: float = ALPHA
    metrics: tuple[str, ...] = DEFAULT_METRICS
    contended: tuple[str, ...] = ()  # per configuration with runs beside a busy neighbour, why it was not judged
    strict: bool = False  # a check that could not judge (a busy neighbour, too few runs) fails as infrastructure
    failed: tuple[str, ...] = ()  # per configuration, the candidate's points whose every run failed, and why

    def with_verdict(self, verdict: str) -> list[MetricCheck]:
        return [c for c in self.checks if c.verdict == verdict]

    @property
    def without_values(self) -> list[MetricCheck]:
        """Checks with no values on a side: nothing to judge, and the table alone does not say why."""
        return [c for c in self.checks if not (c.baseline_values and c.candidate_values)]

    @property
    def regressed(self) -> bool:
        return any(c.verdict == REGRESSION for c in self.checks)

    @property
    def unjudged(self) -> str:
        """Under `strict`, why the comparison could not judge: exit 2; "" otherwise."""
        if not self.strict:
            return ""
        if self.contended:
            verb = "has" if len(self.contended) == 1 else "have"
            return (f"{counted(len(self.contended), 'configuration')} {verb} runs measured beside a busy neighbour, "
                    "so they were not judged; --strict makes that an error")
        if self.too_few_runs:
            return f"{self.too_few_runs}; --strict makes a check that cannot fail an error"
        if self.unpaired:
            return (f"{counted(len(self.unpaired), 'configuration')} could not be compared (unpaired); "
                    "--strict makes that an error")
        return ""

    @property
    def exit_code(self) -> int:
        if self.regressed or self.failed:
            return EXIT_FAILED
        return EXIT_USAGE if self.unjudged else EXIT_OK

    @property
    def configs(self) -> int:
        return len({c.spec_key for c in self.checks})

    def __str__(self) -> str:
        counts = []
        for verdict in (REGRESSION, IMPROVEMENT, UNCHANGED, INCONCLUSIVE):
            n = len(self.with_verdict(verdict))
            if n:
                counts.append(f"{n} {_PLURALS.get(verdict, verdict) if n > 1 else verdict}")
        head = ("Regression found" if self.regressed else "Candidate runs failed" if self.failed
                else "Not judged (--strict)" if self.unjudged else "No regression")
        tail = f"; {len(self.unpaired)} unpaired" if self.unpaired else ""
        return (
            f"{head}: {', '.join(counts)} over {counted(self.configs, 'paired configuration')}{tail} "
            f"(threshold {percent(self.threshold)}, {percent(1 - 2 * self.alpha)} intervals, alpha {self.alpha:g})."
        )

    @property
    def too_few_runs(self) -> str:
        """Why some checks could not have found a regression however large: "" if none."""
        blind = [c for c in self.checks if not math.isnan(c.p_value) and c.p_floor > self.alpha]
        if not blind:
            return ""
        worst = max(blind, key=lambda c: c.p_floor)
        return (f"{counted(len(blind), 'check')} cannot find a change of any size: with "
                f"{len(worst.baseline_values)} and {len(worst.candidate_values)} runs the smallest possible p is "
                f"{worst.p_floor:.3g}, above alpha {self.alpha:g}; it takes {runs_for(self.alpha)} runs a side")

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = finite(
            {
                "summary": str(self),
                "too_few_runs": self.too_few_runs,
                "exit_code": self.exit_code,
                "threshold": self.threshold,
                "alpha": self.alpha,
                "metrics": list(self.metrics),
                "fingerprint_differences": list(self.fingerprint_differences),
                "contended": list(self.contended),
                "unpaired": [dataclasses.asdict(u) for u in self.unpaired],
                "failed": list(self.failed),
                "checks": [c.to_dict() for c in self.checks],
            }
        )
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def _lists(self) -> list[tuple[str, str, list[str]]]:
        """The lists under the table: the text's line prefix, the Markdown's heading, the items."""
        return [
            ("regression", "Regressions", [str(c) for c in self.with_verdict(REGRESSION)]),
            ("failed", "Candidate runs that failed", list(self.failed)),
            ("not judged", "Not judged", [f"{c.info.label} of {c.config}: {c.reason}" for c in self.without_values]),
            ("unpaired", "Unpaired configurations", [str(u) for u in self.unpaired]),
            ("warning", "Compared across different setups", list(self.fingerprint_differences)),
        ]

    def to_text(self) -> str:
        lines = [text_table(_HEADERS, [_cells(c) for c in self.checks])] if self.checks else []
        lines += [f"{prefix}: {item}" for prefix, _, items in self._lists() for item in items]
        lines += [f"WARNING: SPEED NOT JUDGED: {note}" for note in self.contended]
        lines += [f"WARNING: {self.too_few_runs}"] if self.too_few_runs else []
        lines.append(str(self))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        icon = ":x:" if self.exit_code else ":white_check_mark:"
        lines = ["## vaebench compare", "", f"{icon} {self}", ""]
        if self.checks:
            lines.append(markdown_table(_HEADERS, [_cells(c) for c in self.checks]))
        for _, heading, items in self._lists():
            if items:
                lines += ["", f"**{heading}**", "", *(f"- {item}" for item in items)]
        if self.contended:
            lines += ["", ":warning: **Speed not judged: runs beside a busy neighbour** "
                      "(a final-loss check, if asked for, still is)", ""]
            lines += [f"- {note}" for note in self.contended]
        if self.too_few_runs:
            lines += ["", f":warning: **Too few runs:** {self.too_few_runs}"]
        return "\n".join(lines) + "\n"


def compare(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    *,
    threshold: float = REGRESSION_THRESHOLD,
    metrics: Sequence[str] = DEFAULT_METRICS,
    alpha: float = ALPHA,
    allow_different_machines: bool = False,
    baseline_series: Mapping[str, RunSeries] | None = None,
    candidate_series: Mapping[str, RunSeries] | None = None,
    seed: int = 0,
) -> Comparison:
    """Check every configuration the two tables share, metric by metric (module docstring).

    The series mappings give each run's step times by run id (`load_step_times`); runs
    without one fall back to their recorded samples/s. Raises FingerprintMismatch when the
    paired runs' setups differ and that is not allowed, NothingPaired when no
    configuration has successful runs on both sides, UsageError on a bad argument.
    """
    if not threshold > 0:
        raise UsageError(f"threshold must be positive, got {threshold}")
    if not 0 < alpha < 0.5:  # a one-sided test past 0.5 would call a coin flip significant
        raise UsageError(f"--alpha must lie in (0, 0.5), got {alpha:g}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    ids = [set(map(str, t["run_id"])) if "run_id" in t.columns else set() for t in (baseline, candidate)]
    if ids[0] and ids[0] == ids[1]:
        raise UsageError("the baseline and the candidate hold the same runs: a comparison of runs with themselves "
                         "passes whatever they are; give the baseline's runs and the candidate's")
    baseline, candidate, several = _pair_by_machine(baseline, candidate, allow_different_machines)
    base_ok, cand_ok = _ok_rows(baseline), _ok_rows(candidate)
    in_candidate = set(_keys(cand_ok))
    paired = [key for key in _keys(base_ok) if key in in_candidate]
    unpaired = _unpaired(baseline, candidate, base_ok, cand_ok)
    if not paired:
        raise NothingPaired(
            "no configuration has successful runs in both folders"
            + "".join(f"\n  {u}" for u in unpaired)
        )
    base_rows = base_ok[base_ok[PAIR].isin(paired)]
    cand_rows = cand_ok[cand_ok[PAIR].isin(paired)]
    differences = fingerprint_differences(base_rows, cand_rows)
    if differences and not allow_different_machines:
        raise FingerprintMismatch(differences)
    other_data = data_differences(base_rows, cand_rows)
    if other_data:
        raise CompareError("baseline and candidate trained on different data files under one data name; "
                           "times and losses on different data are not comparable:\n"
                           + "\n".join(f"  {line}" for line in other_data))
    checks = []
    busy = []
    base_at, cand_at = _pair_positions(base_rows), _pair_positions(cand_rows)
    families = _seed_families(base_ok) if "final_loss" in metrics else {}
    for pair in paired:
        b, c = base_rows.iloc[base_at[pair]], cand_rows.iloc[cand_at[pair]]
        key = str(b["spec_key"].iloc[0])
        config = config_label(b) + (_on_machine(b) if several else "")
        neighbours = contention(config, b, c)
        if neighbours:
            busy.append(neighbours)
        for metric in metrics:
            if metric == "final_loss":
                family = families.get(_seedless(b.iloc[0].to_dict()), [])
                checks.append(check_final_loss(key, config, family, run_values(c, metric)))
                continue
            check = check_metric(
                key,
                config,
                metric,
                run_values(b, metric, baseline_series),
                run_values(c, metric, candidate_series),
                threshold=threshold,
                alpha=alpha,
                seed=seed,
            )
            if neighbours:  # the numbers stay on show; the verdict cannot be read from them
                check = dataclasses.replace(check, verdict=INCONCLUSIVE, reason=f"not judged: {neighbours}")
            checks.append(check)
    return Comparison(
        tuple(checks), tuple(unpaired), tuple(differences), threshold, alpha, tuple(metrics), tuple(busy),
        failed=tuple(failed_points(candidate, several)),
    )


def failed_points(candidate: pd.DataFrame, several: bool = False) -> list[str]:
    """Per configuration, the candidate's points (configuration and repeat) whose every run
    failed, with the reasons: a crash, an out-of-memory kill or a timeout fails the check as a
    slowdown does. A point that failed and then ran again successfully (a resumed sweep) is not one."""
    if candidate.empty or "status" not in candidate.columns or PAIR not in candidate.columns:
        return []
    point = candidate[PAIR].astype(str) + "#" + candidate["repeat"].astype(str)
    done = set(point[candidate["status"] == OK])
    lost = candidate[(candidate["status"] != OK) & ~point.isin(done)]
    lines = []
    for _, rows in lost.groupby(PAIR, sort=False):
        repeats = rows["repeat"].nunique()
        reasons = sorted({str(r) for r in rows.get("reason", []) if isinstance(r, str) and r})
        config = config_label(rows) + (_on_machine(rows) if several else "")
        lines.append(f"{config}: {counted(repeats, 'point')} without a successful run"
                     + (f" ({'; '.join(reasons[:3])})" if reasons else ""))
    return lines


def contention(config: str, baseline: pd.DataFrame, candidate: pd.DataFrame) -> str:
    """Why a configuration's runs cannot be judged for speed, or "": runs of either side that
    were measured beside a busy neighbour (`rules.contended`)."""
    sides = []
    for side, rows in (("baseline", baseline), ("candidate", candidate)):
        values = list(rows["neighbour_cpu_pct"]) if "neighbour_cpu_pct" in rows else []
        busy = [float(v) for v in values if contended(v)]
        if busy:
            sides.append(f"{len(busy)} of {len(rows)} {side} runs (up to {max(busy):.0f}% of a core)")
    if not sides:
        return ""
    return (f"{config}: {' and '.join(sides)} ran beside a busy neighbour, over the {NEIGHBOUR_LIMIT_PCT:.0f}% "
            "limit; rerun on a quiet machine")


def check_metric(
    spec_key: str,
    config: str,
    metric: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    threshold: float = REGRESSION_THRESHOLD,
    alpha: float = ALPHA,
    seed: int = 0,
) -> MetricCheck:
    """The decision rule of the module docstring on one metric's per-run values."""
    info = METRICS[metric]
    check = MetricCheck(
        spec_key, config, metric, INCONCLUSIVE, "", tuple(baseline), tuple(candidate),
        confidence=1 - 2 * alpha,
    )
    if not baseline or not candidate:
        side = "baseline" if not baseline else "candidate"
        absent = f": {info.absent}" if info.absent else ""
        return dataclasses.replace(check, reason=f"the {side} recorded no {info.label}{absent}")
    if min(baseline) <= 0 or min(candidate) <= 0:
        return dataclasses.replace(check, reason=f"{info.label} has values at or below zero")
    base_median, cand_median = stats.median(baseline), stats.median(candidate)
    ratio = cand_median / base_median
    low, high = stats.bootstrap_ratio_ci(baseline, candidate, confidence=check.confidence, seed=seed)
    test = stats.mann_whitney(candidate, baseline)
    if info.higher_is_better:
        cost, cost_low, cost_high = 1 / ratio, 1 / high, 1 / low
        p_worse, p_better = test.p_less, test.p_greater
    else:
        cost, cost_low, cost_high = ratio, low, high
        p_worse, p_better = test.p_greater, test.p_less
    runs = min(len(baseline), len(candidate))
    verdict, reason = _decide(cost, cost_low, cost_high, p_worse, p_better, runs, threshold, alpha)
    if verdict == INCONCLUSIVE and check.p_floor > alpha and (cost >= 1 + threshold or cost <= 1 / (1 + threshold)):
        reason = (f"past the {percent(threshold)} threshold, but {len(baseline)} and {len(candidate)} runs cannot "
                  f"reach p ≤ {alpha:g} (the smallest possible p is {check.p_floor:.3g}); it takes {runs_for(alpha)} "
                  "a side")
    elif verdict == UNCHANGED and check.p_floor > alpha:  # what cannot be found cannot be ruled out either
        verdict = INCONCLUSIVE
        reason = (f"{len(baseline)} and {len(candidate)} runs can neither find nor rule out a change "
                  f"(the smallest possible p is {check.p_floor:.3g}); it takes {runs_for(alpha)} a side")
    return dataclasses.replace(
        check,
        verdict=verdict,
        reason=reason,
        baseline_median=base_median,
        candidate_median=cand_median,
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        change=cost - 1,
        p_value=p_worse if cost >= 1 else p_better,
    )


def runs_for(alpha: float) -> int:
    """Runs a side for the exact one-sided rank test to be able to reach p <= alpha."""
    runs = 1
    while 1 / math.comb(2 * runs, runs) > alpha:
        runs += 1
    return runs


def _decide(
    cost: float,
    cost_low: float,
    cost_high: float,
    p_worse: float,
    p_better: float,
    runs: int,
    threshold: float,
    alpha: float,
) -> tuple[str, str]:
    limit = 1 + threshold
    past = f"past the {percent(threshold)} threshold"
    if cost >= limit and p_worse <= alpha:
        return REGRESSION, f"{past} and significant (p ≤ {alpha:g})"
    if cost <= 1 / limit and p_better <= alpha:
        return IMPROVEMENT, f"{past} and significant (p ≤ {alpha:g})"
    if runs < 2:
        return INCONCLUSIVE, "too few runs to judge the noise (need 2 a side)"
    if 1 / limit <= cost_low and cost_high <= limit:
        if min(p_worse, p_better) <= alpha:
            return UNCHANGED, f"a significant change, but the interval rules out one {past}"
        return UNCHANGED, f"the interval rules out a change {past}"
    if cost >= limit or cost <= 1 / limit:
        return INCONCLUSIVE, f"{past} but not significant; add repeats"
    return INCONCLUSIVE, f"within the threshold, but the interval reaches {past}"


def check_final_loss(
    spec_key: str, config: str, baseline_family: Sequence[float], candidate: Sequence[float]
) -> MetricCheck:
    """Flag a candidate whose median final loss leaves the baseline's seed-to-seed band.

    The band is the range of final losses over the baseline's runs of this configuration and
    of every configuration that differs from it only in seed, widened on each side by
    `LOSS_BAND_WIDEN` of its width or `LOSS_BAND_FLOOR` of the median loss, whichever is
    more. A speed change should leave the numbers alone, so leaving the band either way is a
    regression: a lower loss from the same spec means the computation changed too.
    """
    check = MetricCheck(
        spec_key, config, "final_loss", INCONCLUSIVE, "", tuple(baseline_family), tuple(candidate)
    )
    if not baseline_family or not candidate:
        side = "baseline" if not baseline_family else "candidate"
        return dataclasses.replace(check, reason=f"the {side} recorded no final loss")
    low, high = min(baseline_family), max(baseline_family)
    base_median, cand_median = stats.median(baseline_family), stats.median(candidate)
    margin = max(LOSS_BAND_WIDEN * (high - low), LOSS_BAND_FLOOR * abs(base_median))
    band_low, band_high = low - margin, high + margin
    inside = band_low <= cand_median <= band_high
    return dataclasses.replace(
        check,
        verdict=UNCHANGED if inside else REGRESSION,
        reason="within the seed-to-seed band" if inside else "outside the seed-to-seed band",
        baseline_median=base_median,
        candidate_median=cand_median,
        ratio=cand_median / base_median if base_median else math.nan,
        change=(cand_median - base_median) / abs(base_median) if base_median else math.nan,
        band_low=band_low,
        band_high=band_high,
    )


def fingerprint_differences(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[str]:
    """One line per guarded `fp_` column whose values differ between the two tables."""
    columns = sorted(c for c in {*baseline.columns, *candidate.columns} if _guarded(c))
    differences = []
    for column in columns:
        ours, theirs = _fp_values(baseline, column), _fp_values(candidate, column)
        if ours != theirs:
            differences.append(f"{column}: baseline {_show(ours)}, candidate {_show(theirs)}")
    return differences


def data_differences(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[str]:
    """One line per paired configuration whose runs read different training files (`data_digest`);
    records from before the digest was kept are taken as matching."""
    if "data_digest" not in baseline.columns or "data_digest" not in candidate.columns:
        return []
    lines = []
    base_at, cand_at = _pair_positions(baseline), _pair_positions(candidate)
    for pair, at in base_at.items():
        sides = [(baseline, at), (candidate, cand_at.get(pair, []))]
        digests = [set(frame["data_digest"].iloc[rows].dropna().astype(str)) for frame, rows in sides]
        if len(digests[0] | digests[1]) > 1:
            lines.append(f"{config_label(baseline.iloc[at])}: baseline {', '.join(sorted(digests[0])) or 'unknown'}, "
                         f"candidate {', '.join(sorted(digests[1])) or 'unknown'}")
    return lines


def run_values(
    runs: pd.DataFrame, metric: str, series: Mapping[str, RunSeries] | None = None
) -> list[float]:
    """One value per run with the metric recorded; samples/s from the step times when given."""
    values = []
    # Only the columns read here: a record has some 170, and converting them all for every
    # configuration, metric and side took most of a large comparison's time.
    columns = [c for c in dict.fromkeys((*_VALUE_COLUMNS, metric)) if c in runs.columns]
    for row in runs[columns].to_dict("records"):
        value = _steady_samples_per_s(row, series) if metric == "samples_per_s" and series else None
        if value is None:
            value = row.get(metric)
        if math.isfinite(number(value)):
            values.append(float(value))
    return values


_VALUE_COLUMNS = ("run_id", "warmup_steps", "batch_size", "samples")  # what `_steady_samples_per_s` reads of a run


def load_step_times(folder: str | os.PathLike[str], run_ids: Sequence[str]) -> dict[str, RunSeries]:
    """The step series of each run whose series file exists; a corrupt file is a UsageError
    (`storage.load_series` checks every field)."""
    from ..storage import SERIES_DIR, load_series

    return {run_id: dataclasses.replace(load_series(folder, run_id), monitor=[]) for run_id in run_ids
            if (Path(folder) / SERIES_DIR / f"{run_id}.json").exists()}


def _steady_samples_per_s(row: Mapping[str, Any], series: Mapping[str, RunSeries]) -> float | None:
    """samples/s by the loop's own steady-state rule, from the raw steps; older series without
    per-step samples count what each step held by the loaders' rule (`spec.samples_per_step`: a
    batch is at most the epoch, the last one ragged), not the configured batch."""
    found = series.get(str(row.get("run_id")))
    warmup, batch = row.get("warmup_steps"), row.get("batch_size")
    if found is None or not found.step_ms or not math.isfinite(number(warmup)) or not math.isfinite(number(batch)):
        return None
    epoch = number(row.get("samples"))
    if not found.step_samples and not (math.isfinite(epoch) and epoch >= 1 and number(batch) >= 1):
        return None
    samples = found.step_samples or samples_per_step(int(epoch), int(number(batch)), len(found.step_ms))
    rate = steady_rate(found.step_ms, samples, int(warmup or 0), set(found.excluded_steps))
    return rate if rate > 0 else None


PAIR = "_pair"  # the column runs are paired on: the spec key, and the machine where that is asked


def _pair_by_machine(
    baseline: pd.DataFrame, candidate: pd.DataFrame, allow_different: bool
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Add the pairing column. Folders filled by many hosts pair like machine with like: where the
    two sides share a machine (every guarded fingerprint field equal), a configuration is paired
    per machine, and runs on a machine the other side lacks are left unpaired. Where they share
    none (or differences are allowed), pairing is by configuration alone, and the fingerprint
    guard speaks. Returns the tables and whether several machines were paired."""
    columns = sorted(c for c in {*baseline.columns, *candidate.columns} if _guarded(c))

    def machine(frame: pd.DataFrame) -> list[str]:
        return ["|".join(_fp_text(row.get(c)) for c in columns) for row in frame.to_dict("records")]

    base_machines, cand_machines = machine(baseline), machine(candidate)
    ok_machines = [
        {m for m, ok in zip(machines, _ok_mask(frame), strict=True) if ok}
        for machines, frame in ((base_machines, baseline), (cand_machines, candidate))
    ]
    known = sorted(ok_machines[0] | ok_machines[1])
    base_machines, cand_machines = (
        [m if ok else _fill_in(m, known) for m, ok in zip(machines, _ok_mask(frame), strict=True)]
        for machines, frame in ((base_machines, baseline), (cand_machines, candidate))
    )
    common = ok_machines[0] & ok_machines[1]
    by_machine = bool(common) and not allow_different
    tables = []
    for frame, machines in ((baseline, base_machines), (candidate, cand_machines)):
        keys = list(frame["spec_key"].astype(str)) if "spec_key" in frame.columns else []
        pairs = [f"{k}@{m}" if by_machine else k for k, m in zip(keys, machines, strict=False)]
        tables.append(frame.assign(**{PAIR: pairs}) if "spec_key" in frame.columns else frame)
    return tables[0], tables[1], by_machine and len(common) > 1


def _fill_in(machine: str, known: Sequence[str]) -> str:
    """A failed run's machine, whose record may lack fields a finished run writes (the torch
    threads it never reached): the one machine of the successful runs it agrees with on every
    field it has, or its own where there is not exactly one."""
    fields = machine.split("|")
    matches = [m for m in known if all(f in ("absent", g) for f, g in zip(fields, m.split("|"), strict=True))]
    return matches[0] if len(matches) == 1 else machine


def _ok_mask(frame: pd.DataFrame) -> list[bool]:
    if "status" not in frame.columns:
        return [True] * len(frame)
    return [status == OK for status in frame["status"]]


def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The successful runs of a side `_pair_by_machine` has given its pairing column."""
    if frame.empty or PAIR not in frame.columns:
        return frame.iloc[0:0].assign(spec_key=[], **{PAIR: []})
    if "status" in frame.columns:
        return frame[frame["status"] == OK]
    return frame


def _keys(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame[PAIR])) if PAIR in frame.columns else []


def _pair_positions(frame: pd.DataFrame) -> dict[str, list[int]]:
    """The row positions of each pairing key, keys in the order they first appear: one pass over
    the table, where selecting each key's rows by a mask reads every row once per key."""
    positions: dict[str, list[int]] = {}
    for at, key in enumerate(frame[PAIR] if PAIR in frame.columns else []):
        positions.setdefault(key, []).append(at)
    return positions


def _unpaired(
    baseline: pd.DataFrame, candidate: pd.DataFrame, base_ok: pd.DataFrame, cand_ok: pd.DataFrame
) -> list[Unpaired]:
    """Every configuration that has runs somewhere but no successful run on one side."""
    ok_keys = set(_keys(base_ok)), set(_keys(cand_ok))
    at = _pair_positions(baseline), _pair_positions(candidate)
    result = []
    for key in dict.fromkeys([*at[0], *at[1]]):
        if key in ok_keys[0] and key in ok_keys[1]:
            continue
        sides = zip(("baseline", "candidate"), at, ok_keys, strict=True)
        reasons = [r for side, runs, ok in sides if (r := _absence(side, len(runs.get(key, [])), key in ok))]
        rows = baseline.iloc[at[0][key]] if key in at[0] else candidate.iloc[at[1][key]]
        label = config_label(rows) + (_on_machine(rows) if "@" in key else "")  # paired per machine: say which
        result.append(Unpaired(str(rows.iloc[0]["spec_key"]), label, "; ".join(reasons)))
    return result


def _on_machine(rows: pd.DataFrame) -> str:
    return f" @ {machine_label(rows.iloc[0].to_dict()) or 'unknown machine'}"


def _absence(side: str, total: int, any_ok: bool) -> str:
    """Why a side has no successful run of a configuration (`total` runs there), or ""."""
    if total == 0:
        return f"absent from the {side}"
    if not any_ok:
        return f"{'the' if total == 1 else 'all'} {counted(total, 'run')} failed in the {side}"
    return ""


def config_label(rows: pd.DataFrame) -> str:
    """The first row's spec as `field=value,...` over its non-default fields."""
    try:
        return RunSpec.from_dict(rows.iloc[0].to_dict()).label() or "default"
    except (TypeError, ValueError):
        return str(rows.iloc[0]["spec_key"])


def _seed_families(baseline_ok: pd.DataFrame) -> dict[str, list[float]]:
    """The final losses of the baseline's runs by their spec without its seed (`_seedless`): a
    configuration's seed family is the list under its own seedless key."""
    families: dict[str, list[float]] = {}
    for row in baseline_ok.to_dict("records"):
        family = families.setdefault(_seedless(row), [])
        if math.isfinite(number(row.get("final_loss"))):
            family.append(float(row["final_loss"]))
    return families


def _seedless(row: Mapping[str, Any]) -> str:
    try:
        return dataclasses.replace(RunSpec.from_dict(row), seed=0).key()
    except (TypeError, ValueError):
        return str(row.get("spec_key"))


def _guarded(column: str) -> bool:
    if not column.startswith("fp_"):
        return False
    name = column[3:]
    return name in GUARDED_FINGERPRINT or "thread" in name


def _fp_values(frame: pd.DataFrame, column: str) -> frozenset[str]:
    if column not in frame.columns:
        return frozenset({"absent"})
    return frozenset(_fp_text(v) for v in frame[column])


def _fp_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "absent"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _show(values: frozenset[str]) -> str:
    return " or ".join(repr(v) if v != "absent" else "absent" for v in sorted(values))


_HEADERS = (
    "configuration",
    "metric",
    "baseline",
    "candidate",
    "change",
    "ratio CI",
    "p",
    "runs",
    "verdict",
)


def _cells(check: MetricCheck) -> list[str]:
    return [
        check.config,
        check.info.label,
        fmt_auto(check.baseline_median),
        fmt_auto(check.candidate_median),
        check.describe_change(),
        check.describe_interval(),
        "" if math.isnan(check.p_value) else f"{check.p_value:.3g}",
        f"{len(check.baseline_values)}/{len(check.candidate_values)}",
        check.verdict,
    ]
