"""The measured training loop: build, compile, warm up, measure; it runs in the child.

The step keeps the seed's order of operations (zero_grad, copy, forward, loss, backward,
`loss.item()`, optimizer step) so the host-device interplay matches the blog's program.
Timing adds a handful of `perf_counter` calls per step and, on CUDA, four events that are
read once per epoch; `benchmarks/test_overhead.py` shows the cost.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..result import CompileStats, DataInfo, ProfileStats, RankStats, StepSplit, TrainMetrics, TrainUsage
from ..rules import MIN_SPREAD_STEPS, steady, steady_rate, warmup_steps
from ..spec import RunSpec
from ..stats import iqr
from . import distributed
from .compile_stats import compile_counters, payback_steps, recompile_warnings
from .distributed import ONE_PROCESS, AllreduceTimer, Shard
from .loaders import BatchSource, make_source
from .model import VAE, train_flops_per_sample, vae_loss
from .profiling import ProfileWindow

Clock = Callable[[], float]
Progress = Callable[[int, int, int, "float | None"], None]  # (step, total, epoch, running loss if known)
Forward = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # the model: plain, compiled or wrapped


def total_steps(spec: RunSpec, steps_per_epoch: int) -> int:
    planned = spec.epochs * steps_per_epoch
    return min(planned, spec.steps) if spec.steps is not None else planned


@dataclass
class StepLog:
    """Raw per-step host timings; device events are resolved once per epoch."""

    step_ms: list[float] = field(default_factory=list)
    data_ms: list[float] = field(default_factory=list)
    copy_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    sync_ms: list[float] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)  # samples in each step: the ragged last one has fewer
    device_copy_ms: list[float] = field(default_factory=list)
    device_compute_ms: list[float] = field(default_factory=list)
    warmup: int = 0
    excluded: frozenset[int] = frozenset()  # 0-based steps left out of steady state (profiled)

    def steady(self, values: list[float]) -> list[float]:
        return steady(values, self.warmup, self.excluded)

    def split(self) -> StepSplit:
        def mean(values: list[float]) -> float:
            tail = [v for v in self.steady(values) if not math.isnan(v)]  # the device's compute: sampled
            return statistics.fmean(tail) if tail else math.nan

        return StepSplit(
            data_ms=mean(self.data_ms),
            copy_ms=mean(self.copy_ms),
            compute_ms=mean(self.compute_ms),
            sync_ms=mean(self.sync_ms),
            device_copy_ms=mean(self.device_copy_ms),
            device_compute_ms=mean(self.device_compute_ms),
        )


def _timing_event() -> torch.cuda.Event:
    return torch.cuda.Event(enable_timing=True)


class DeviceEvents:
    """CUDA events on the training stream, read once per epoch.

    Every step records one event at its start (and one after its copy, when the batch is
    copied); every `compute_every`-th step also one at its end, so its compute is timed on a
    sample of the steps. At the ladder's top rung (0.26 ms a step on an H200) two events a
    step, recorded and read, cost 5.2 us (2 % of the step); sampled this way, 4.1 us. Events
    are reused from one epoch to the next once the epoch's flush has read them.
    """

    def __init__(self, make: Callable[[], torch.cuda.Event] = _timing_event,
                 synchronize: Callable[[], None] = torch.cuda.synchronize,
                 stream: torch.cuda.Stream | None = None, compute_every: int = 8) -> None:
        self.make = make
        self.synchronize = synchronize
        # Looked up once: `record()` without a stream asks for the current one at every call.
        self.stream = torch.cuda.current_stream() if stream is None else stream
        self.compute_every = compute_every
        self.pool: list[torch.cuda.Event] = []
        self.used = 0
        self.pending: list[tuple[torch.cuda.Event, torch.cuda.Event, torch.cuda.Event | None]] = []

    def mark(self) -> torch.cuda.Event:
        if self.used == len(self.pool):
            self.pool.append(self.make())
        event = self.pool[self.used]
        self.used += 1
        event.record(self.stream)
        return event

    def end_step(self, start: torch.cuda.Event, copied: torch.cuda.Event) -> None:
        """After the step's work is queued: its end is marked on every `compute_every`-th step."""
        done = self.mark() if len(self.pending) % self.compute_every == 0 else None
        self.pending.append((start, copied, done))

    def flush(self, log: StepLog, *, steps_from_device: bool = False) -> None:
        """Resolve the epoch's events; call it right after the epoch's last step is queued.

        With `steps_from_device` the epoch's step times become the device's: the interval from
        one step's start on the stream to the next one's (the last step's: to the epoch's end),
        which is the step's true period whether the GPU or the host is the slower side.
        """
        if not self.pending:
            return
        end = self.mark()
        self.synchronize()  # once per epoch: every event of the epoch has completed
        for start, copied, done in self.pending:
            log.device_copy_ms.append(0.0 if copied is start else start.elapsed_time(copied))
            log.device_compute_ms.append(math.nan if done is None else copied.elapsed_time(done))
        if steps_from_device:
            starts = [events[0] for events in self.pending] + [end]
            periods = [a.elapsed_time(b) for a, b in zip(starts, starts[1:], strict=False)]
            log.step_ms[len(log.step_ms) - len(periods):] = periods
        self.pending.clear()
        self.used = 0


