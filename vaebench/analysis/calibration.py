"""How noisy is this runner? The analysis half of `vaebench calibrate`.

Given A/A repeats of one configuration (the same spec run many times, ideally interleaved
with other work so slow drifts show up as noise), report each metric's noise floor and the
smallest slowdown `compare` would call significant at a given number of repeats, so a CI
user sets `--threshold` and the repeat count from data instead of guessing. The sweep that
produces the runs lives elsewhere; this module only reads a table of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import stats
from .._format import counted, fmt, fmt_auto, text_table
from ..result import OK, RunSeries
from ..rules import ALPHA, NEIGHBOUR_LIMIT_PCT, contended
from .compare import METRICS, config_label, run_values

if TYPE_CHECKING:
    import pandas as pd

FEW_RUNS = 10
CALIBRATED_METRICS = ("samples_per_s", "epoch_s", "real_s", "user_s", "sys_s", "peak_rss_mb")


@dataclass(frozen=True)
class MetricNoise:
    """One metric's run-to-run noise, and what `compare` can detect through it.

    `detectable` pairs a repeat count (runs on each side) with the smallest relative
    slowdown found with the report's power, under a log-normal noise model whose sd is
    `log_sd` (see `stats.min_detectable_slowdown`); inf means never at that count.
    """

    metric: str
    runs: int
    median: float
    rel_iqr: float
    cv: float
    log_sd: float
    detectable: tuple[tuple[int, float], ...]

    def repeats_for(self, threshold: float) -> int | None:
        """The fewest listed repeats whose detectable slowdown is within `threshold`."""
        return next((n for n, d in self.detectable if d <= threshold), None)


@dataclass(frozen=True)
class CalibrationReport:
    spec_key: str
    config: str
    runs: int
    alpha: float
    power: float
    metrics: tuple[MetricNoise, ...]

    def to_text(self, threshold: float | None = None) -> str:
        repeats = [n for n, _ in self.metrics[0].detectable] if self.metrics else []
        headers = ["metric", "median", "rel IQR", "CV", *[f"n={n}" for n in repeats]]
        rows = [
            [
                METRICS[m.metric].label,
                fmt_auto(m.median),
                fmt(m.rel_iqr, "{:.1%}"),
                fmt(m.cv, "{:.1%}"),
                *[_detectable(d) for _, d in m.detectable],
            ]
            for m in self.metrics
        ]
        lines = [
            f"Noise of {self.config} ({self.spec_key}) over {self.runs} A/A runs; smallest "
            f"slowdown compare detects with {self.power:.0%} power at alpha {self.alpha:g}, "
            "n runs a side:",
            text_table(headers, rows),
        ]
        steady = [METRICS[m.metric].label for m in self.metrics if m.log_sd == 0]
        if steady:
            lines.append(f"any: {', '.join(steady)} did not vary at all over these runs, so any change of it "
                         "can be significant")
        if self.runs < FEW_RUNS:
            lines.append(
                f"note: a noise level from {self.runs} runs is itself uncertain; "
                f"{FEW_RUNS} or more A/A runs give a floor worth setting a threshold by"
            )
        if threshold is not None:
            for m in self.metrics:
                n = m.repeats_for(threshold)
                advice = f"{n} repeats suffice" if n else "more repeats than listed are needed"
                label = METRICS[m.metric].label
                lines.append(f"{label}: for a {threshold:.0%} threshold, {advice}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _detectable(slowdown: float) -> str:
    """A cell of the n= columns: 'never' where no slowdown can be significant, 'any' where the
    runs did not vary at all."""
    if not math.isfinite(slowdown):
        return "never"
    return "any" if slowdown == 0 else fmt(slowdown, "{:.1%}")


def calibration_report(
    runs: pd.DataFrame,
    repeats: Sequence[int] = (3, 5, 10, 20),
    *,
    metrics: Sequence[str] = CALIBRATED_METRICS,
    alpha: float = ALPHA,
    power: float = 0.8,
    series: Mapping[str, RunSeries] | None = None,
) -> CalibrationReport:
    """Noise floor and detectable slowdown of each metric over A/A runs of one configuration.

    Only successful runs count; metrics with fewer than two positive values are left out.
    Raises ValueError unless the successful runs share one spec key and number at least 2.
    """
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    keys = list(dict.fromkeys(ok["spec_key"])) if "spec_key" in ok.columns else []
    if len(keys) != 1:
        raise ValueError(
            f"calibration needs successful runs of exactly one configuration, got {len(keys)}"
        )
    if len(ok) < 2:
        raise ValueError(f"calibration needs at least 2 successful runs, got {len(ok)}")
    noises = []
    for metric in metrics:
        values = [v for v in run_values(ok, metric, series) if v > 0]
        if len(values) < 2:
            continue
        noise = stats.log_sd(values)
        detectable = tuple(
            (n, stats.min_detectable_slowdown(noise, n, alpha=alpha, power=power)) for n in repeats
        )
        noises.append(
            MetricNoise(
                metric,
                len(values),
                stats.median(values),
                stats.relative_iqr(values),
                stats.cv(values),
                noise,
                detectable,
            )
        )
    return CalibrationReport(keys[0], config_label(ok), len(ok), alpha, power, tuple(noises))


def recommend(
    report: CalibrationReport,
    repeats: int,
    *,
    metrics: Sequence[str] = ("samples_per_s", "epoch_s"),
    source: str = "",
) -> str:
    """A threshold and repeat count for `compare`, read off the report, as one paragraph;
    `source` says where `repeats` comes from (the sweep file's, which its CI job runs).

    The threshold offered is the largest detectable slowdown, at `repeats` runs a side, over
    `metrics` (compare's defaults), rounded up to a whole percent: below it a real slowdown
    is often not significant. A slowdown close to the threshold is caught only about half the
    time, since its measured ratio must clear the threshold too, so the advice says so.
    """
    chosen = [m for m in report.metrics if m.metric in metrics]
    if not chosen:
        return "recommendation: none; no run recorded " + " or ".join(metrics)
    noises = [m.log_sd for m in chosen]
    worst = max(stats.min_detectable_slowdown(s, repeats, alpha=report.alpha, power=report.power) for s in noises)
    runs = f"{counted(repeats, 'run')} a side" + (f" ({source})" if source else "")
    if not math.isfinite(worst):
        return (
            f"recommendation: {runs} can never be significant at alpha "
            f"{report.alpha:g}; use {fewest_significant(report, repeats)} or more"
        )
    threshold = max(math.ceil(worst * 100), 1) / 100
    return (
        f"recommendation: with {runs}, use --threshold {threshold:.0%} or more "
        f"(the slowdown {' and '.join(METRICS[m.metric].label for m in chosen)} reveal with "
        f"{report.power:.0%} power at that count is {worst:.1%}). A true slowdown near the threshold is caught "
        "only about half the time, since its measured ratio must clear the threshold too: to catch slowdowns "
        "of size S nearly always, set the threshold near S/2 and the repeats where the n= column above is "
        "below it."
    )


def fewest_significant(report: CalibrationReport, above: int) -> int:
    """The fewest runs a side, more than `above`, at which a slowdown can be significant: the
    report's first such n= column, or the rank test's own floor past its columns."""
    from .compare import runs_for

    counts = [n for n, d in (report.metrics[0].detectable if report.metrics else []) if n > above and math.isfinite(d)]
    return min(counts, default=max(above + 1, runs_for(report.alpha)))


@dataclass(frozen=True)
class FolderCalibration:
    report: CalibrationReport | None  # None with fewer than two successful runs
    ok: int
    failed: list[str]  # "run_id: reason" of each failed repeat
    contended: list[float] = field(default_factory=list)  # neighbour_cpu_pct of each ok run beside a busy one
    beyond: int = 0  # runs of the configuration in the folder past --repeats, left out

    @property
    def left_out(self) -> str:
        """Which runs the folder holds that this calibration did not use: "" for none."""
        if not self.beyond:
            return ""
        return (f"the folder holds {counted(self.beyond, 'more run')} of this configuration, past --repeats; "
                f"--repeats {self.ok + len(self.failed) + self.beyond} would use them too")

    @property
    def warning(self) -> str:
        """Why the noise floor may be a neighbour's, not the machine's: "" for quiet runs."""
        if not self.contended:
            return ""
        return (f"{len(self.contended)} of {self.ok} runs ran beside a busy neighbour (processes outside them used "
                f"up to {max(self.contended):.0f}% of a core, limit {NEIGHBOUR_LIMIT_PCT:.0f}%): the noise below is "
                "partly the neighbour's; calibrate on a quiet machine, as CI would run")


def calibrate_folder(folder: Path, key: str, repeats: int, advise_for: int) -> FolderCalibration:
    """The noise of one configuration's first `repeats` runs in a results folder (the same
    runs whatever else the folder holds, so a calibration can be rerun and read again)."""
    from .. import storage
    from .compare import load_step_times

    runs = storage.load_runs(folder)
    runs = runs[runs["spec_key"] == key]
    beyond = int((runs["repeat"] >= repeats).sum())
    runs = runs[runs["repeat"] < repeats]
    ok = runs[runs["status"] == OK]
    failed = [f"{row.run_id}: {row.reason}" for row in runs[runs["status"] != OK].itertuples()]
    if len(ok) < 2:
        return FolderCalibration(None, len(ok), failed, beyond=beyond)
    sizes = sorted({3, 5, 10, 20, advise_for})
    report = calibration_report(ok, repeats=sizes, series=load_step_times(folder, [str(i) for i in ok["run_id"]]))
    busy = [float(v) for v in ok.get("neighbour_cpu_pct", ()) if contended(v)]
    return FolderCalibration(report, len(ok), failed, busy, beyond)
