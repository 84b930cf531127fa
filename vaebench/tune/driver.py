"""A whole tune: search the batch size, try the pipeline knobs at the best one, guard quality.

Three stages share one time budget. The batch search gets the first `SEARCH_SHARE` of it
(in one warm process, or as isolated runs), the knobs run until `KNOB_SHARE`, and the
quality guard uses the rest. Every knob trial and quality run is an isolated
`measure.run.run_once` stored in the results folder, so `vaebench report` reads it like a sweep.
A stage that meets the deadline stops cleanly, keeps what it measured, and says so; an interrupt
(Ctrl-C, SIGTERM, SIGHUP) keeps the trials that finished too, and recommends nothing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._format import counted
from ..errors import STOPS, Interrupted, signal_of
from ..measure.run import RunOptions, run_once
from ..result import DataInfo, RunRecord
from ..rules import NEIGHBOUR_LIMIT_PCT, contended
from ..spec import SPEED_KNOBS, Capabilities, RunSpec, format_value
from ..storage import RUNS_FILE
from .search import (
    KNOB_GAIN,
    REFERENCE_BATCH,
    START_BATCH,
    Clock,
    Measure,
    Recommendation,
    SearchResult,
    Trial,
    knob_groups,
    recommend,
    scaled_lr,
    search_batch,
    trial_spec,
)

SEARCH_SHARE = 0.4
KNOB_SHARE = 0.6
STARTUP_S = 4.0  # an isolated run's start-up before its first step, on a small machine
MIN_QUALITY_RUNS = 2  # the reference batch and one candidate
QUALITY_CANDIDATES = 3  # the fastest batch sizes that get a quality run beside the reference
SWEEP_NAME = "tune"
TUNE_SAMPLES = 16_384  # samples per epoch: enough for batches up to 16k, quick quality runs
QUALITY_EPOCHS = 4  # the quality guard's runs: long enough for the losses to part, short beside the search

Run = Callable[[RunSpec, DataInfo, RunOptions], RunRecord]
Screen = Callable[..., SearchResult]
Report = Callable[[str], None]


@dataclass(frozen=True)
class TuneSettings:
    base: RunSpec  # device, data, samples and any knob the user fixed
    budget_s: float = 600.0
    max_batch: int = 65_536
    start_batch: int = START_BATCH
    target_loss: float | None = None
    lr_scaling: str = "none"
    include: tuple[str, ...] = ()
    quality_samples: int | None = None  # None: QUALITY_EPOCHS of the base's samples
    tolerance: float = 0.02  # how much worse than batch 128's loss a recommendation may be
    isolated: bool = False  # every search trial its own process, instead of one warm screen

    @property
    def quality_budget(self) -> int:
        return self.quality_samples or QUALITY_EPOCHS * self.base.samples


def minimum_budget_s() -> float:
    """The shortest budget a tune can possibly fit: the quality guard's share must hold the
    start-up of `MIN_QUALITY_RUNS` isolated runs, the search's share that of its process."""
    return max(MIN_QUALITY_RUNS * STARTUP_S / (1 - KNOB_SHARE), STARTUP_S / SEARCH_SHARE)


@dataclass
class TuneResult:
    settings: TuneSettings
    search: SearchResult
    knobs: list[Trial] = field(default_factory=list)
    quality: list[Trial] = field(default_factory=list)
    recommendation: Recommendation = field(default_factory=lambda: Recommendation(None, "nothing ran"))
    config: RunSpec | None = None  # the best pipeline found, at the best batch
    adopted: list[str] = field(default_factory=list)  # each knob the knob stage kept, with its measured gain
    notes: list[str] = field(default_factory=list)
    wall_s: float = math.nan
    quality_short_s: float = 0.0  # expected seconds of the quality runs the budget left out
    quality_start_s: float = math.nan  # when the quality guard began, in seconds since the start
    interrupted: int | None = None  # the signal that stopped the tune, if one did: nothing is recommended

    @property
    def trials(self) -> list[Trial]:
        return [*self.search.trials, *self.knobs, *self.quality]

    def raise_if_nothing_kept(self) -> None:
        """`Interrupted` now, when the tune was stopped before any trial finished: nothing to write."""
        if self.interrupted is not None and not self.trials:
            raise Interrupted(self.interrupted, "interrupted before any trial finished, so there is nothing to "
                              "report on: the same command starts the tune over")

    def raise_if_interrupted(self, written: Path) -> None:
        """`Interrupted`, with the signal that stopped the tune, when one did; `written` is the
        tune.md of the trials that finished."""
        if self.interrupted is None:
            return
        out = written.parent
        isolated = sum(1 for t in self.trials if t.run_id)
        runs = (f", and its {counted(isolated, 'isolated run')} in {out / RUNS_FILE}, which `vaebench report {out}` "
                "reads") if isolated else ""
        raise Interrupted(self.interrupted, f"interrupted; what finished is kept: the tune's trials so far in "
                          f"{written}, with no recommendation{runs}; the same command starts the tune over")