@dataclass
class Workload:
    """Everything a step needs, built before the clock for training starts."""

    spec: RunSpec
    device: torch.device
    source: BatchSource
    model: VAE
    optimizer: torch.optim.Optimizer
    optimizer_step: Callable[[], object]  # the optimizer's step, compiled under --adam compiled
    forward: Forward
    scaler: torch.amp.GradScaler | None
    autocast: contextlib.AbstractContextManager[object]
    graph: GraphedStep | None = None
    shard: Shard = ONE_PROCESS  # this rank's part of every global batch; one process: all of it
    allreduce: AllreduceTimer | None = None  # several ranks: DDP's gradient all-reduce, timed

    def step(self, x: torch.Tensor, noise_rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Forward, loss and backward, outside the timed phases' bookkeeping; returns the loss.
        Under DDP the backward also sums the gradients over the ranks (`distributed`)."""
        with self.autocast:
            recon, mu, logvar = self.forward(x) if noise_rows is None else self.forward(x, noise_rows)
        loss = vae_loss(recon.float(), x, mu.float(), logvar.float())
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return loss

    def update(self) -> None:
        if self.scaler:
            self.scaler.step(self.optimizer)  # sync point: fp16's scaler reads its found-inf flag
            self.scaler.update()
        else:
            self.optimizer_step()


class GraphedStep:
    """The whole training step captured once as a CUDA graph and replayed (`--cuda-graphs`).

    The first `WARMUP` steps run eagerly on a side stream (capture needs warmed-up kernels and
    allocator), then the next full batch is captured: zero-grad to None, forward, loss,
    backward, Adam (fused and capturable, its step count on the device) and the add to the epoch's loss
    sum. Capturing executes nothing, so the captured step is then replayed on its batch: every
    batch trains exactly once. A batch of another size (the epoch's ragged last one) runs
    eagerly on the same parameters and optimizer state.
    """

    WARMUP = 3  # eager steps before the capture, as torch's CUDA-graph notes warm up: kernels, workspaces, allocator

    def __init__(self, work: Workload, epoch_sum: torch.Tensor) -> None:
        self.work = work
        self.epoch_sum = epoch_sum
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> None:
        if x.shape[0] != self.work.spec.batch_size:
            self.eager(x)
        elif self.graph is None and self.eager_steps < self.WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.eager(x)
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
        else:
            if self.graph is None:
                self.capture(x)
            assert self.graph is not None and self.static_x is not None
            self.static_x.copy_(x, non_blocking=True)
            self.graph.replay()

    def eager(self, x: torch.Tensor) -> None:
        self.work.optimizer.zero_grad(set_to_none=True)
        loss = self.work.step(x)
        self.work.update()
        self.epoch_sum.add_(loss.detach())

    def capture(self, x: torch.Tensor) -> None:
        self.static_x = torch.empty_like(x)
        self.graph = torch.cuda.CUDAGraph()
        self.work.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            loss = self.work.step(self.static_x)
            self.work.update()
            self.epoch_sum.add_(loss.detach())


@dataclass
class TrainOutcome:
    metrics: TrainMetrics
    step_ms: list[float]  # every step, warm-up included
    step_samples: list[int]  # the samples in each step
    excluded_steps: list[int]  # 0-based steps left out of steady state besides warm-up (profiled)
    model: VAE
    rank_step_ms: list[list[float]] = field(default_factory=list)  # several ranks: every rank's steps
    allreduce_ms: list[list[float]] = field(default_factory=list)  # ... and every rank's all-reduce


def train(
    spec: RunSpec,
    data: DataInfo,
    *,
    t_import_s: float = math.nan,
    clock: Clock = time.perf_counter,
    progress: Progress | None = None,
    on_step: Callable[[int], None] | None = None,
    out_dir: Path | None = None,
    run_id: str = "run",
    warmup: int | None = None,
) -> TrainOutcome:
    t0 = clock()
    shard = distributed.shard_from_env()
    # The CUDA context is the process's, not the data's: started before the data timer, whichever
    # loader would otherwise touch the device first, and counted with the model, as the rendezvous is.
    start_process(spec, shard)
    t_context = clock() - t0
    t0 = clock()
    source = make_source(spec, data, torch.device(spec.device), shard)
    t_data = clock() - t0
    t0 = clock()
    work = build_on(spec, source, shard)
    if spec.is_cuda:
        warm_device(work)
    t_model = clock() - t0 + t_context

    steps_total = total_steps(spec, len(work.source))
    # A process that already trained (tune's screen) is warm: it may ask for fewer steps.
    warmup = warmup_steps(steps_total) if warmup is None else warmup_steps(steps_total, warmup)
    watch = CompileWatch(work, clock) if spec.compiles else None
    window = (
        ProfileWindow(out_dir or Path("."), run_id, spec.device, spec.profile_steps, start_after=warmup, clock=clock)
        if spec.profile
        else None
    )
    log = StepLog(warmup=warmup)
    if window is not None:
        log.excluded = frozenset(n - 1 for n in window.profiled_steps)

    def after_step(step: int) -> None:
        if window is not None:
            window.step()
        if on_step is not None:
            on_step(step)

    start_unix = time.time()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    with window or contextlib.nullcontext():
        epochs = run_epochs(work, steps_total, log, clock=clock, instrument=spec.instrument, progress=progress,
                            on_step=after_step)
    usage = _usage_since(usage_before)
    end_unix = time.time()

    metrics = measured(spec, log, epochs)
    rank_steps: list[list[float]] = []
    allreduce: list[list[float]] = []
    ranked = RankStats()
    if work.allreduce is not None:  # after the training window: every rank's samples to rank 0
        rank_steps, allreduce = _rank_samples(work.allreduce, log)
        ranked = _rank_stats(rank_steps, allreduce, warmup=log.warmup, excluded=log.excluded,
                             step_median_ms=metrics.step_median_ms)
    metrics = dataclasses.replace(metrics, t_import_s=t_import_s, t_data_s=t_data, t_model_s=t_model,
                                  train_start_unix=start_unix, train_end_unix=end_unix,
                                  compile=_compile_stats(watch, log), usage=usage, ranks=ranked,
                                  profile=_profile_stats(window, metrics.step_median_ms, log.step_ms))
    return TrainOutcome(metrics, log.step_ms, log.batch, sorted(log.excluded), work.model, rank_steps, allreduce)


def start_process(spec: RunSpec, shard: Shard) -> None:
    """What belongs to the process before any data: the CUDA context on its device, the ranks' rendezvous."""
    if spec.is_cuda:
        device = torch.device(spec.device)
        if shard.distributed:  # one GPU per rank: rank r of this host on cuda:r
            device = torch.device("cuda", distributed.local_rank())
        if device.index is not None:  # events and synchronize() act on the current device
            torch.cuda.set_device(device)
        torch.empty(1, device=device)
    if shard.distributed:
        distributed.start(shard, torch.device(spec.device))


def _compile_stats(watch: CompileWatch | None, log: StepLog) -> CompileStats:
    if watch is None:
        return CompileStats()
    # The eager probe steps on a batch already in hand, so compare without the data wait.
    no_wait = log.steady([step - data for step, data in zip(log.step_ms, log.data_ms, strict=True)])
    return watch.report(statistics.median(no_wait) if no_wait else math.nan)


def build_on(spec: RunSpec, source: BatchSource, shard: Shard = ONE_PROCESS) -> Workload:
    """The model, optimizer and step around an input pipeline, from the spec's seed."""
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    model = VAE().to(device)
    forward: Forward = model if spec.compile == "off" else compiled_for_full_batches(model, spec)
    allreduce = None
    if shard.distributed:
        forward, allreduce = distributed.wrap(model, device)
    optimizer = adam(model.parameters(), spec)
    return Workload(
        spec=spec,
        device=device,
        source=source,
        model=model,
        optimizer=optimizer,
        optimizer_step=torch.compile(optimizer.step) if spec.adam == "compiled" else optimizer.step,
        forward=forward,
        scaler=torch.amp.GradScaler("cuda") if spec.amp == "fp16" else None,
        autocast=_autocast(spec),
        shard=shard,
        allreduce=allreduce,
    )


def compiled_for_full_batches(model: VAE, spec: RunSpec) -> Forward:
    """torch.compile with static shapes for the run's batch size; any other batch (the epoch's
    ragged last one) runs the same model eagerly.

    A graph of its own for the ragged batch would double the compile time (under max-autotune,
    minutes of autotuning every matmul again) to speed up one step per epoch; dynamic shapes
    would make every graph slower for it. The --cuda-graphs step treats that batch the same way.
    """
    compiled: Forward = torch.compile(model, mode=_compile_mode(spec.compile), dynamic=False)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return compiled(x) if x.shape[0] == spec.batch_size else model(x)

    return forward


def adam(params: Iterator[torch.nn.Parameter], spec: RunSpec) -> torch.optim.Adam:
    """The seed's Adam in the run's implementation (`--adam`). Under --cuda-graphs it is
    capturable (its step count on the device, so a captured step can replay it), and auto
    picks fused there: one kernel for all parameters, not a foreach chain. A compiled step
    starts from torch's own choice, which inductor then fuses."""
    impl = spec.adam_impl
    return torch.optim.Adam(params, lr=spec.lr, capturable=spec.cuda_graphs,
                            foreach=True if impl == "foreach" else None, fused=True if impl == "fused" else None)


def warm_device(work: Workload) -> None:
    """One step of a scratch copy at the run's batch size, before the training clock starts.

    The first step on a GPU pays cuBLAS's start-up and the lazy loading of every kernel it
    launches (about 0.3 s on an H200): set-up of the process, not training. The model, the
    optimizer and every random generator are left as they were.
    """
    with scratch_copy(work) as (scratch, optimizer):
        scratch_loss(work, scratch, torch.zeros(work.spec.batch_size, 1, 28, 28, device=work.device))
        optimizer.step()
        if work.device.type == "cuda":
            torch.cuda.synchronize(work.device)  # sync point: the scratch step ends before the clock starts


@contextlib.contextmanager
def scratch_copy(work: Workload) -> Iterator[tuple[VAE, torch.optim.Adam]]:
    """A copy of the model with an Adam of its own, to probe with; every random generator the
    probe draws from is put back on the way out, so the run's samples and noise stay its own."""
    with torch.random.fork_rng(devices=[work.device] if work.device.type == "cuda" else []):
        scratch = copy.deepcopy(work.model)
        yield scratch, adam(scratch.parameters(), work.spec)


def scratch_loss(work: Workload, model: VAE, x: torch.Tensor) -> torch.Tensor:
    """The seed's forward and backward on a probe's model, under the run's autocast."""
    with work.autocast:
        recon, mu, logvar = model(x)
    loss = vae_loss(recon.float(), x, mu.float(), logvar.float())
    loss.backward()
    return loss


@dataclass
class Epochs:
    losses: list[float]
    times_s: list[float]
    steps_done: int
    train_s: float
    first_step_s: float
    last_partial: bool = False  # --steps ended the last epoch before its batches ran out

    @property
    def whole_times_s(self) -> list[float]:
        return self.times_s[:-1] if self.last_partial else self.times_s


def run_epochs(
    work: Workload,
    steps_total: int,
    log: StepLog,
    *,
    clock: Clock = time.perf_counter,
    instrument: bool = True,
    progress: Progress | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Epochs:
    spec, device, source, optimizer, shard = work.spec, work.device, work.source, work.optimizer, work.shard
    events = DeviceEvents() if instrument and device.type == "cuda" else None
    read_every_step = spec.sync == "step"
    # --sync epoch: the loss is summed on the device, in float64 like the host's Python float,
    # and read once per epoch, so the host never waits for the device inside an epoch.
    epoch_sum = None if read_every_step else torch.zeros((), dtype=torch.float64, device=device)
    graphed = GraphedStep(work, epoch_sum) if spec.cuda_graphs and epoch_sum is not None else None
    losses: list[float] = []
    times: list[float] = []
    per_epoch = shard.steps(spec.samples, spec.batch_size)
    in_epoch = 0
    step = 0
    first_step_s = math.nan
    work.model.train()
    train_start = clock()
    for epoch in range(spec.epochs):
        if step >= steps_total:
            break
        epoch_start = clock()
        summed, seen = 0.0, 0
        batches: Iterator[torch.Tensor] = source.epoch(epoch)
        in_epoch = 0
        while step < steps_total:
            # Several ranks: the global batch's size and this rank's offset in it, for the noise.
            noise_rows = shard.noise_rows(in_epoch, spec.samples, spec.batch_size) if shard.distributed else None
            t_a = clock()
            x = next(batches, None)
            if x is None:
                break
            t_b = clock()
            if graphed is None:
                optimizer.zero_grad()
            t_b2 = clock()
            e_copy = events.mark() if events else None
            if not source.on_device:
                # A sync point unless --pin-memory: a copy from pageable memory returns only when done.
                x = x.to(device, non_blocking=spec.pin_memory)
            # A batch already on the device has no copy to time: one event fewer per step.
            e_copied = events.mark() if events and not source.on_device else e_copy
            t_c = clock()
            if graphed is not None:
                graphed(x)
                t_d = t_e = clock()
            else:
                loss = work.step(x, noise_rows)
                if epoch_sum is not None:
                    epoch_sum.add_(loss.detach())
                t_d = t_e = clock()
                if epoch_sum is None:
                    summed += loss.item()  # sync point: the seed reads the loss every step
                    t_e = clock()
                work.update()
            if events and e_copy and e_copied:
                events.end_step(e_copy, e_copied)
            t_f = clock()
            if work.allreduce is not None:
                work.allreduce.end_step()
            seen += x.shape[0]
            step += 1
            in_epoch += 1
            if step == 1:
                first_step_s = t_f - t_a
            if instrument:
                log.step_ms.append((t_f - t_a) * 1e3)
                log.batch.append(noise_rows[0] if noise_rows else x.shape[0])  # the whole job's samples
                log.data_ms.append((t_b - t_a) * 1e3)
                log.copy_ms.append((t_c - t_b2) * 1e3)
                log.compute_ms.append(((t_b2 - t_b) + (t_d - t_c) + (t_f - t_e)) * 1e3)
                log.sync_ms.append((t_e - t_d) * 1e3)
            if on_step is not None:
                on_step(step)
            if progress is not None:
                progress(step, steps_total, epoch + 1, summed / seen if read_every_step else None)
        if events:
            events.flush(log, steps_from_device=not read_every_step)
        losses.append(epoch_loss(work, summed, seen, epoch_sum))
        times.append(clock() - epoch_start)
        if not math.isfinite(losses[-1]):
            raise Diverged(f"diverged: epoch {epoch + 1}'s mean loss is {losses[-1]}; lower --lr (now {spec.lr:g})")
    return Epochs(losses, times, step, clock() - train_start, first_step_s, last_partial=0 < in_epoch < per_epoch)


def epoch_loss(work: Workload, summed: float, seen: int, epoch_sum: torch.Tensor | None) -> float:
    """The epoch's mean loss, the seed's summed loss over samples: with --sync epoch read from the
    device sum (which starts the next epoch at zero), with several ranks over every rank's samples."""
    if epoch_sum is not None:
        summed = epoch_sum.item()  # sync point: --sync epoch reads the loss once per epoch
        epoch_sum.zero_()
    if work.shard.distributed:  # the epoch's loss over every rank's samples, as one process sees it
        summed, total = distributed.sum_over_ranks(summed, seen, device=work.device)
        seen = int(total)
    return summed / max(seen, 1)


class Diverged(RuntimeError):
    """The loss stopped being a number: the run's times measure no training."""


class CompileWatch:
    """torch.compile accounting: dynamo's counters across the run, the on-disk cache, and
    an eager baseline timed on a copy of the model so the payback can be counted."""

    def __init__(self, work: Workload, clock: Clock) -> None:
        self.before = compile_counters()
        # A graphed step's speed is the graph's, not the compiler's: no eager payback to count.
        self.eager_ms = math.nan if work.spec.cuda_graphs else eager_step_ms(work, clock)

    def report(self, compiled_step_ms: float) -> CompileStats:
        """`compiled_step_ms`: the compiled run's median step without its data wait."""
        counters = compile_counters().since(self.before)
        warnings = recompile_warnings(counters)
        payback = payback_steps(counters.compile_s, self.eager_ms, compiled_step_ms)
        if payback == math.inf:
            warnings.append(
                f"the compiled step ({compiled_step_ms:.3f} ms) is not faster than eager ({self.eager_ms:.3f} ms): "
                "compiling never pays back here"
            )
        return CompileStats(
            compile_s=counters.compile_s,
            recompiles=counters.recompiles,
            compile_cudagraph_skips=counters.cudagraph_skips,
            compile_graphs=counters.graphs,
            compile_cache=counters.cache,
            compile_warnings=warnings,
            eager_step_ms=self.eager_ms,
            compiled_step_ms=compiled_step_ms,
            compile_payback_steps=payback if math.isfinite(payback) else math.nan,
        )


EAGER_PROBE_STEPS = 30  # enough for a stable median once the first few are dropped


def eager_step_ms(work: Workload, clock: Clock) -> float:
    """Median step of an uncompiled copy on the first batch; RNG state is put back after."""
    times = []
    with scratch_copy(work) as (probe, optimizer):
        x = next(iter(work.source.epoch(0))).to(work.device)
        for _ in range(EAGER_PROBE_STEPS):
            t0 = clock()
            optimizer.zero_grad()
            scratch_loss(work, probe, x).item()  # the same sync as a training step
            optimizer.step()
            times.append((clock() - t0) * 1e3)
    return statistics.median(times[EAGER_PROBE_STEPS // 3 :])  # the first third warms up


def _profile_stats(window: ProfileWindow | None, outside_step_ms: float, step_ms: list[float]) -> ProfileStats:
    summary = window.summary(outside_step_ms=outside_step_ms, step_ms=step_ms) if window is not None else None
    if summary is None:
        return ProfileStats()
    return ProfileStats(
        profile_trace=summary.trace_path,
        profile_busy_fraction=summary.busy_fraction,
        profile_kernel_fraction=summary.trace.busy.kernel_fraction,
        profile_busy_source=summary.busy_source,
        profile_kernels_per_step=summary.kernels_per_step,
        profile_overhead_pct=summary.overhead_pct,
        profile_busy_ms_per_step=summary.busy_ms_per_step,
        profile_underfilled_share=summary.trace.underfilled,
    )


def measured(spec: RunSpec, log: StepLog, epochs: Epochs) -> TrainMetrics:
    """The loop's figures from its raw log: steady state after warm-up (and profiled steps),
    throughput from the samples actually in each step. Set-up times are filled in by `train`."""
    steady = log.steady(log.step_ms)
    median_ms = statistics.median(steady) if steady else math.nan
    iqr_ms = iqr(steady) if len(steady) >= MIN_SPREAD_STEPS else math.nan
    samples_per_s = steady_rate(log.step_ms, log.batch, log.warmup, log.excluded)
    return TrainMetrics(
        t_import_s=math.nan,
        t_data_s=math.nan,
        t_model_s=math.nan,
        t_first_step_s=epochs.first_step_s,
        train_s=epochs.train_s,
        steps_done=epochs.steps_done,
        samples_seen=_samples_in(spec, epochs.steps_done),
        warmup_steps=log.warmup,
        step_median_ms=median_ms,
        step_iqr_ms=iqr_ms,
        samples_per_s=samples_per_s,
        epoch_s=statistics.median(epochs.whole_times_s) if epochs.whole_times_s else math.nan,
        final_loss=epochs.losses[-1] if epochs.losses else math.nan,
        last_epoch_partial=epochs.last_partial,
        epoch_losses=epochs.losses,
        epoch_times_s=epochs.times_s,
        split=log.split(),
        model_flops_per_s=samples_per_s * train_flops_per_sample(),
        peak_flops_per_s=math.nan,
        flops_frac=math.nan,
    )


def _rank_samples(timer: AllreduceTimer, log: StepLog) -> tuple[list[list[float]], list[list[float]]]:
    """Every rank's step times and all-reduce times, gathered from all ranks."""
    gathered = distributed.gather((log.step_ms, timer.milliseconds()))
    return [steps for steps, _ in gathered], [spans for _, spans in gathered]


def _rank_stats(
    rank_steps: list[list[float]], allreduce: list[list[float]], *, warmup: int, excluded: frozenset[int],
    step_median_ms: float
) -> RankStats:
    """Each rank's median step and all-reduce after warm-up; the all-reduce's mean over ranks and
    its share of the (rank 0's) median step. DDP holds the ranks in step, so their step periods agree."""
    spans = distributed.medians(allreduce, warmup, excluded)
    mean = statistics.fmean(spans) if spans else math.nan
    return RankStats(
        rank_step_median_ms=distributed.medians(rank_steps, warmup, excluded),
        rank_allreduce_ms=spans,
        allreduce_ms=mean,
        allreduce_share=mean / step_median_ms if step_median_ms > 0 else math.nan,
    )


def _usage_since(before: resource.struct_rusage) -> TrainUsage:
    after = resource.getrusage(resource.RUSAGE_SELF)
    return TrainUsage(
        train_user_s=after.ru_utime - before.ru_utime,
        train_sys_s=after.ru_stime - before.ru_stime,
        train_minor_faults=float(after.ru_minflt - before.ru_minflt),
        train_major_faults=float(after.ru_majflt - before.ru_majflt),
        train_ctx_voluntary=float(after.ru_nvcsw - before.ru_nvcsw),
        train_ctx_involuntary=float(after.ru_nivcsw - before.ru_nivcsw),
    )


def _samples_in(spec: RunSpec, steps_done: int) -> int:
    """Samples trained on over all ranks."""
    full_epochs, rest = divmod(steps_done, spec.steps_per_epoch)
    return full_epochs * spec.samples + min(rest * spec.global_batch, spec.samples)


def _compile_mode(mode: str) -> str | None:
    return None if mode == "default" else mode


def _autocast(spec: RunSpec) -> contextlib.AbstractContextManager[object]:
    if spec.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if spec.amp == "bf16" else torch.float16
    # A captured graph must not keep autocast's cast cache alive across replays.
    return torch.autocast(device_type=torch.device(spec.device).type, dtype=dtype, cache_enabled=not spec.cuda_graphs)
