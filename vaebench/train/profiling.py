"""A torch.profiler window inside the measured loop, its files and its summary.

torch is imported inside functions only: the module is importable by the analysis side.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis import trace as tr

Clock = Callable[[], float]
PROFILER_WARMUP = 1  # the first profiled step pays the profiler's start-up; it is not recorded
TOP_OPS = 15  # rows in the operator tables


def overhead_pct(inside_ms: Sequence[float], outside_ms: float) -> float:
    """How much slower the median profiled step is than the unprofiled median, in percent."""
    if not inside_ms or not outside_ms > 0:
        return math.nan
    return 100.0 * (statistics.median(inside_ms) / outside_ms - 1.0)


@dataclass(frozen=True)
class ProfileSummary:
    """What one profiler window found, with the files it wrote."""

    trace_path: str  # Chrome/Perfetto trace JSON: open in ui.perfetto.dev or TensorBoard
    ops_path: str  # torch's own top-operator tables, by CPU and by device time
    steps: int  # active (recorded) steps
    trace: tr.TraceSummary
    step_ms_inside: float  # median wall time of a recorded step
    step_ms_outside: float  # median wall time of an unprofiled step after warm-up
    overhead_pct: float  # the profiler's own cost: inside over outside, minus one

    @property
    def busy_fraction(self) -> float:
        return self.trace.busy.fraction

    @property
    def busy_source(self) -> str:
        return self.trace.busy.source

    @property
    def kernels_per_step(self) -> float:
        return self.trace.kernels_per_step

    @property
    def busy_ms_per_step(self) -> float:
        """The busy union (device, or aten ops on a CPU run) per recorded step."""
        busy = self.trace.busy
        return busy.busy_ms / self.steps if self.steps and math.isfinite(busy.fraction) else math.nan

    @property
    def busy_warning(self) -> str:
        """Why a GPU run has no busy fraction (no device rows in its trace); empty otherwise."""
        return self.trace.busy.warning

    def lines(self) -> list[str]:
        busy = self.trace.busy
        what = "device" if busy.kind == "device" else "CPU (the device of a CPU run)"
        out = [f"profiled {self.steps} steps: trace {self.trace_path}, tables {self.ops_path}"]
        if busy.warning:
            out.append(f"WARNING: {busy.warning}")
        else:
            out.append(
                f"{what} busy {100 * busy.fraction:.1f}% of {busy.wall_ms:.1f} ms [{busy.source}]"
            )
        if busy.kind == "device" and not busy.warning:  # without device rows there is no count
            out.append(
                f"kernels per step {self.trace.kernels_per_step:g}, "
                f"launch calls per step {self.trace.launches_per_step:g}"
            )
            if math.isfinite(self.trace.underfilled):
                out.append(f"{100 * self.trace.underfilled:.0f}% of the kernel time in kernels with fewer "
                           "blocks than the GPU has SMs")
        out.append(f"aten ops per step {self.trace.ops_per_step:g}")
        out.append(
            f"profiler overhead {self.overhead_pct:+.1f}% "
            f"(median step {self.step_ms_inside:.2f} ms profiled, "
            f"{self.step_ms_outside:.2f} ms not)"
        )
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class ProfileWindow:
    """torch.profiler over `steps` training steps after the first `start_after` ones.

    Use it as a context manager around the training loop and call `step()` once at the end
    of every training step, profiled or not: the window starts the profiler itself after
    step `start_after`, lets one unrecorded profiler warm-up step pass, records `steps`
    steps, then stops and writes `<out>/traces/<run_id>.json` and `<run_id>-ops.txt`.
    It times every step between `step()` calls, so it can compare the recorded steps with
    the unprofiled steps that follow them: that difference is the profiler's overhead.
    """

    def __init__(
        self,
        out_dir: str | Path,
        run_id: str,
        device: str,
        steps: int,
        *,
        start_after: int = 0,
        warmup: int = PROFILER_WARMUP,
        record_shapes: bool = False,
        top: int = TOP_OPS,
        clock: Clock = time.perf_counter,
    ) -> None:
        if steps < 1 or warmup < 0 or start_after < 0:
            raise ValueError("steps must be >= 1; warmup and start_after >= 0")
        self.trace_path = Path(out_dir) / "traces" / f"{run_id}.json"
        self.ops_path = Path(out_dir) / "traces" / f"{run_id}-ops.txt"
        self.device = device
        self.steps = steps
        self.start_after = start_after
        self.warmup = warmup
        self.record_shapes = record_shapes
        self.top = top
        self._clock = clock
        self._prof: Any = None
        self._count = 0  # training steps finished
        self._stepped = 0  # profiler steps taken
        self._finished = False
        self._written = False
        self._last = math.nan
        self.step_ms: list[float] = []  # every training step's wall time, from step() to step()

    @property
    def profiled_steps(self) -> range:
        """1-based numbers of the training steps run under the profiler, warm-up included;
        leave them out of steady-state step statistics."""
        first = self.start_after + 1
        return range(first, first + self.warmup + self.steps)

    @property
    def recorded_steps(self) -> range:
        first = self.start_after + self.warmup + 1
        return range(first, first + self.steps)

    @property
    def active(self) -> bool:
        return self._prof is not None

    def __enter__(self) -> ProfileWindow:
        self._last = self._clock()
        if self.start_after == 0:
            self._start()
            self._last = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def step(self) -> None:
        """Mark the end of one training step."""
        now = self._clock()
        self.step_ms.append((now - self._last) * 1e3)
        self._last = now
        self._count += 1
        if self._prof is None:
            if not self._finished and self._count == self.start_after:
                self._start()
                self._last = self._clock()
            return
        if self._stepped == self.warmup + self.steps - 1:
            self._sync()  # the last recorded step's kernels must finish before the trace closes
        self._prof.step()
        self._stepped += 1
        if self._stepped == self.warmup + self.steps:
            self.stop()
            self._last = self._clock()  # writing the files is no part of the next step

    def stop(self) -> None:
        """Stop early (a short run) or after the window; idempotent."""
        if self._prof is None:
            return
        prof, self._prof = self._prof, None
        self._finished = True
        self._sync()
        prof.stop()

    def summary(
        self, outside_step_ms: float | None = None, step_ms: Sequence[float] | None = None
    ) -> ProfileSummary | None:
        """Read the written trace back; None when no step was recorded.

        `outside_step_ms` is the unprofiled median step time to compare with; by default,
        the median of the steps timed after the window closed. `step_ms`: the training loop's
        own time of every step, in place of this window's host clock. They differ on a GPU,
        where the loop times the device and the host runs ahead of it: the H200's graphed
        steps took 0.06 ms of host time each and 0.22 ms on the device.
        """
        if not self._written or not self.trace_path.exists():
            return None
        timed = self.step_ms if step_ms is None else list(step_ms)
        recorded = [timed[n - 1] for n in self.recorded_steps if n - 1 < len(timed)]
        if outside_step_ms is None:
            after = timed[self.profiled_steps.stop - 1 :]
            outside_step_ms = statistics.median(after) if after else math.nan
        last_step = self.warmup + len(recorded) - 1  # a stopped-early window ends with a stub
        summary = tr.summarize(
            tr.load(self.trace_path), self.top, last_step=last_step, device=self.device
        )
        return ProfileSummary(
            trace_path=str(self.trace_path),
            ops_path=str(self.ops_path),
            steps=len(summary.steps),
            trace=summary,
            step_ms_inside=statistics.median(recorded) if recorded else math.nan,
            step_ms_outside=outside_step_ms,
            overhead_pct=overhead_pct(recorded, outside_step_ms),
        )

    def _start(self) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        activities = [ProfilerActivity.CPU]
        if self.device.startswith("cuda"):
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(
            activities=activities,
            # repeat=1: a second cycle would start and the export would hold only its events
            schedule=schedule(wait=0, warmup=self.warmup, active=self.steps, repeat=1),
            on_trace_ready=self._write,
            record_shapes=self.record_shapes,
        )
        self._prof.start()

    def _write(self, prof: Any) -> None:
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.trace_path))
        self.ops_path.write_text(ops_tables(prof, self.device, self.top), encoding="utf-8")
        self._written = True

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)


def ops_tables(prof: Any, device: str, top: int = TOP_OPS) -> str:
    """torch's key_averages tables: by self CPU time, and by self device time on a GPU."""
    averages = prof.key_averages()
    parts = [
        "Top operators by self CPU time",
        averages.table(sort_by="self_cpu_time_total", row_limit=top),
    ]
    if device.startswith("cuda"):
        parts += [
            "Top operators by self device time",
            averages.table(sort_by="self_device_time_total", row_limit=top),
        ]
    else:
        parts.append(f"No device table: {device} run, the CPU is the device.")
    return "\n\n".join(parts) + "\n"