def trial_from_record(record: RunRecord, stage: str) -> Trial:
    train, process, monitor = record.train, record.process, record.monitor
    return Trial(
        spec=record.spec,
        status=record.status,
        reason=record.reason,
        samples_per_s=train.samples_per_s if train else math.nan,
        gpu_util=monitor.gpu_util_mean,  # the monitor's mean over the training window
        device_mem_mb=monitor.gpu_mem_max_mb if record.spec.is_cuda else math.nan,
        rss_peak_mb=process.peak_rss_mb if process else math.nan,
        wall_s=process.real_s if process else math.nan,
        stage=stage,
        run_id=record.run_id,
        final_loss=train.final_loss if train else math.nan,
        epoch_losses=tuple(train.epoch_losses) if train else (),
        epoch_times_s=tuple(train.epoch_times_s) if train else (),
        neighbour_cpu_pct=monitor.neighbour_cpu_pct,
    )


def isolated(data: DataInfo, options: RunOptions, stage: str, run: Run | None = None) -> Measure:
    """A `measure` that runs each spec as its own stored run (`run_once` unless `run` is given)."""
    run = run or run_once  # looked up at call time, so that a test can stand in a fake runner

    def measure(spec: RunSpec) -> Trial:
        return trial_from_record(run(spec, data, dataclasses.replace(options, sweep=SWEEP_NAME)), stage)

    return measure


def tune(
    settings: TuneSettings,
    data: DataInfo,
    options: RunOptions,
    caps: Capabilities,
    *,
    report: Report = print,
    clock: Clock = time.monotonic,
    run: Run | None = None,
    screen: Screen | None = None,
) -> TuneResult:
    run = run or run_once
    start = clock()
    budget = settings.budget_s
    base = settings.base
    # A batch larger than an epoch is meaningless, so the epoch caps the search. On a large GPU
    # this model reaches that cap long before memory runs out; the memory note says which ended it.
    max_batch = min(settings.max_batch, base.samples)
    if base.samples <= settings.max_batch:
        limit = f"the epoch size ({base.samples} samples; a larger batch is meaningless)"
    else:
        limit = f"--max-batch {settings.max_batch}"

    if settings.isolated:
        search = search_batch(base, isolated(data, options, "climb", run), max_batch=max_batch,
                              start=settings.start_batch, clock=clock, deadline=start + SEARCH_SHARE * budget,
                              report=lambda t: report(t.describe()))
    else:
        if screen is None:
            from .screen import screen as one_process
            screen = one_process
        search = screen(base, data, work=Path(options.out) / "screen", max_batch=max_batch,
                        start=settings.start_batch, budget_s=SEARCH_SHARE * budget)
    search.limit = limit
    result = TuneResult(settings, search)
    report(f"batch search: {search.stop_reason}")
    best = search.best
    if search.interrupted is not None:
        return _finish(_stopped(result, search.interrupted, "the batch search"), report, clock() - start)
    if best is None:
        result.recommendation = Recommendation(None, f"no batch size ran: {search.stop_reason}")
        result.wall_s = clock() - start
        return result

    try:
        config = _tune_knobs(result, best, data, options, caps, run, report, clock, start + KNOB_SHARE * budget)
        result.config = config
        _guard_quality(result, config, data, options, run, report, clock, start + budget)
    except STOPS as stop:  # the run in progress is lost; those that finished are in `result`
        stage = "the quality guard" if math.isfinite(result.quality_start_s) else "the pipeline knobs"
        return _finish(_stopped(result, signal_of(stop), stage), report, clock() - start)
    result.recommendation = recommend(result.quality, tolerance=settings.tolerance, target=settings.target_loss,
                                      max_batch=settings.max_batch)
    if result.recommendation.trial is not None and result.adopted:
        rec = result.recommendation
        result.recommendation = Recommendation(rec.trial, f"{rec.reason}; with {'; '.join(result.adopted)}",
                                               rec.rejected)
    if result.recommendation.trial is None and result.quality_short_s > 0:
        kept = [t for t in [best, *result.knobs] if t.ok and (t is best or t.spec == config)]  # not a rejected knob
        fastest = max(kept, key=lambda t: t.samples_per_s)
        result.recommendation = Recommendation(
            None, f"the time budget ran out before the quality guard could check the "
            f"fastest batch found ({fastest.batch}, {fastest.samples_per_s:.0f} samples/s) against batch "
            f"{REFERENCE_BATCH}; this tune needs about --budget {needed_budget_s(result, budget):.0f}s")
    return _finish(result, report, clock() - start)


