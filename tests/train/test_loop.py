"""The measured loop with a fake clock: known phase times in, the recorded split and
steady-state figures out. No model trains here; the phases only move the clock."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from vaebench.measure.data import prepare
from vaebench.spec import RunSpec
from vaebench.train.distributed import ONE_PROCESS, Shard
from vaebench.train.loaders import make_source
from vaebench.train.loop import DeviceEvents, StepLog, adam, build_on, measured, run_epochs, warm_device

# Milliseconds each phase of a step takes, in the loop's order.
DATA, ZERO_GRAD, COPY, COMPUTE, SYNC, UPDATE = 2.0, 0.5, 1.0, 3.0, 4.0, 0.5
STEP = DATA + ZERO_GRAD + COPY + COMPUTE + SYNC + UPDATE  # 11 ms


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1e3


@dataclass
class Batch:
    clock: Clock
    rows: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, 784)

    def to(self, device: object, non_blocking: bool = False) -> Batch:
        self.clock.spend(COPY)
        return self


@dataclass
class Loss:
    clock: Clock
    value: float

    def item(self) -> float:
        self.clock.spend(SYNC)
        return self.value

    def detach(self) -> Loss:
        return self


@dataclass
class Source:
    clock: Clock
    sizes: list[int]
    on_device: bool = False

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for rows in self.sizes:
            self.clock.spend(DATA)
            yield Batch(self.clock, rows)

    def __len__(self) -> int:
        return len(self.sizes)


@dataclass
class Work:
    """Stands in for loop.Workload: the same attributes, each phase only moves the clock."""

    clock: Clock
    spec: RunSpec
    source: Source
    device: object = field(default_factory=lambda: type("Device", (), {"type": "cpu"})())
    losses: list[float] = field(default_factory=list)
    shard: Shard = ONE_PROCESS
    allreduce: None = None

    def __post_init__(self) -> None:
        clock = self.clock
        self.model = type("Model", (), {"train": lambda _self: None})()
        self.optimizer = type("Optimizer", (), {"zero_grad": lambda _self: clock.spend(ZERO_GRAD)})()

    def step(self, x: Batch, noise_rows: tuple[int, int] | None = None) -> Loss:
        self.clock.spend(COMPUTE)
        return Loss(self.clock, 100.0 * x.rows)  # summed loss: 100 per sample

    def update(self) -> None:
        self.clock.spend(UPDATE)


def test_the_split_and_steady_state_come_out_as_the_phases_went_in() -> None:
    clock = Clock()
    # 2 epochs of 64 + 64 + 32 samples: the ragged last batch of each epoch has 32.
    spec = RunSpec(batch_size=64, samples=160, epochs=2)
    work = Work(clock, spec, Source(clock, [64, 64, 32]))
    log = StepLog(warmup=2)
    epochs = run_epochs(work, 6, log, clock=clock)  # type: ignore[arg-type]

    assert log.step_ms == pytest.approx([STEP] * 6)
    split = log.split()
    assert (split.data_ms, split.copy_ms, split.sync_ms) == pytest.approx((DATA, COPY, SYNC))
    assert split.compute_ms == pytest.approx(ZERO_GRAD + COMPUTE + UPDATE)
    assert math.isnan(split.device_compute_ms)  # no CUDA events on a CPU run
    assert epochs.losses == pytest.approx([100.0, 100.0])  # summed loss / samples, as the seed prints it
    assert epochs.times_s == pytest.approx([3 * STEP / 1e3] * 2)

    metrics = measured(spec, log, epochs)
    assert metrics.step_median_ms == pytest.approx(STEP)
    # Steady steps 3..6 hold 32, 64, 64, 32 samples in 11 ms each: the median of their own rates.
    assert metrics.samples_per_s == pytest.approx(1e3 * 48 / STEP)
    assert metrics.samples_seen == 320 and metrics.steps_done == 6
    assert metrics.train_s == pytest.approx(6 * STEP / 1e3)


def test_an_epoch_cut_short_by_steps_is_marked_and_left_out_of_the_epoch_time() -> None:
    clock = Clock()
    spec = RunSpec(batch_size=64, samples=160, epochs=2, steps=4)  # 3 steps an epoch: the second is cut at 1
    epochs = run_epochs(Work(clock, spec, Source(clock, [64, 64, 32])), 4, StepLog(warmup=0), clock=clock)  # type: ignore[arg-type]
    assert epochs.last_partial and epochs.times_s == pytest.approx([3 * STEP / 1e3, STEP / 1e3])
    metrics = measured(spec, StepLog(warmup=0), epochs)
    assert metrics.last_epoch_partial and metrics.epoch_s == pytest.approx(3 * STEP / 1e3)
    only = run_epochs(Work(clock, spec, Source(clock, [64, 64, 32])), 2, StepLog(warmup=0), clock=clock)  # type: ignore[arg-type]
    assert only.last_partial and math.isnan(measured(spec, StepLog(warmup=0), only).epoch_s)  # no whole epoch
    whole = run_epochs(Work(clock, spec, Source(clock, [64, 64, 32])), 6, StepLog(warmup=0), clock=clock)  # type: ignore[arg-type]
    assert not whole.last_partial and not measured(spec, StepLog(warmup=0), whole).last_epoch_partial


def test_profiled_steps_are_left_out_of_the_steady_state() -> None:
    clock = Clock()
    spec = RunSpec(batch_size=64, samples=640, epochs=1)
    work = Work(clock, spec, Source(clock, [64] * 10))
    log = StepLog(warmup=1, excluded=frozenset({4, 5, 6}))
    epochs = run_epochs(work, 10, log, clock=clock)  # type: ignore[arg-type]
    log.step_ms[4:7] = [100.0, 100.0, 100.0]  # as a profiler window slows its steps
    metrics = measured(spec, log, epochs)
    assert metrics.step_median_ms == pytest.approx(STEP)
    assert metrics.samples_per_s == pytest.approx(1e3 * 64 / STEP)


def test_the_device_warm_up_leaves_the_model_optimizer_and_generator_as_they_were(data_dir: Path) -> None:
    spec = RunSpec(batch_size=32, samples=64, data="embedded", seed=3, loader="tensor")
    work = build_on(spec, make_source(spec, prepare("embedded", data_dir, spec.samples), torch.device("cpu")))
    before = [p.detach().clone() for p in work.model.parameters()]
    generator = torch.get_rng_state()
    warm_device(work)
    assert all(torch.equal(a, b) for a, b in zip(before, work.model.parameters(), strict=True))
    assert torch.equal(generator, torch.get_rng_state())
    assert not work.optimizer.state and all(p.grad is None for p in work.model.parameters())


class FakeEvent:
    """A CUDA event on a clock the test moves."""

    def __init__(self, now: list[float]) -> None:
        self.now, self.t = now, math.nan

    def record(self, stream: object) -> None:
        self.t = self.now[0]

    def elapsed_time(self, other: FakeEvent) -> float:
        return other.t - self.t


def test_device_events_time_every_period_sample_the_compute_and_are_reused_epoch_after_epoch() -> None:
    now = [0.0]
    made: list[FakeEvent] = []

    def make() -> FakeEvent:
        made.append(FakeEvent(now))
        return made[-1]

    events = DeviceEvents(make, synchronize=lambda: None, stream=object(), compute_every=2)  # type: ignore[arg-type]
    log = StepLog()
    for epoch in range(3):
        for _step in range(4):
            start = events.mark()
            now[0] += 1.0 + epoch  # the step's kernels
            events.end_step(start, start)
            now[0] += 2.0  # the device idles until the next step
            log.step_ms.append(math.nan)
        now[0] -= 2.0  # the epoch's end is queued right after its last step
        events.flush(log, steps_from_device=True)
    assert len(made) == 4 + 2 + 1, "one epoch's events (4 starts, 2 ends, its end), read and then reused"
    assert log.device_copy_ms == [0.0] * 12, "a batch on the device: no copy, nothing read"
    computed = [ms for ms in log.device_compute_ms if not math.isnan(ms)]
    assert computed == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0] and len(log.device_compute_ms) == 12
    assert log.step_ms == [3.0, 3.0, 3.0, 1.0, 4.0, 4.0, 4.0, 2.0, 5.0, 5.0, 5.0, 3.0]  # start to start


def test_the_split_averages_the_sampled_device_compute() -> None:
    log = StepLog(warmup=1, device_compute_ms=[9.0, 1.0, math.nan, 3.0, math.nan], device_copy_ms=[0.0] * 5)
    assert log.split().device_compute_ms == 2.0


@pytest.mark.parametrize(
    ("spec", "foreach", "fused"),
    [
        (RunSpec(), None, None),  # torch's own choice, as in the seed
        (RunSpec(cuda_graphs=True), None, True),  # auto under graphs: one kernel, capturable
        (RunSpec(adam="foreach"), True, None),
        (RunSpec(adam="fused"), None, True),
        (RunSpec(adam="compiled"), None, None),  # inductor fuses torch's own choice
    ],
)
def test_adam_implementation_follows_the_spec(spec: RunSpec, foreach: bool | None, fused: bool | None) -> None:
    optimizer = adam(iter([torch.nn.Parameter(torch.zeros(3))]), spec)
    assert (optimizer.defaults["foreach"], optimizer.defaults["fused"]) == (foreach, fused)
    assert optimizer.defaults["capturable"] is spec.cuda_graphs and optimizer.defaults["lr"] == spec.lr


def test_a_graphed_run_counts_no_payback_against_an_eager_step() -> None:
    from types import SimpleNamespace

    from vaebench.train.loop import CompileWatch

    graphed = SimpleNamespace(spec=RunSpec(device="cuda", sync="epoch", cuda_graphs=True, adam="compiled"))
    watch = CompileWatch(graphed, clock=lambda: 0.0)  # type: ignore[arg-type]  # no eager probe: no model needed
    stats = watch.report(compiled_step_ms=0.25)
    assert math.isnan(stats.eager_step_ms) and math.isnan(stats.compile_payback_steps)
    assert not any("never pays back" in w for w in stats.compile_warnings)


def test_a_run_that_compiled_nothing_has_no_compile_counts_not_counts_of_zero() -> None:
    from vaebench.train.loop import _compile_stats

    stats = _compile_stats(None, StepLog())  # compile off and Adam not compiled: nothing was watched
    assert math.isnan(stats.compile_s) and stats.compile_cache == ""
    assert all(math.isnan(n) for n in (stats.recompiles, stats.compile_graphs, stats.compile_cudagraph_skips))
