"""Issue 2: what measuring costs. The per-step timers of the measured loop, and the outside monitor.

    pytest benchmarks/test_overhead.py --benchmark-enable -s     # the real figures
    pytest benchmarks/test_overhead.py                           # smoke: tiny, loose checks

Timers: `loop.train` of a spec with `instrument=True` against `instrument=False` on the CPU (tensor
loader, synthetic data, one thread), in pairs whose order alternates (ABBA), so a drift of the
machine falls on both sides alike. Each pair gives the ratio of the loop's own `train_s`; the
median ratio and its spread are reported. The flag drops the per-step bookkeeping (five list
appends, the step split) but not the seven `perf_counter` reads, which the loop makes either
way; so the direct cost of both, timed on its own, is reported too, as a share of a step.
Each pair also gives the ratio of the process's CPU time over the `train` call (one intra-op
thread, so the main thread's): descheduling by a neighbour does not count there, so on a
shared machine it is the steadier of the two end-to-end figures.
That direct share is what the assertion holds to 1 %: the end-to-end ratio of two
multi-second runs on a shared machine is noisier than the effect it would measure.

Monitor: the parent's sampling thread at 10 Hz, as `run_once` starts it, over an idle main
thread, per second of wall time, three ways: its own `overhead_s` (CPU inside `sample_once`
by `getrusage(RUSAGE_THREAD)`, which on Linux advances in scheduler ticks, so short samples
mostly read as zero and the sum is an undercount); the same span timed by `time.thread_time`
(nanosecond CPU clock), the precise figure; and the whole process's CPU time (the sleeping
main thread adds almost nothing, so this includes the thread's wake-ups and waits).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from vaebench.measure.monitor import Monitor
from vaebench.result import DataInfo
from vaebench.spec import RunSpec
from vaebench.train.loop import DeviceEvents, StepLog, train

TIMER_READS = 7  # t_a, t_b, t_b2, t_c, t_d, t_e, t_f in the loop's step
MONITOR_HZ = 10.0  # run_once's default sample rate


@dataclass(frozen=True)
class Overhead:
    ratios: tuple[float, ...]  # instrumented train_s / uninstrumented train_s, one per pair
    cpu_ratios: tuple[float, ...]  # the same for the process's CPU time over the call
    step_ms: float  # median instrumented step
    direct_us: float  # the timers' own work per step, timed alone

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def direct_share(self) -> float:
        return self.direct_us / (self.step_ms * 1e3)

    def __str__(self) -> str:
        def spread(values: tuple[float, ...]) -> str:
            q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
            return f"median x{median:.4f}, IQR x{q1:.4f}-x{q3:.4f}, range x{min(values):.4f}-x{max(values):.4f}"

        return (
            f"instrumented / uninstrumented over {len(self.ratios)} ABBA pairs: loop wall time "
            f"{spread(self.ratios)}; CPU time {spread(self.cpu_ratios)}; the timers' direct cost "
            f"{self.direct_us:.2f} us per {self.step_ms:.2f} ms step = {self.direct_share:.4%}"
        )



def timer_cost_us(clock: Callable[[], float] = time.perf_counter, steps: int = 20_000) -> float:
    """Microseconds per step of what instrumentation does: the clock reads and the bookkeeping."""
    logs: tuple[list[float], ...] = ([], [], [], [], [])
    start = time.perf_counter()
    for _ in range(steps):
        t_a, t_b, t_b2, t_c, t_d, t_e, t_f = (clock() for _ in range(TIMER_READS))
        logs[0].append((t_f - t_a) * 1e3)
        logs[1].append((t_b - t_a) * 1e3)
        logs[2].append((t_c - t_b2) * 1e3)
        logs[3].append(((t_b2 - t_b) + (t_d - t_c) + (t_f - t_e)) * 1e3)
        logs[4].append((t_e - t_d) * 1e3)
    return (time.perf_counter() - start) / steps * 1e6


def event_cost_us(steps_per_epoch: int, epochs: int) -> float:
    """Microseconds per step of the CUDA events that a step with its batch on the device records
    and of the epoch's read of them, on an otherwise idle stream."""
    events, log = DeviceEvents(), StepLog()
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            first = events.mark()
            events.end_step(first, first)
            log.step_ms.append(0.0)
        events.flush(log, steps_from_device=True)
    return (time.perf_counter() - start) / (steps_per_epoch * epochs) * 1e6