def _stopped(result: TuneResult, signum: int, stage: str) -> TuneResult:
    """The tune as far as it got when signal `signum` stopped it in `stage`: nothing recommended."""
    result.interrupted = signum
    result.recommendation = Recommendation(None, f"interrupted during {stage}, before the quality guard could "
                                           "judge a candidate; the trials are those that finished")
    return result


def _finish(result: TuneResult, report: Report, wall_s: float) -> TuneResult:
    """The busy-neighbour note, the recommendation said, and the tune's wall time."""
    busy = [t.neighbour_cpu_pct for t in result.trials if contended(t.neighbour_cpu_pct)]
    if busy:
        result.notes.insert(0, f"{counted(len(busy), 'run')} of this tune ran beside a busy neighbour (processes "
                            f"outside them used up to {max(busy):.0f}% of a core, limit {NEIGHBOUR_LIMIT_PCT:.0f}%): "
                            "the rates, the knobs' gains and the time estimates may be the neighbour's; tune on "
                            "a quiet machine")
    report(f"recommendation: {'' if result.recommendation.trial else 'none: '}{result.recommendation.reason}")
    result.wall_s = wall_s
    return result


def needed_budget_s(result: TuneResult, budget_s: float) -> float:
    """A budget that would have fit the quality runs left out: what ran before them and all of
    them, and enough that the knobs (which may use up to `KNOB_SHARE` of it) leave them room.
    Rounded up to ten seconds."""
    ran = [t.wall_s for t in result.quality if not math.isnan(t.wall_s)]
    quality_s = result.quality_short_s + sum(ran)
    before = result.quality_start_s if math.isfinite(result.quality_start_s) else KNOB_SHARE * budget_s
    needed = max(before + quality_s, quality_s / (1 - KNOB_SHARE), budget_s + result.quality_short_s)
    return 10.0 * math.ceil(needed / 10.0)


def _tune_knobs(
    result: TuneResult, best: Trial, data: DataInfo, options: RunOptions, caps: Capabilities,
    run: Run, report: Report, clock: Clock, deadline: float,
) -> RunSpec:
    """Greedy, one knob at a time at the best batch; a knob is adopted when it clearly wins."""
    measure = isolated(data, options, "knob", run)
    confirm = isolated(data, options, "confirm", run)
    current = confirm(trial_spec(best.spec, best.batch))
    result.knobs.append(current)
    report(current.describe())
    if not current.ok:
        result.notes.append(f"the best batch failed when run on its own: {current.reason}")
        return current.spec
    include = result.settings.include
    groups = [group for group, _ in knob_groups(current.spec, caps, include)]
    for index, group in enumerate(groups):
        # Alternatives are rebuilt around the current winner, so adopted knobs carry forward.
        for position, spec in enumerate(dict(knob_groups(current.spec, caps, include)).get(group, [])):
            if clock() >= deadline:
                result.notes.append(_untried(groups[index:], part_tried=position > 0))
                return current.spec
            trial = measure(trial_spec(spec, best.batch))
            result.knobs.append(trial)
            report(trial.describe())
            if not (trial.ok and trial.samples_per_s > current.samples_per_s * (1 + KNOB_GAIN)):
                continue
            pair = _recheck(result, current, trial, measure, confirm, report, clock, deadline)
            if pair is None:
                continue
            result.adopted = [a for a in result.adopted if not a.startswith(f"{group}: ")]
            result.adopted.append(f"{group}: {changed(current.spec, trial.spec)} measured {pair}, at batch "
                                  f"{best.batch}")
            current = trial
    return current.spec


