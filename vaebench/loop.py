"""The measured training loop: build, compile, warm up, measure; it runs in the child.

The step keeps the seed's order of operations (zero_grad, copy, forward, loss, backward,
`loss.item()`, optimizer step) so the host-device interplay matches the blog's program.
Timing adds a handful of `perf_counter` calls per step and, on CUDA, four events that are
read once per epoch; `benchmarks/test_overhead.py` shows the cost.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .loaders import make_source
from .model import VAE, train_flops_per_sample, vae_loss
from .result import DataInfo, StepSplit, TrainMetrics
from .spec import RunSpec

Clock = Callable[[], float]
Progress = Callable[[int, int, int, float], None]  # (step, total steps, epoch, running loss)
WARMUP_STEPS = 10  # steps left out of steady-state figures: first-touch, allocator, compile


def warmup_steps(total_steps: int) -> int:
    return min(WARMUP_STEPS, total_steps // 2)


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
    device_copy_ms: list[float] = field(default_factory=list)
    device_compute_ms: list[float] = field(default_factory=list)

    def split(self, skip: int) -> StepSplit:
        def mean(values: list[float]) -> float:
            tail = values[skip:]
            return statistics.fmean(tail) if tail else math.nan

        return StepSplit(
            data_ms=mean(self.data_ms),
            copy_ms=mean(self.copy_ms),
            compute_ms=mean(self.compute_ms),
            sync_ms=mean(self.sync_ms),
            device_copy_ms=mean(self.device_copy_ms),
            device_compute_ms=mean(self.device_compute_ms),
        )


class DeviceEvents:
    """CUDA events around the copy and the compute of each step, read after the epoch."""

    def __init__(self) -> None:
        self.pending: list[tuple[torch.cuda.Event, ...]] = []

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def add(self, *events: torch.cuda.Event) -> None:
        self.pending.append(events)

    def flush(self, log: StepLog) -> None:
        torch.cuda.synchronize()  # once per epoch: every event of the epoch has completed
        for start, copied, done in self.pending:
            log.device_copy_ms.append(start.elapsed_time(copied))
            log.device_compute_ms.append(copied.elapsed_time(done))
        self.pending.clear()


@dataclass
class TrainOutcome:
    metrics: TrainMetrics
    step_ms: list[float]
    model: VAE


def train(
    spec: RunSpec,
    data: DataInfo,
    *,
    t_import_s: float = math.nan,
    clock: Clock = time.perf_counter,
    progress: Progress | None = None,
    instrument: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainOutcome:
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)

    t0 = clock()
    source = make_source(spec, data, device)
    t_data = clock() - t0

    t0 = clock()
    model = VAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    forward = model if spec.compile == "off" else torch.compile(model, mode=_compile_mode(spec.compile))
    scaler = torch.amp.GradScaler("cuda") if spec.amp == "fp16" else None
    autocast = _autocast(spec)
    t_model = clock() - t0

    steps_total = total_steps(spec, len(source))
    warmup = warmup_steps(steps_total)
    events = DeviceEvents() if instrument and device.type == "cuda" else None
    log = StepLog()
    epoch_losses: list[float] = []
    epoch_times: list[float] = []
    step = 0
    t_first_step = math.nan
    model.train()
    train_start = clock()
    for epoch in range(spec.epochs):
        if step >= steps_total:
            break
        epoch_start = clock()
        summed, seen = 0.0, 0
        batches: Iterator[torch.Tensor] = source.epoch(epoch)
        while step < steps_total:
            t_a = clock()
            x = next(batches, None)
            if x is None:
                break
            t_b = clock()
            optimizer.zero_grad()
            t_b2 = clock()
            e_copy = events.mark() if events else None
            if not source.on_device:
                x = x.to(device, non_blocking=spec.pin_memory)
            e_copied = events.mark() if events else None
            t_c = clock()
            with autocast:
                recon, mu, logvar = forward(x)
            loss = vae_loss(recon.float(), x, mu.float(), logvar.float())
            (scaler.scale(loss) if scaler else loss).backward()
            t_d = clock()
            summed += loss.item()  # sync point: the seed reads the loss every step
            t_e = clock()
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if events and e_copy and e_copied:
                events.add(e_copy, e_copied, events.mark())
            t_f = clock()
            seen += x.shape[0]
            step += 1
            if step == 1:
                t_first_step = t_f - t_a
            if instrument:
                log.step_ms.append((t_f - t_a) * 1e3)
                log.data_ms.append((t_b - t_a) * 1e3)
                log.copy_ms.append((t_c - t_b2) * 1e3)
                log.compute_ms.append(((t_b2 - t_b) + (t_d - t_c) + (t_f - t_e)) * 1e3)
                log.sync_ms.append((t_e - t_d) * 1e3)
            if on_step is not None:
                on_step(step)
            if progress is not None:
                progress(step, steps_total, epoch + 1, summed / seen)
        if events:
            events.flush(log)
        epoch_times.append(clock() - epoch_start)
        epoch_losses.append(summed / max(seen, 1))  # the seed's: summed loss / samples
    train_s = clock() - train_start

    metrics = _metrics(spec, log, warmup, epoch_losses, epoch_times, step, train_s)
    metrics.update(t_import_s=t_import_s, t_data_s=t_data, t_model_s=t_model, t_first_step_s=t_first_step)
    return TrainOutcome(TrainMetrics(**metrics), log.step_ms, model)  # type: ignore[arg-type]


def _metrics(
    spec: RunSpec,
    log: StepLog,
    warmup: int,
    epoch_losses: list[float],
    epoch_times: list[float],
    steps_done: int,
    train_s: float,
) -> dict[str, object]:
    steady = log.step_ms[warmup:]
    median_ms = statistics.median(steady) if steady else math.nan
    if len(steady) >= 4:
        q = statistics.quantiles(steady, n=4, method="inclusive")
        iqr_ms = q[2] - q[0]
    else:
        iqr_ms = math.nan
    samples_per_s = spec.batch_size / (median_ms / 1e3) if steady else math.nan
    samples_seen = min(steps_done * spec.batch_size, _samples_in(spec, steps_done))
    return {
        "train_s": train_s,
        "steps_done": steps_done,
        "samples_seen": samples_seen,
        "warmup_steps": warmup,
        "step_median_ms": median_ms,
        "step_iqr_ms": iqr_ms,
        "samples_per_s": samples_per_s,
        "epoch_s": statistics.median(epoch_times) if epoch_times else math.nan,
        "final_loss": epoch_losses[-1] if epoch_losses else math.nan,
        "epoch_losses": epoch_losses,
        "epoch_times_s": epoch_times,
        "split": log.split(warmup),
        "model_flops_per_s": samples_per_s * train_flops_per_sample(),
        "peak_flops_per_s": math.nan,
        "flops_frac": math.nan,
    }


def _samples_in(spec: RunSpec, steps_done: int) -> int:
    per_epoch = -(-spec.samples // spec.batch_size)
    full_epochs, rest = divmod(steps_done, per_epoch)
    return full_epochs * spec.samples + min(rest * spec.batch_size, spec.samples)


def _compile_mode(mode: str) -> str | None:
    return None if mode == "default" else mode


def _autocast(spec: RunSpec) -> contextlib.AbstractContextManager[object]:
    if spec.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if spec.amp == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(spec.device).type, dtype=dtype)