def measure_overhead(
    spec: RunSpec, data: DataInfo, pairs: int, direct_us: Callable[[], float] = timer_cost_us
) -> Overhead:
    train(spec, data)  # warm-up: first-touch costs stay out of the pairs
    ratios, cpu_ratios, steps = [], [], []
    for pair in range(pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        seconds, cpu = {}, {}
        for instrument in order:
            cpu_before = time.process_time()
            outcome = train(dataclasses.replace(spec, instrument=instrument), data)
            cpu[instrument] = time.process_time() - cpu_before
            seconds[instrument] = outcome.metrics.train_s
            if instrument:
                steps.append(outcome.metrics.step_median_ms)
        ratios.append(seconds[True] / seconds[False])
        cpu_ratios.append(cpu[True] / cpu[False])
    return Overhead(tuple(ratios), tuple(cpu_ratios), statistics.median(steps), direct_us())


@dataclass(frozen=True)
class MonitorCost:
    seconds: float
    samples: int
    overhead_s: float  # Monitor.overhead_s: CPU inside sample_once, by RUSAGE_THREAD
    sample_cpu_s: float  # the same span by time.thread_time
    process_cpu_s: float  # the whole process, main thread asleep

    def __str__(self) -> str:
        def per_s(cpu_s: float) -> str:
            return f"{cpu_s / self.seconds * 1e3:.3f} ms CPU per s ({cpu_s / self.seconds:.3%} of a core)"

        return (
            f"monitor at {MONITOR_HZ:g} Hz: {self.samples} samples in {self.seconds:.1f} s; "
            f"overhead_s {per_s(self.overhead_s)}; thread_time in sample_once {per_s(self.sample_cpu_s)}; "
            f"whole process {per_s(self.process_cpu_s)}"
        )


class _TimedMonitor(Monitor):
    """The monitor with each sample also timed by the thread's nanosecond CPU clock."""

    thread_cpu_s = 0.0

    def sample_once(self) -> dict[str, Any]:
        before = time.thread_time()
        try:
            return super().sample_once()
        finally:
            self.thread_cpu_s += time.thread_time() - before


def measure_monitor(seconds: float) -> MonitorCost:
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    monitor = _TimedMonitor(1.0 / MONITOR_HZ)  # built outside the window: psutil's import is not sampling
    before, start = cpu(), time.monotonic()
    with monitor:
        time.sleep(seconds)
    elapsed, used = time.monotonic() - start, cpu() - before
    return MonitorCost(elapsed, len(monitor.samples), monitor.overhead_s, monitor.thread_cpu_s, used)


@pytest.mark.benchmark(group="overhead")
def test_instrumented_loop_within_one_percent(
    benchmark: BenchmarkFixture, synthetic: Callable[[int], DataInfo]
) -> None:
    # A choice: 300 steps of 128 (a few seconds a run) and 10 pairs for the real figure;
    # 2 pairs of 16 steps in smoke mode, which checks the plumbing, not the number.
    steps, pairs = (300, 10) if not benchmark.disabled else (16, 2)
    spec = RunSpec(device="cpu", loader="tensor", data="synthetic", samples=steps * 128, epochs=1, threads=1)
    result = benchmark.pedantic(measure_overhead, args=(spec, synthetic(spec.samples), pairs))
    benchmark.extra_info.update(dataclasses.asdict(result), median_ratio=result.median)
    print(result)
    assert result.direct_share < 0.01
    assert 0.5 < result.median < (1.05 if not benchmark.disabled else 2.0)


@pytest.mark.benchmark(group="overhead")
def test_monitor_cost(benchmark: BenchmarkFixture) -> None:
    seconds = 10.0 if not benchmark.disabled else 0.5
    result = benchmark.pedantic(measure_monitor, args=(seconds,))
    benchmark.extra_info.update(dataclasses.asdict(result))
    print(result)
    assert result.samples >= seconds * MONITOR_HZ / 2
    assert result.process_cpu_s / result.seconds < 0.05  # under 5 % of a core, even on a busy machine


@pytest.mark.gpu
@pytest.mark.benchmark(group="overhead")
def test_instrumented_top_rung_within_two_percent_on_cuda(
    benchmark: BenchmarkFixture, synthetic: Callable[[int], DataInfo]
) -> None:
    """Issue 12's goal: at the ladder's top rung (batch on the device, --sync epoch, CUDA graphs,
    about 0.3 ms a step on an H100/H200) the timers and the device events cost at most 2 %."""
    import torch

    if not torch.cuda.is_available() and os.environ.get("VAEBENCH_REQUIRE_GPU") != "1":
        pytest.skip("needs a CUDA device")
    # A choice: the ladder's 10 epochs of 60,000 samples and 6 pairs for the real figure.
    epochs, samples, pairs = (10, 60_000, 6) if not benchmark.disabled else (1, 4096, 2)
    spec = RunSpec(device="cuda", loader="device", sync="epoch", cuda_graphs=True, data="synthetic",
                   samples=samples, epochs=epochs)
    steps_per_epoch = -(-samples // spec.batch_size)

    def direct_us() -> float:
        timers, events = timer_cost_us(), event_cost_us(steps_per_epoch, epochs)
        print(f"direct cost per step: timers {timers:.2f} us, device events {events:.2f} us")
        return timers + events

    result = benchmark.pedantic(measure_overhead, args=(spec, synthetic(samples), pairs, direct_us))
    benchmark.extra_info.update(dataclasses.asdict(result), median_ratio=result.median)
    print(result)
    assert result.direct_share < 0.02
    assert 0.5 < result.median < (1.05 if not benchmark.disabled else 2.0)