def _untried(left: Sequence[str], *, part_tried: bool) -> str:
    """The budget note for the knobs left: the one it stopped in may have had some tried."""
    if part_tried:
        rest = f"; not tried: {', '.join(left[1:])}" if len(left) > 1 else ""
        return f"time budget: {left[0]} was tried in part{rest}; a larger --budget tries them"
    return f"time budget: not tried: {', '.join(left)}; a larger --budget tries them"


def _recheck(
    result: TuneResult, current: Trial, trial: Trial, measure: Measure, confirm: Measure,
    report: Report, clock: Clock, deadline: float,
) -> str | None:
    """Run a knob that won once a second time, then the current best again (so each side is
    measured twice, in the order A B B A that cancels a steady drift of the machine). The knob
    is adopted only when the slower of its runs beats the faster of the current's by
    `KNOB_GAIN`: one lucky run on a busy machine adopts nothing. Returns the measured figures,
    or None with a note saying why the knob was not adopted."""
    flag = changed(current.spec, trial.spec)
    if clock() >= deadline:
        result.notes.append(f"{flag}: faster in one run ({trial.samples_per_s / current.samples_per_s:.2f}x), "
                            "but the time budget left no second run to confirm it; not adopted")
        return None
    again = measure(trial.spec)
    before = confirm(current.spec)
    result.knobs += [again, before]
    report(again.describe())
    report(before.describe())
    knob = sorted(t.samples_per_s if t.ok else math.nan for t in (trial, again))
    base = sorted(t.samples_per_s if t.ok else math.nan for t in (current, before))
    figures = (f"{knob[0]:,.0f} and {knob[1]:,.0f} samples/s against the current {base[0]:,.0f} and "
               f"{base[1]:,.0f}: its slower run {knob[0] / base[1]:.2f}x the current's faster")
    if not all(math.isfinite(v) for v in (*knob, *base)) or knob[0] <= base[1] * (1 + KNOB_GAIN):
        result.notes.append(f"{flag}: faster in its first run, not when both ran again ({figures}; adopting takes "
                            f"{1 + KNOB_GAIN:.2f}x); not adopted, as this machine's noise could explain it")
        return None
    return figures


def _isolated_over_screen(result: TuneResult) -> float:
    """How much faster an isolated run went than the search measured at the same batch (the
    confirm run against its screen trial): the search's rates, scaled by it, estimate the
    quality runs. 1 where either is missing."""
    best, confirm = result.search.best, next((t for t in result.knobs if t.stage == "confirm" and t.ok), None)
    if best is None or confirm is None or not best.samples_per_s > 0:
        return 1.0
    return confirm.samples_per_s / best.samples_per_s


def changed(before: RunSpec, after: RunSpec) -> str:
    """The knobs `after` sets differently from `before`, as flags: `--allocator jemalloc`."""
    names = [f for f in SPEED_KNOBS if getattr(before, f) != getattr(after, f)]
    return " ".join(f"--{name.replace('_', '-')} {format_value(getattr(after, name))}" for name in names)


def _guard_quality(
    result: TuneResult, config: RunSpec, data: DataInfo, options: RunOptions, run: Run,
    report: Report, clock: Clock, deadline: float,
) -> None:
    """Train the reference batch and the fastest candidates to the same number of samples."""
    settings = result.settings
    epochs = max(1, -(-settings.quality_budget // config.samples))
    leaders = [t.batch for t in result.search.ranked()][:QUALITY_CANDIDATES]
    batches = list(dict.fromkeys([REFERENCE_BATCH, *leaders]))
    measure = isolated(data, options, "quality", run)
    measured = result.search.ranked()
    scale = _isolated_over_screen(result)
    result.quality_start_s = clock() - (deadline - settings.budget_s)
    for batch in batches:
        # The nearest measured batch size stands in for one the search did not try (often 128).
        nearest = min(measured, key=lambda t: abs(math.log2(t.batch / batch)))
        rate = nearest.samples_per_s * scale
        expected = STARTUP_S + (epochs * config.samples / rate if rate > 0 else 0.0)
        if clock() + expected > deadline:
            result.quality_short_s += expected
            result.notes.append(f"time budget: no quality run for batch {batch} (about {expected:.0f} s); "
                                "it cannot be recommended without one")
            continue
        lr = scaled_lr(settings.base.lr, batch, settings.lr_scaling)
        spec = dataclasses.replace(config, batch_size=batch, lr=lr, steps=None, epochs=epochs)
        trial = measure(spec)
        result.quality.append(trial)
        report(trial.describe())
