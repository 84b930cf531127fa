"""Running a sweep's points: resume, claim, progress, and a clean stop on Ctrl-C, SIGTERM or SIGHUP.

Each point is one isolated `measure.run.run_once`. Points already in the results folder (by spec
key and repeat) are skipped unless forced, so rerunning an interrupted sweep runs only what
is missing; a point another sweep is running right now is left to it.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import storage
from .._format import format_duration
from ..errors import STOPS, Interrupted, UsageError, signal_of
from ..result import OK, DataInfo, RunRecord
from ..rules import contended
from ..spec import Capabilities, RunSpec
from ..sweep import Point, Skipped, interleave, split_valid
from .occupants import sweep_lock
from .run import InvalidRun, RunOptions, prepare_data, run_once

STARTUP_S = 5.0  # a child's python + torch import, data set-up and exit, when nothing is known
CPU_SAMPLES_PER_S = 8_000.0  # a rough first guess for the reference loader on a few cores
CUDA_SAMPLES_PER_S = 40_000.0


@dataclass(frozen=True)
class Planned:
    point: Point
    data: DataInfo


@dataclass
class SweepOutcome:
    records: list[RunRecord] = field(default_factory=list)
    already_done: int = 0
    held_elsewhere: int = 0
    interrupted: bool = False
    signum: int = signal.SIGINT  # what interrupted it: Ctrl-C, SIGTERM or SIGHUP

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status != OK]

    def raise_if_interrupted(self, then: str = "resume") -> None:
        """`Interrupted`, with the signal that stopped the points, when one did."""
        if self.interrupted:
            raise Interrupted(self.signum, f"interrupted; what finished is kept: run the same command again to {then}")

    def raise_if_nothing_kept(self, out: Path) -> None:
        """`Interrupted` now, when the points were stopped before `out` held any record: a command
        that reports on what finished before it stops has nothing to report on."""
        if self.interrupted and not storage.has_results(out):
            raise Interrupted(self.signum, f"interrupted before any run finished, so {out} holds nothing to report "
                              "on: run the same command again to start")


@dataclass(frozen=True)
class Schedule:
    """A plan of runs checked against this machine and the results folder."""

    planned: list[Planned]  # every point that can run here, with its prepared data
    todo: list[Planned]  # those the folder does not hold yet (all of them, forced)
    skipped: list[Skipped]  # cannot run here: the spec, or its data

    @property
    def done(self) -> int:
        return len(self.planned) - len(self.todo)


def schedule(
    groups: Sequence[tuple[Sequence[RunSpec], int]],
    *,
    out: Path,
    data_dir: str | None,
    caps: Capabilities | None,
    force: bool = False,
    order_seed: int = 0,
    prepare: bool = True,
) -> Schedule:
    """Every group's specs that can run here, `repeats` times each, interleaved, with their data
    prepared (or, with `prepare` off, only located: a dry run writes nothing); raises UsageError
    when nothing can run. A group is (specs, repeats). Without `caps` (the points run on other
    machines) only what can run nowhere is skipped."""
    points: list[Point] = []
    skipped: list[Skipped] = []
    for specs, repeats in groups:
        runnable, cannot = split_valid(specs, caps)
        skipped += cannot
        points += interleave(runnable, repeats, order_seed)
    planned, unavailable = resolve_points(points, data_dir, write=prepare)
    skipped += [Skipped(spec, reason) for spec, reason in dict(unavailable).items()]
    if not planned:
        reasons = "; ".join(dict.fromkeys(item.reason for item in skipped)) or "nothing was asked for"
        raise UsageError(f"nothing can run here: {reasons}")
    todo, _ = pending(planned, out, force)
    return Schedule(planned, todo, skipped)


def resolve_points(
    points: Iterable[Point], data_dir: str | None, *, write: bool = True
) -> tuple[list[Planned], list[tuple[RunSpec, str]]]:
    """Prepare each point's data once per (source, samples) (`write` off: locate it only);
    points whose data fails are returned apart."""
    prepared: dict[tuple[str, int], tuple[str, DataInfo] | str] = {}
    planned: list[Planned] = []
    failed: list[tuple[RunSpec, str]] = []
    for point in points:
        key = (point.spec.data, point.spec.samples)
        if key not in prepared:
            try:
                spec, info = prepare_data(point.spec, data_dir, write=write)
                prepared[key] = (spec.data, info)
            except InvalidRun as exc:
                prepared[key] = str(exc)
        entry = prepared[key]
        if isinstance(entry, str):
            failed.append((point.spec, entry))
            continue
        source, info = entry
        planned.append(Planned(Point(dataclasses.replace(point.spec, data=source), point.repeat), info))
    return planned, failed


def pending(planned: Sequence[Planned], out: Path, force: bool) -> tuple[list[Planned], int]:
    if force:
        return list(planned), 0
    done = storage.done_keys(out)
    todo = [p for p in planned if (p.point.spec.key(), p.point.repeat) not in done]
    return todo, len(planned) - len(todo)


def estimate_s(spec: RunSpec, history: dict[str, float]) -> float:
    """Seconds one run of `spec` will take: its own past median if known, else a rough model."""
    if spec.key() in history:
        return history[spec.key()]
    per_epoch = spec.samples if spec.steps is None else min(spec.samples, spec.steps * spec.batch_size)
    rate = CUDA_SAMPLES_PER_S if spec.is_cuda else CPU_SAMPLES_PER_S
    return STARTUP_S + spec.epochs * per_epoch / rate if spec.steps is None else STARTUP_S + per_epoch / rate


def history_of(out: Path) -> dict[str, float]:
    """Median real time of each finished configuration in a results folder."""
    times: dict[str, list[float]] = {}
    for row in storage.rows_if_any(out):
        if row.get("status") == OK and row.get("real_s"):
            times.setdefault(row["spec_key"], []).append(float(row["real_s"]))
    return {key: statistics.median(values) for key, values in times.items()}


Report = Callable[[str], None]


def run_points(
    todo: Sequence[Planned],
    options: RunOptions,
    *,
    force: bool = False,
    report: Report = print,
    run: Callable[[RunSpec, DataInfo, RunOptions], RunRecord] | None = None,
) -> SweepOutcome:
    """Run every planned point not yet in the folder; `run` defaults to `run_once`, looked up
    at call time."""
    run = run or run_once
    outcome = SweepOutcome()
    history = history_of(options.out)
    left_s = sum(estimate_s(p.point.spec, history) for p in todo)
    start = time.monotonic()
    warned: set[int] = set()
    try:
        with sweep_lock(options.out) as others:
            for index, planned in enumerate(todo, start=1):
                _warn_of_others(others(), warned, options.out, report)
                spec, repeat = planned.point.spec, planned.point.repeat
                with storage.claim(options.out, spec.key(), repeat) as mine:
                    if not mine or (not force and (spec.key(), repeat) in storage.done_keys(options.out)):
                        outcome.held_elsewhere += 1
                        continue
                    point_options = dataclasses.replace(options, repeat=repeat, label=f"[{index}/{len(todo)}]")
                    record = run(spec, planned.data, point_options)
                outcome.records.append(record)
                left_s = max(0.0, left_s - estimate_s(spec, history))
                elapsed = time.monotonic() - start
                # Once a few runs are in, their pace beats the rough first guess.
                eta = elapsed / index * (len(todo) - index) if index >= 3 else left_s
                report(_line(index, len(todo), record, elapsed, eta))
    except STOPS as stop:  # Ctrl-C, or SIGTERM or SIGHUP under errors.stop_signals_raise
        outcome.interrupted, outcome.signum = True, signal_of(stop)
    except storage.NotSaved as exc:  # a full disk: the points after it would be lost as well
        raise storage.NotSaved(f"{exc}; no more points run, and what finished is kept: run the same command again "
                               f"to go on once {options.out} can be written") from None
    return outcome


def _warn_of_others(others: list[int], warned: set[int], out: Path, report: Report) -> None:
    """Say once per process that another vaebench measures into the same folder right now."""
    new = [pid for pid in others if pid not in warned]
    if new:
        warned.update(new)
        report(f"warning: another vaebench (pid {', '.join(map(str, new))}) is running points into {out} at the "
               "same time: the two measure each other, each the other's busy neighbour (see neighbour_cpu_pct)")


def _line(index: int, total: int, record: RunRecord, elapsed: float, eta: float) -> str:
    spec = record.spec
    head = f"[{index}/{total}] {spec.display_label()} #{record.repeat + 1}"
    if record.status != OK:
        body = f"FAILED: {record.reason}"
    else:
        assert record.process is not None and record.train is not None
        rate, usage = record.train.samples_per_s, record.process
        body = (
            f"real {usage.real_s:.2f} s, user {usage.user_s:.2f} s, sys {usage.sys_s:.2f} s, "
            f"{'n/a' if math.isnan(rate) else f'{rate:.0f}'} samples/s, loss {record.train.final_loss:.2f}"
        )
        if contended(record.monitor.neighbour_cpu_pct):
            body += f" [BUSY NEIGHBOUR: {record.monitor.neighbour_cpu_pct:.0f}% of a core outside this run]"
    return f"{head}: {body}  ({format_duration(elapsed)} elapsed, ~{format_duration(eta)} left)"
